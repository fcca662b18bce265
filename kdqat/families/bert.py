"""BERT's layout, shared by the encoders built on it: BERT (MiniLM, bge, e5), RoBERTa, XLM-R and ELECTRA."""

from __future__ import annotations

from kdqat.families.base import EncoderFamily

BERT = EncoderFamily(
    name="bert",
    model_types=("bert", "roberta", "xlm-roberta", "electra"),
    layers="encoder.layer",
    linears=("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
             "intermediate.dense", "output.dense"),
    self_attention="attention.self",
    attention_output="attention.output",
    word_embeddings="embeddings.word_embeddings",
    pooler="pooler.dense",
)
