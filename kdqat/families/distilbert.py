"""DistilBERT's layout: `transformer.layer`, the attention's q_lin / k_lin / v_lin / out_lin, the FFN's lin1 / lin2,
the attention sub-layer's residual LayerNorm `sa_layer_norm`; no pooler, no token type ids."""

from __future__ import annotations

from kdqat.families.base import EncoderFamily

DISTILBERT = EncoderFamily(
    name="distilbert",
    model_types=("distilbert",),
    layers="transformer.layer",
    linears=("attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin", "ffn.lin1", "ffn.lin2"),
    self_attention="attention",
    attention_output="sa_layer_norm",  # dense (out_lin) + residual + LayerNorm, as L_output compares in BERT
    word_embeddings="embeddings.word_embeddings",
    pooler=None,  # its classifier's pre_classifier Linear is part of the head, left in float like the classifier
    inputs=("input_ids", "attention_mask"),
    feed_forward_size="hidden_dim",
)
