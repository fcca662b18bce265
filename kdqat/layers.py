"""Where things live in a BERT-family encoder (BERT, RoBERTa, MiniLM, ... share this layout)."""

from __future__ import annotations

from torch import nn

from kdqat.errors import KdqatError

# Linear layers the method quantizes, relative to each encoder layer.
LAYER_LINEARS = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The encoder's layer list, or a clear error for a model that is not BERT-shaped."""
    base = getattr(model, "base_model", model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if layers is None:
        raise KdqatError(f"{type(model).__name__} is not a BERT-family encoder (no base_model.encoder.layer)")
    return layers


def self_attention(layer: nn.Module) -> nn.Module:
    return layer.attention.self


def attention_output(layer: nn.Module) -> nn.Module:
    """The attention sub-layer's output block: dense, residual add and LayerNorm."""
    return layer.attention.output


def word_embeddings(model: nn.Module) -> nn.Embedding:
    return getattr(model, "base_model", model).embeddings.word_embeddings


def pooler_dense(model: nn.Module) -> nn.Linear | None:
    pooler = getattr(getattr(model, "base_model", model), "pooler", None)
    return None if pooler is None else pooler.dense
