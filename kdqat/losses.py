"""Distillation losses of TernaryBERT and Kim et al. (EMNLP 2022), and the presets that combine them.

Every loss is a pure function of student and teacher tensors plus the [B, S] padding mask (1 = token).
Token-level terms are averaged over each sentence's valid tokens first and then over the batch, so a
sentence weighs the same whatever the padding around it (padding to the batch's longest sequence
leaves the loss unchanged) and the loss of a batch is the mean of its sentences' losses (data-parallel
ranks average to the single-process value).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from kdqat.errors import KdqatError


EMBEDDING_LOSSES = ("cosine", "mse")  # how emb_loss compares the sentence embeddings (--embedding-loss)


def pred_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, regression: bool = False) -> torch.Tensor:
    """L_pred: soft cross-entropy -sum softmax(t) * log_softmax(s), mean over the batch; MSE for regression.

    Shapes: logits [B, C] (C = 1 for regression).
    """
    if regression:
        return F.mse_loss(student_logits.float(), teacher_logits.float())
    return -(F.softmax(teacher_logits.float(), -1) * F.log_softmax(student_logits.float(), -1)).sum(-1).mean()


def emb_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str = "cosine") -> torch.Tensor:
    """L_emb: the sentence embeddings [B, D] of student and teacher compared by mean 1 - cosine, or by MSE
    (mean over the batch and the D features). On normalised vectors the two differ only in scale
    (mean squared distance = 2 (1 - cos) / D), so choosing between them chooses the term's weight."""
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(student.float(), teacher.float(), dim=-1)).mean()
    if kind == "mse":
        return F.mse_loss(student.float(), teacher.float())
    raise KdqatError(f"--embedding-loss {kind!r} is not one of {', '.join(EMBEDDING_LOSSES)}")


