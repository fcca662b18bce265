"""Tokenized examples -> padded numpy batches, longest-first so each batch pads only to its own longest; with a
`bucket` tolerance, a batch also never pads an input much shorter than its longest (a server's varied requests)."""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class Bucket:
    """How far below a batch's longest input another input may be and still join it: `fraction` of the longest,
    or `tokens`, whichever is more (a batch of 100-token inputs takes 75-token ones, not 20-token ones)."""

    fraction: float = 0.25
    tokens: int = 8

    def fits(self, longest: int, length: int) -> bool:
        return longest - length <= max(self.tokens, self.fraction * longest)


def groups(lengths: Sequence[int], batch_size: int, bucket: Bucket | None = None) -> list[np.ndarray]:
    """Row indices of each batch: longest first, at most batch_size rows; with `bucket`, a new batch also starts
    where the next input is too much shorter than the batch's longest."""
    if batch_size <= 0:
        raise ValueError("batch_size must be positive")
    order = np.argsort([-n for n in lengths], kind="stable")
    out: list[list[int]] = []
    for i in order:
        last = out[-1] if out else None
        if last is None or len(last) == batch_size or (bucket is not None and not bucket.fits(lengths[last[0]], lengths[i])):
            out.append([int(i)])
        else:
            last.append(int(i))
    return [np.array(rows, dtype=np.int64) for rows in out]


def batches(features: Features, batch_size: int, bucket: Bucket | None = None) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """(row indices, padded batch), longest examples first; padding only up to each batch's longest."""
    for rows in groups([len(x) for x in features["input_ids"]], batch_size, bucket):
        yield rows, pad_batch(features, rows)


def predict(run: Callable[[dict[str, np.ndarray]], np.ndarray], features: Features, batch_size: int,
            progress: Callable[[int], None] | None = None, bucket: Bucket | None = None) -> np.ndarray:
    """Logits of every example in its original order, computed batch by batch by `run`."""
    n = len(features["input_ids"])
    out: np.ndarray | None = None
    for rows, batch in batches(features, batch_size, bucket):
        logits = np.asarray(run(batch), dtype=np.float32)
        if out is None:
            out = np.empty((n, *logits.shape[1:]), dtype=np.float32)
        out[rows] = logits
        if progress is not None:
            progress(len(rows))
    if out is None:
        raise ValueError("no examples to run")
    return out
