"""Self-attention with the method's quantization points, registered as the "kdqat" attention function.

transformers' BERT-family models call the function named by `config._attn_implementation` with the
projected Q, K, V; registering ours keeps the model code untouched. It quantizes Q and K before Q.K^T
and the probabilities and V before probs.V (modules `q_bmm`, `k_bmm`, `p_bmm`, `v_bmm` on the
self-attention module, absent on a float teacher), and hands the pre-softmax scores and the
probabilities to a recorder when one is attached (see kdqat.capture).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

ATTN_IMPLEMENTATION = "kdqat"
BMM_QUANTIZERS = ("q_bmm", "k_bmm", "p_bmm", "v_bmm")


def _maybe(module: nn.Module, name: str, x: torch.Tensor) -> torch.Tensor:
    quantizer = getattr(module, name, None)
    return x if quantizer is None else quantizer(x)


def kdqat_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention with fake quantization. Shapes: q/k/v [B, H, S, D]; returns ([B, S, H, D], probs)."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    # K is quantized after the transpose (the same numbers: one scale per tensor) so that an exported
    # DequantizeLinear feeds the MatMul directly, the pattern integer kernels are matched on
    scores = torch.matmul(_maybe(module, "q_bmm", query), _maybe(module, "k_bmm", key.transpose(2, 3))) * scaling
    masked = scores if attention_mask is None else scores + attention_mask
    probs = torch.softmax(masked, dim=-1)
    recorder = getattr(module, "kdqat_recorder", None)
    if recorder is not None:
        recorder(scores=scores, probs=probs)
    dropped = nn.functional.dropout(probs, p=dropout, training=module.training)
    context = torch.matmul(_maybe(module, "p_bmm", dropped), _maybe(module, "v_bmm", value))
    return context.transpose(1, 2).contiguous(), probs


def register() -> None:
    """Make "kdqat" a valid attn_implementation (attention function and its additive padding mask)."""
    AttentionInterface.register(ATTN_IMPLEMENTATION, kdqat_attention)
    # Without a mask function of the same name transformers would silently drop the padding mask.
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTN_IMPLEMENTATION, eager_mask)


def use_kdqat_attention(model: nn.Module) -> None:
    """Switch a loaded model to the kdqat attention function."""
    register()
    model.config._attn_implementation = ATTN_IMPLEMENTATION
    for sub in model.modules():
        config = getattr(sub, "config", None)
        if config is not None and sub is not model and hasattr(config, "_attn_implementation"):
            config._attn_implementation = ATTN_IMPLEMENTATION
