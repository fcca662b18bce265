"""DeBERTa-v2 and -v3's layout: BERT's (`encoder.layer`, `attention.self`, `attention.output`, `intermediate`,
`output`) with the projections named `query_proj` / `key_proj` / `value_proj`; no pooler in the encoder (the
classifier's ContextPooler stays float like the classifier); no token type ids (v3's type_vocab_size is 0).

DeBERTa's disentangled self-attention adds, to the content score Q.K^T, a content-to-position term (Q against the
projected relative-position table) and a position-to-content term (K against it), all scaled by
1 / sqrt(d * (1 + number of terms)), and does not call transformers' attention interface. `deberta_attention`
is its forward through kdqat's: the content score, the softmax and probs.V are kdqat's quantized ones; the two
position terms join the additive padding mask as a bias. Their position side is a constant of the weights (the
position table through the layer's projections, ternary where the projections are, with no activation
quantizer: the table is not an activation); their products with Q and K (taken before Q's and K's 8-bit
quantizers) run in float. The `ternarybert` preset's L_att compares the content scores only.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from kdqat.families.base import EncoderFamily


def _heads(self, x: torch.Tensor, batch: int) -> torch.Tensor:
    """[B, S, H * D] -> [B, H, S, D]."""
    return x.view(batch, -1, self.num_attention_heads, self.attention_head_size).transpose(1, 2)


def _table_projection(projection, table: torch.Tensor) -> torch.Tensor:
    """The position table through a projection's weight as the model uses it (ternary in a student), with no
    input quantizer: the table is not an activation."""
    weight = projection.effective_weight() if hasattr(projection, "effective_weight") else projection.weight
    return F.linear(table, weight, projection.bias)


def position_scores(self, q, k, relative_pos, table, factor: int) -> torch.Tensor:
    """DeBERTa's c2p and p2c terms, [B, H, S, S], for q / k [B, H, S, D] (DisentangledSelfAttention's arithmetic)."""
    from transformers.models.deberta_v2.modeling_deberta_v2 import build_relative_position

    span = self.pos_ebd_size
    if relative_pos is None:
        relative_pos = build_relative_position(q, k, bucket_size=self.position_buckets,
                                               max_position=self.max_relative_positions)
    relative = relative_pos.reshape(relative_pos.shape[-2:]).to(device=q.device, dtype=torch.long)  # [S, S]
    table = table[: span * 2]
    query_side = self.query_proj if self.share_att_key else getattr(self, "pos_query_proj", None)
    key_side = self.key_proj if self.share_att_key else getattr(self, "pos_key_proj", None)
    scale = (q.size(-1) * factor) ** 0.5
    # gathers along axis 3, not -1: onnx.reference's GatherElements mishandles a negative axis
    score = torch.zeros((), dtype=q.dtype, device=q.device)
    if "c2p" in self.pos_att_type:
        c2p = torch.matmul(q, _heads(self, _table_projection(key_side, table), 1).transpose(-1, -2))  # [B, H, S, 2 span]
        index = torch.clamp(relative + span, 0, span * 2 - 1).expand(*q.shape[:2], -1, -1)
        score = score + torch.gather(c2p, 3, index) / scale
    if "p2c" in self.pos_att_type:
        p2c = torch.matmul(k, _heads(self, _table_projection(query_side, table), 1).transpose(-1, -2))  # [B, H, S, 2 span]
        index = torch.clamp(-relative + span, 0, span * 2 - 1).expand(*k.shape[:2], -1, -1)
        score = score + torch.gather(p2c, 3, index).transpose(-1, -2) / scale
    return score


def deberta_attention(self, hidden_states, attention_mask, output_attentions=False, query_states=None,
                      relative_pos=None, rel_embeddings=None):
    """DisentangledSelfAttention.forward, with Q.K^T, the softmax and probs.V done by kdqat.attention.kdqat_attention."""
    from kdqat.attention import kdqat_attention

    batch = hidden_states.shape[0]
    q = _heads(self, self.query_proj(hidden_states if query_states is None else query_states), batch)
    k, v = _heads(self, self.key_proj(hidden_states), batch), _heads(self, self.value_proj(hidden_states), batch)
    factor = 1 + ("c2p" in self.pos_att_type) + ("p2c" in self.pos_att_type)
    # the model's pairwise mask [B, 1, S, S] (1 = may attend) as an additive one
    bias = torch.zeros(attention_mask.shape, dtype=q.dtype, device=q.device).masked_fill(
        ~attention_mask.bool(), torch.finfo(q.dtype).min)
    if self.relative_attention:
        bias = bias + position_scores(self, q, k, relative_pos, self.pos_dropout(rel_embeddings), factor)
    context, probs = kdqat_attention(self, q, k, v, bias, scaling=(self.attention_head_size * factor) ** -0.5,
                                     dropout=self.dropout.p)
    return context.reshape(batch, -1, self.all_head_size), (probs if output_attentions else None)


DEBERTA = EncoderFamily(
    name="deberta-v2",
    model_types=("deberta-v2",),
    layers="encoder.layer",
    linears=("attention.self.query_proj", "attention.self.key_proj", "attention.self.value_proj",
             "attention.output.dense", "intermediate.dense", "output.dense"),
    self_attention="attention.self",
    attention_output="attention.output",
    word_embeddings="embeddings.word_embeddings",
    pooler=None,
    inputs=("input_ids", "attention_mask"),
    attention_forward=deberta_attention,
)
