"""How close an engine's outputs are to the PyTorch student's: used by export's gate and by kdqat eval (each
objective chooses its comparison, kdqat.objectives)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# STS-B scores run 0..5: agreement means within 2% of that range. A regression output has no margin to
# separate rounding from real disagreement; one 8-bit step taken the other way at a late requantization
# point moves a real STS-B student's score by up to ~0.1 (measured: 0.104 over 1,500 dev examples).
REGRESSION_TOLERANCE = 0.1
DECIDED_MARGIN = 0.05  # logits: an example whose top-two reference logits are closer than this is undecided
# A graph whose float parts run in float16 (TensorRT's, model.fp16.onnx) differs from the float32 student by
# float16 rounding, not only by one 8-bit step: measured on a 150-intent CLINC150 student, 256 validation
# examples, max |logit diff| 0.23 (mean 0.017) where the float32 deploy graph's is 0.11 (mean 0.004). Its gate
# counts an example as decided above FP16_DECIDED_MARGIN and a regression output as agreeing within
# FP16_REGRESSION_TOLERANCE: loose enough for rounding, far too tight for a broken graph (an overflow, a lost cast).
FP16_DECIDED_MARGIN = 0.5
FP16_REGRESSION_TOLERANCE = 0.25


@dataclass(frozen=True)
class Parity:
    examples: int
    max_abs_diff: float
    mean_abs_diff: float
    agreement: float  # fraction of equal predictions (regression: |difference| <= REGRESSION_TOLERANCE)
    decided: int  # examples whose reference margin (top-1 minus top-2 logit) exceeds DECIDED_MARGIN
    decided_agreement: float  # agreement on those: what a rounding-level difference cannot flip
    margin: float = DECIDED_MARGIN  # the decided margin used (regression: the agreement tolerance)

    def to_dict(self) -> dict:
        return asdict(self)


MIN_COSINE = 0.99  # export's gate for embeddings: every example's vector this close to the PyTorch student's


@dataclass(frozen=True)
class EmbeddingParity:
    """How close an engine's sentence embeddings are to the reference's, example by example."""

    examples: int
    min_cosine: float
    mean_cosine: float
    max_abs_diff: float

    def to_dict(self) -> dict:
        return asdict(self)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two [N, D] arrays (float64)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(1) / np.maximum(norms, 1e-12)


def compare_embeddings(reference: np.ndarray, candidate: np.ndarray) -> EmbeddingParity:
    """Cosine similarity of each candidate embedding to its reference (both [examples, dimension])."""
    if reference.shape != candidate.shape:
        raise ValueError(f"embedding shapes differ: {reference.shape} vs {candidate.shape}")
    cos = cosines(reference, candidate)
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    return EmbeddingParity(len(reference), float(cos.min()), float(cos.mean()), float(diff.max()))


def compare(reference: np.ndarray, candidate: np.ndarray, regression: bool, margin: float = DECIDED_MARGIN,
            tolerance: float = REGRESSION_TOLERANCE) -> Parity:
    """Parity of `candidate` logits against `reference` logits, both [examples, labels]; `margin` and `tolerance`
    as DECIDED_MARGIN and REGRESSION_TOLERANCE (the FP16_ ones for a float16 graph)."""
    if reference.shape != candidate.shape:
        raise ValueError(f"logits shapes differ: {reference.shape} vs {candidate.shape}")
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    if regression:
        agree = (diff.reshape(len(diff), -1) <= tolerance).all(axis=1)
        decided = np.ones(len(agree), dtype=bool)
    else:
        agree = reference.argmax(-1) == candidate.argmax(-1)
        top2 = np.sort(reference, axis=-1)[:, -2:]
        decided = (top2[:, 1] - top2[:, 0]) > margin
    decided_agreement = float(agree[decided].mean()) if decided.any() else 1.0
    return Parity(len(reference), float(diff.max()), float(diff.mean()), float(agree.mean()), int(decided.sum()),
                  decided_agreement, tolerance if regression else margin)
