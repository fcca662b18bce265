"""Drop-in fake-quant replacements for nn.Linear and the word-embedding nn.Embedding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdqat.config import QuantConfig
from kdqat.quantizers import ActQuantizer, WeightQuantizer


class QuantLinear(nn.Linear):
    """nn.Linear whose input (8-bit) and weight (ternary, one scale per tensor or per output channel, i.e.
    per row of the [out, in] weight) are fake-quantized."""

    def __init__(self, in_features: int, out_features: int, bias: bool, config: QuantConfig) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.input_quantizer = ActQuantizer(config)
        self.weight_quantizer = WeightQuantizer(config, per_row=config.weight_scale == "channel")

    @classmethod
    def from_linear(cls, linear: nn.Linear, config: QuantConfig) -> QuantLinear:
        """Wrap an existing Linear, sharing its parameters (no copy)."""
        q = cls.__new__(cls)
        nn.Module.__init__(q)
        q.in_features, q.out_features = linear.in_features, linear.out_features
        q.weight, q.bias = linear.weight, linear.bias
        q.input_quantizer = ActQuantizer(config).to(linear.weight.device)
        q.weight_quantizer = WeightQuantizer(config, per_row=config.weight_scale == "channel")
        return q

    def effective_weight(self) -> torch.Tensor:
        """The weight the forward multiplies by (its ternary values): for a product with a constant table, which
        is not an activation and has no input quantizer (DeBERTa's relative positions)."""
        return self.weight_quantizer(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.input_quantizer(x), self.effective_weight(), self.bias)


class QuantEmbedding(nn.Embedding):
    """Word embeddings ternarized with one scale per row.

    Per-row quantization only looks at the row itself, so only the looked-up rows are quantized: the
    result equals quantizing the whole matrix first, at a fraction of the cost.
    """

    @classmethod
    def from_embedding(cls, emb: nn.Embedding, config: QuantConfig) -> QuantEmbedding:
        q = cls.__new__(cls)
        nn.Module.__init__(q)
        for name in ("num_embeddings", "embedding_dim", "padding_idx", "max_norm", "norm_type",
                     "scale_grad_by_freq", "sparse"):
            setattr(q, name, getattr(emb, name))
        q.weight = emb.weight
        q.weight_quantizer = WeightQuantizer(config, per_row=True)
        return q

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = F.embedding(ids, self.weight, self.padding_idx)
        return self.weight_quantizer(rows.reshape(-1, self.embedding_dim)).reshape(rows.shape)