def _token_mse(s: torch.Tensor, t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over valid tokens and features, per sentence, then mean over the batch.

    Shapes: s, t [B, S, D]; mask [B, S].
    """
    m = mask.to(s.dtype)
    per_token = (s.float() - t.float()).pow(2).mean(-1)  # [B, S]
    return ((per_token * m).sum(-1) / m.sum(-1).clamp_min(1)).mean()


def rep_loss(student_hidden: Sequence[torch.Tensor], teacher_hidden: Sequence[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """L_rep: sum over the L+1 hidden states (embedding output first) of their MSE. Each [B, S, D]."""
    _check_layers(student_hidden, teacher_hidden, "hidden states")
    return sum(_token_mse(s, t, mask) for s, t in zip(student_hidden, teacher_hidden, strict=True))


def _pair_mask(mask: torch.Tensor) -> torch.Tensor:
    """[B, 1, S, S] mask of (query, key) pairs where both tokens are real."""
    m = mask.float()
    return (m[:, :, None] * m[:, None, :])[:, None]


def att_loss(student_scores: Sequence[torch.Tensor], teacher_scores: Sequence[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """L_att (TernaryBERT): sum over layers of the MSE of pre-softmax attention scores.

    Scores [B, H, S, S] before the padding mask is added; the MSE covers each sentence's valid
    len x len block, averaged over heads and the batch.
    """
    _check_layers(student_scores, teacher_scores, "attention scores")
    pairs = _pair_mask(mask)
    n_pairs = pairs.sum((-1, -2)).clamp_min(1)  # [B, 1]
    total = 0.0
    for s, t in zip(student_scores, teacher_scores, strict=True):
        sq = (s.float() - t.float()).pow(2) * pairs
        total = total + (sq.sum((-1, -2)) / n_pairs).mean()
    return total


class _RowCrossEntropy(torch.autograd.Function):
    """Per row -sum_k t * log s for probabilities s (gradient -t / s) and fixed targets t, each [..., S].

    One pass fewer each way than composing clamp, log, multiply and sum under autograd: the map loss
    runs over every [B, H, S, S] attention map, which makes it a visible part of a QAT step.
    s is floored at 1e-12 so that an underflowed probability gives a finite loss.
    """

    @staticmethod
    def forward(ctx, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        floored = s.clamp_min(1e-12)
        ctx.save_for_backward(floored, t)
        return -torch.linalg.vecdot(t, floored.log())

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        floored, t = ctx.saved_tensors
        return torch.div(t, floored).mul_(-grad.unsqueeze(-1)), None


def map_loss(student_probs: Sequence[torch.Tensor], teacher_probs: Sequence[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """L_map (Kim et al. 2022, attention-map loss): sum over layers of KL(teacher || student).

    Probabilities [B, H, S, S] (softmax over keys). For each sentence and head the KL of every valid
    query row is summed over the valid keys, the rows are summed and divided by the sentence's true
    length; the result is averaged over heads and the batch. The teacher is a constant here.
    """
    _check_layers(student_probs, teacher_probs, "attention maps")
    m = mask.float()
    rows = m[:, None, :]  # [B, 1, S]: valid query rows
    lengths = m.sum(-1).clamp_min(1)[:, None]  # [B, 1]
    keys = None if bool(mask.all()) else m[:, None, None, :]  # [B, 1, 1, S]: valid keys
    total = 0.0
    for s, t in zip(student_probs, teacher_probs, strict=True):
        with torch.no_grad():
            t32 = t.float() if keys is None else t.float() * keys
            entropy = torch.xlogy(t32, t32).sum(-1)  # sum_k t log t, [B, H, S]
        kl_rows = entropy + _RowCrossEntropy.apply(s.float(), t32)
        total = total + ((kl_rows * rows).sum(-1) / lengths).mean()
    return total


def output_loss(student_outputs: Sequence[torch.Tensor], teacher_outputs: Sequence[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """L_output (Kim et al. 2022, attention-output loss): sum over layers of the MSE of the attention
    sub-layer outputs taken after the output projection, residual add and LayerNorm. Each [B, S, D]."""
    _check_layers(student_outputs, teacher_outputs, "attention outputs")
    return sum(_token_mse(s, t, mask) for s, t in zip(student_outputs, teacher_outputs, strict=True))


def _check_layers(student: Sequence, teacher: Sequence, what: str) -> None:
    if len(student) != len(teacher):
        raise KdqatError(f"student has {len(student)} {what}, teacher {len(teacher)}: the models must have the same depth")


# preset -> loss weights. The totals REFERENCE.md section 1 names.
PRESETS: dict[str, dict[str, float]] = {
    "ternarybert": {"pred": 1.0, "rep": 1.0, "att": 1.0},
    "map": {"pred": 1.0, "rep": 1.0, "map": 1.0},
    "output": {"pred": 1.0, "rep": 1.0, "output": 1.0},
    "map+output": {"pred": 1.0, "rep": 1.0, "map": 1.0, "output": 1.0},
}
LOSS_NAMES = ("pred", "emb", "rep", "att", "map", "output")


def loss_weights(kd: str = "map+output", gamma: float | None = None, gamma_on: str | None = None,
                 prediction_term: str = "pred") -> dict[str, float]:
    """The weights of each loss for a preset, or for the unified form L_pred + L_rep + L_map + g L_output
    (gamma_on="output") / L_pred + L_rep + g L_map + L_output (gamma_on="map"). `prediction_term` names the
    objective's term on the model's output (an embedding student's is L_emb), with L_pred's weight."""
    return {(prediction_term if name == "pred" else name): w for name, w in _weights(kd, gamma, gamma_on).items()}


def _weights(kd: str, gamma: float | None, gamma_on: str | None) -> dict[str, float]:
    if gamma is None:
        if gamma_on is not None:
            raise KdqatError("--gamma-on needs --gamma")
        if kd not in PRESETS:
            raise KdqatError(f"--kd {kd!r} is not one of {', '.join(PRESETS)}")
        return dict(PRESETS[kd])
    if gamma_on not in ("map", "output"):
        raise KdqatError("--gamma needs --gamma-on map|output (the loss the factor multiplies)")
    if not 0.0 <= gamma <= 1.0:
        raise KdqatError(f"--gamma {gamma} must lie in [0, 1]")
    weights = dict(PRESETS["map+output"])
    weights[gamma_on] = gamma
    return weights


