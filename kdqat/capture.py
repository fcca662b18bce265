"""Record what distillation compares: pre-softmax scores, attention probabilities and attention outputs.

Hidden states come from the model itself (`output_hidden_states=True`); the attention tensors are
handed over by the kdqat attention function and a forward hook on each attention-output block.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import nn

from kdqat.families import family_of


@dataclass
class Internals:
    """Per-layer tensors of one forward pass, in layer order."""

    scores: list[torch.Tensor] = field(default_factory=list)  # [B, H, S, S], before the mask and softmax
    probs: list[torch.Tensor] = field(default_factory=list)  # [B, H, S, S], softmax over keys
    attn_outputs: list[torch.Tensor] = field(default_factory=list)  # [B, S, D], after dense + residual + LN


class _ScoreRecorder:
    def __init__(self, internals: Internals) -> None:
        self.internals = internals

    def __call__(self, scores: torch.Tensor, probs: torch.Tensor) -> None:
        self.internals.scores.append(scores)
        self.internals.probs.append(probs)


@contextmanager
def capture(model: nn.Module) -> Iterator[Internals]:
    """Collect the attention internals of every forward pass run inside the block.

    The model must use the "kdqat" attention implementation (see kdqat.attention).
    """
    internals = Internals()
    recorder = _ScoreRecorder(internals)
    hooks = []
    family = family_of(model)
    layers = family.encoder_layers(model)
    for layer in layers:
        family.self_attention_of(layer).kdqat_recorder = recorder
        hooks.append(
            family.attention_output_of(layer).register_forward_hook(lambda _m, _i, out: internals.attn_outputs.append(out))
        )
    try:
        yield internals
    finally:
        for hook in hooks:
            hook.remove()
        for layer in layers:
            family.self_attention_of(layer).kdqat_recorder = None
