"""ModernBERT's layout: pre-LayerNorm layers under `layers`, one fused Q/K/V Linear `attn.Wqkv` and the output
`attn.Wo`, a gated FFN (`mlp.Wi` projects to the value and its gate, `mlp.Wo` back); the token table
`embeddings.tok_embeddings`; no pooler in the encoder (the classifier's `head` stays float like the classifier),
no token type ids.

Its attention calls transformers' attention interface after the rotary embedding, with the mask of its layer type:
global layers see every token, local layers a sliding window, both masks built for the "kdqat" implementation by
transformers' eager mask. The padded path is the only one (transformers unpads for FlashAttention only, which the
kdqat implementation replaces). The fused Q/K/V weight is ternarised as one tensor (one scale for Q, K and V).
The attention sub-layer's output for L_output is `attn.Wo`'s, before the residual: in a pre-LN layer no
LayerNorm follows it.
"""

from __future__ import annotations

from kdqat.families.base import EncoderFamily

MODERNBERT = EncoderFamily(
    name="modernbert",
    model_types=("modernbert",),
    layers="layers",
    linears=("attn.Wqkv", "attn.Wo", "mlp.Wi", "mlp.Wo"),
    self_attention="attn",
    attention_output="attn.Wo",
    word_embeddings="embeddings.tok_embeddings",
    pooler=None,
    inputs=("input_ids", "attention_mask"),
)
