"""Model sizes: the float parameters, the ideal size of the method's bit allocation, files on disk."""

from __future__ import annotations

from torch import nn

from kdqat.modules import QuantEmbedding, QuantLinear
from kdqat.student import act_quantizers

FLOAT_BITS = 32


def float_bytes(model: nn.Module) -> int:
    """Bytes of the model's floating-point parameters at fp32 (what a float checkpoint stores)."""
    return sum(p.numel() for p in model.parameters()) * FLOAT_BITS // 8


def ideal_bytes(student: nn.Module) -> int:
    """The method's bit allocation: `weight_bits` per quantized weight, plus one fp32 scale per tensor (per row
    for the embeddings), an fp32 step per activation quantizer, and fp32 for every tensor kept in float."""
    quantized = {}
    for m in student.modules():
        if isinstance(m, (QuantLinear, QuantEmbedding)) and m.weight_quantizer.enabled:
            q = m.weight_quantizer
            quantized[id(m.weight)] = (q.bits, m.weight.shape[0] if q.per_row else 1)
    bits = 0
    for p in student.parameters():
        if id(p) in quantized:
            weight_bits, scales = quantized[id(p)]
            bits += p.numel() * weight_bits + scales * FLOAT_BITS
        else:
            bits += p.numel() * FLOAT_BITS
    bits += sum(FLOAT_BITS for q in act_quantizers(student).values() if q.enabled)
    return (bits + 7) // 8
