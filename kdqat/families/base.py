"""The interface every encoder family implements: where, in a transformers model of that family, the parts the
method quantizes and distils live (REFERENCE.md section 1), and which inputs the model takes.

Paths are dotted module names: `layers` inside the model's base model (the encoder without its task head), the
per-layer ones inside one encoder layer. A new family is one module with an `EncoderFamily` and one entry in
`kdqat.families.REGISTRY`.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class EncoderFamily:
    name: str
    model_types: tuple[str, ...]  # transformers' config.model_type values laid out this way
    layers: str  # the encoder's layer list, inside the base model
    linears: tuple[str, ...]  # per layer, the Linears quantized: Q, K, V, attention output, FFN in and out
    self_attention: str  # per layer: the module whose attention function kdqat replaces (quantized Q.K^T, probs.V)
    attention_output: str  # per layer: the attention sub-layer's output (dense, residual, LayerNorm): L_output's input
    word_embeddings: str  # inside the base model: the token embedding table (quantized per row)
    pooler: str | None = None  # inside the base model: the pooler's Linear, quantized where the family has one
    inputs: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")  # what the model's forward takes
    # For a family whose self-attention does not call transformers' attention interface: a forward for its
    # self-attention module that does, through kdqat.attention.kdqat_attention (None: the model calls it already).
    attention_forward: Callable | None = None
    feed_forward_size: str = "intermediate_size"  # the config attribute holding the FFN's inner width

    def dimensions(self, config) -> dict[str, int]:
        """A config's layers, width, heads, FFN width and vocabulary, under one set of names for every family."""
        return {"num_hidden_layers": config.num_hidden_layers, "hidden_size": config.hidden_size,
                "num_attention_heads": config.num_attention_heads,
                "intermediate_size": getattr(config, self.feed_forward_size), "vocab_size": config.vocab_size}

    def use_kdqat_attention(self, model: nn.Module) -> None:
        """Route every self-attention of `model` through the kdqat attention function (quantization points and the
        recorder of capture): transformers' attention interface where the model calls it, else `attention_forward`."""
        from kdqat.attention import use_kdqat_attention

        use_kdqat_attention(model)
        if self.attention_forward is not None:
            for layer in self.encoder_layers(model):
                attention = self.self_attention_of(layer)
                attention.forward = types.MethodType(self.attention_forward, attention)

    @staticmethod
    def base(model: nn.Module) -> nn.Module:
        return getattr(model, "base_model", model)

    def encoder_layers(self, model: nn.Module) -> nn.ModuleList:
        return self.base(model).get_submodule(self.layers)

    def self_attention_of(self, layer: nn.Module) -> nn.Module:
        return layer.get_submodule(self.self_attention)

    def attention_output_of(self, layer: nn.Module) -> nn.Module:
        return layer.get_submodule(self.attention_output)

    def pooler_dense(self, model: nn.Module) -> nn.Linear | None:
        """The pooler's Linear, or None where the family (or this model: an embedder has none) lacks it."""
        if self.pooler is None:
            return None
        try:
            return self.base(model).get_submodule(self.pooler)
        except AttributeError:
            return None

    def word_embedding_table(self, model: nn.Module) -> nn.Embedding:
        return self.base(model).get_submodule(self.word_embeddings)

    def replace(self, root: nn.Module, dotted: str, new: nn.Module) -> None:
        """Put `new` at `dotted` inside `root`."""
        parent, _, child = dotted.rpartition(".")
        setattr(root.get_submodule(parent) if parent else root, child, new)
