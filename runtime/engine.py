"""The one interface every inference engine offers (a padded numpy batch in, logits out), the shapes an engine
built ahead must accept, and the onnxruntime providers kdqat opens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from kdqat.errors import KdqatError

# onnxruntime execution providers kdqat opens (--provider), by their onnxruntime names
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


class Engine(Protocol):
    """`run` takes int64 arrays named input_ids / attention_mask / token_type_ids, shape [batch, seq]."""

    name: str

    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray: ...


@dataclass(frozen=True)
class ShapeProfile:
    """min / opt / max batch size and sequence length of the one optimization profile."""

    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 32
    min_seq: int = 1
    opt_seq: int = 128
    max_seq: int = 128

    def __post_init__(self) -> None:
        if not (0 < self.min_batch <= self.opt_batch <= self.max_batch):
            raise KdqatError(f"batch profile needs 0 < min <= opt <= max, got {self.min_batch}/{self.opt_batch}/{self.max_batch}")
        if not (0 < self.min_seq <= self.opt_seq <= self.max_seq):
            raise KdqatError(f"sequence profile needs 0 < min <= opt <= max, got {self.min_seq}/{self.opt_seq}/{self.max_seq}")

    @classmethod
    def parse(cls, batch: str, seq: str) -> ShapeProfile:
        """From "MIN,OPT,MAX" strings, e.g. ("1,8,32", "16,128,128")."""
        try:
            b, s = [int(x) for x in batch.split(",")], [int(x) for x in seq.split(",")]
        except ValueError:
            raise KdqatError(f"profile {batch!r} / {seq!r}: give MIN,OPT,MAX integers") from None
        if len(b) != 3 or len(s) != 3:
            raise KdqatError(f"profile {batch!r} / {seq!r}: give exactly MIN,OPT,MAX")
        return cls(*b, *s)

    def shapes(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        return (self.min_batch, self.min_seq), (self.opt_batch, self.opt_seq), (self.max_batch, self.max_seq)

    def check(self, shape: tuple[int, ...]) -> None:
        """A clear error for a [batch, seq] input the engine was not built for."""
        batch, seq = shape
        if not (self.min_batch <= batch <= self.max_batch and self.min_seq <= seq <= self.max_seq):
            raise KdqatError(f"input shape [batch {batch}, sequence {seq}] is outside the engine's profile "
                             f"(batch {self.min_batch}..{self.max_batch}, sequence {self.min_seq}..{self.max_seq}); "
                             "ask for a profile that covers it (kdqat bench --batch-sizes / --seq-lengths, "
                             "kdqat eval --batch-size) and the engine is rebuilt")
