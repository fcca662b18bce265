"""MPNet's layout (all-mpnet-base-v2 and the other MPNet sentence-transformers): `encoder.layer`, the attention's
q / k / v / o under `attention.attn`, BERT's intermediate and output Linears, the attention's residual LayerNorm
`attention.LayerNorm`; the pooler of MPNetModel; no token type ids.

MPNet's self-attention adds a relative-position bias to its scores and does not call transformers' attention
interface: `mpnet_attention` is its forward through kdqat's, the bias joining the additive padding mask (the
probabilities are the model's own: softmax(QK^T / sqrt(d) + bias + mask)).
"""

from __future__ import annotations

from kdqat.families.base import EncoderFamily


def mpnet_attention(self, hidden_states, attention_mask=None, position_bias=None, output_attentions=False, **kwargs):
    """MPNetSelfAttention.forward, with Q.K^T, the softmax and probs.V done by kdqat.attention.kdqat_attention."""
    from kdqat.attention import kdqat_attention

    shape = (*hidden_states.shape[:-1], -1, self.attention_head_size)
    q, k, v = (proj(hidden_states).view(shape).transpose(1, 2) for proj in (self.q, self.k, self.v))
    bias = position_bias if attention_mask is None else attention_mask if position_bias is None else position_bias + attention_mask
    context, probs = kdqat_attention(self, q, k, v, bias, scaling=self.attention_head_size ** -0.5,
                                     dropout=self.dropout.p)
    output = self.o(context.reshape(*hidden_states.shape[:-1], self.all_head_size))
    return (output, probs) if output_attentions else (output,)


MPNET = EncoderFamily(
    name="mpnet",
    model_types=("mpnet",),
    layers="encoder.layer",
    linears=("attention.attn.q", "attention.attn.k", "attention.attn.v", "attention.attn.o", "intermediate.dense",
             "output.dense"),
    self_attention="attention.attn",
    attention_output="attention.LayerNorm",  # o + residual + LayerNorm, as L_output compares in BERT
    word_embeddings="embeddings.word_embeddings",
    pooler="pooler.dense",
    inputs=("input_ids", "attention_mask"),
    attention_forward=mpnet_attention,
)
