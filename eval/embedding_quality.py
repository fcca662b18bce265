"""Sentence-embedding quality as embedding users measure it, with no fine-tuning: STS-B Spearman correlation of
cosine similarities with the human scores, and k-nearest-neighbour classification (embed a labelled train file,
label each test text by its neighbours). Any engine: `embed` maps texts to [N, D] vectors."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from scipy.stats import spearmanr

from kdqat.parity import cosines
from kdqat.errors import KdqatError
from kdqat.eval.options import KNN_K

Embed = Callable[[Sequence[str]], np.ndarray]


def embedder(run: Callable[[dict], np.ndarray], tokenizer, max_length: int, batch_size: int,
             progress: Callable[[int], None] | None = None) -> Embed:
    """`embed(texts)` for an engine's `run`: tokenized, batched by length, vectors in the texts' order."""
    from kdqat.runtime.batching import predict

    def embed(texts: Sequence[str]) -> np.ndarray:
        features = tokenizer(list(texts), truncation=True, max_length=max_length)
        return predict(run, dict(features), batch_size, progress)
    return embed


def sts_spearman(embed: Embed, text_a: Sequence[str], text_b: Sequence[str], scores: Sequence[float]) -> float:
    """Spearman correlation (x100) of cos(embed(a), embed(b)) with the gold similarity scores."""
    vectors = embed([*text_a, *text_b])
    n = len(text_a)
    return 100.0 * float(spearmanr(cosines(vectors[:n], vectors[n:]), scores)[0])


def knn_predict(train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, k: int = KNN_K,
                chunk: int = 1024) -> np.ndarray:
    """Each test vector's label: the class with the largest summed cosine similarity among its k nearest train
    vectors (ties: the lower class id). Labels are ids 0..C-1."""
    if not 1 <= k <= len(train):
        raise KdqatError(f"k={k}: must be between 1 and the {len(train)} training texts")
    unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # noqa: E731
    train, test = unit(np.asarray(train, np.float32)), unit(np.asarray(test, np.float32))
    classes = int(train_labels.max()) + 1
    out = np.empty(len(test), dtype=np.int64)
    for start in range(0, len(test), chunk):
        sims = test[start:start + chunk] @ train.T  # [chunk, N]
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        votes = np.zeros((len(sims), classes))
        rows = np.arange(len(sims))[:, None]
        np.add.at(votes, (rows, train_labels[top]), sims[rows, top])
        out[start:start + chunk] = votes.argmax(1)
    return out


def knn_accuracy(embed: Embed, train_texts: Sequence[str], train_labels: Sequence[str], test_texts: Sequence[str],
                 test_labels: Sequence[str], k: int = KNN_K) -> float:
    """Accuracy (x100) of k-nearest-neighbour classification of the test texts by the train texts' labels."""
    names = sorted(set(train_labels))
    ids = {name: i for i, name in enumerate(names)}
    unknown = sorted(set(test_labels) - set(ids))
    if unknown:
        raise KdqatError(f"kNN test labels not in the train file: {', '.join(unknown[:5])}")
    predicted = knn_predict(embed(train_texts), np.array([ids[x] for x in train_labels]), embed(test_texts), k)
    return 100.0 * float(np.mean(predicted == np.array([ids[x] for x in test_labels])))


def stsb_pairs(data_dir: str | Path | None, split: str = "dev") -> tuple[list[str], list[str], list[float]]:
    """GLUE STS-B pairs of `split` (dev: the reported score; train: a validation score for choosing between
    students, whose training never sees the gold scores) and their gold scores (data_dir: a GLUE_DIR folder;
    None: GLUE_DIR, else the hub)."""
    from kdqat.glue.data import load_split
    from kdqat.glue.tasks import get_task

    ds = load_split(get_task("stsb"), split, data_dir)
    return list(ds["text_a"]), list(ds["text_b"]), [float(x) for x in ds["label"]]


def labelled_texts(path: str | Path, option: str) -> tuple[list[str], list[str]]:
    """Texts and label names of a labelled file (CSV, JSON Lines, ...: the usual text and label columns)."""
    from kdqat.data.files import choose_columns, read_file

    ds = read_file(path, option)
    columns = choose_columns(ds.column_names, str(path), None, None, None)
    return [str(x) for x in ds[columns.text]], [str(x) for x in ds[columns.label]]
