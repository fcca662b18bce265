"""Tokenized examples -> padded numpy batches, longest-first so each batch pads only to its own longest."""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
Features = dict[str, Sequence[Sequence[int]]]  # column -> one list of token ids per example


def pad_batch(features: Features, rows: Sequence[int]) -> dict[str, np.ndarray]:
    """The examples `rows` padded (id 0, mask 0, token type 0) to the longest of them, as int64."""
    length = max(len(features["input_ids"][i]) for i in rows)
    out = {}
    for name in INPUT_NAMES:
        batch = np.zeros((len(rows), length), dtype=np.int64)
        for j, i in enumerate(rows):
            seq = features[name][i] if name in features else [1 if name == "attention_mask" else 0] * len(features["input_ids"][i])
            batch[j, : len(seq)] = seq
        out[name] = batch
    return out


def batches(features: Features, batch_size: int) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """(row indices, padded batch), longest examples first; padding only up to each batch's longest."""
    if batch_size <= 0:
        raise ValueError("batch_size must be positive")
    order = np.argsort([-len(x) for x in features["input_ids"]], kind="stable")
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        yield rows, pad_batch(features, rows)


def predict(run: Callable[[dict[str, np.ndarray]], np.ndarray], features: Features, batch_size: int,
            progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Logits of every example in its original order, computed batch by batch by `run`."""
    n = len(features["input_ids"])
    out: np.ndarray | None = None
    for rows, batch in batches(features, batch_size):
        logits = np.asarray(run(batch), dtype=np.float32)
        if out is None:
            out = np.empty((n, *logits.shape[1:]), dtype=np.float32)
        out[rows] = logits
        if progress is not None:
            progress(len(rows))
    if out is None:
        raise ValueError("no examples to run")
    return out
