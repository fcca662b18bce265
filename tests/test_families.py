"""Encoder families as a registry: where each family keeps the parts the method quantizes and distils; an encoder
kdqat does not know is refused in one line before any work."""

from __future__ import annotations

import pytest
import torch
from transformers import ElectraConfig, ElectraForSequenceClassification, RobertaConfig, RobertaForSequenceClassification

from conftest import batch, run_cli, tiny_classifier
from kdqat import QuantConfig, prepare
from kdqat.capture import capture
from kdqat.errors import KdqatError
from kdqat.families import REGISTRY, family_for, family_of
from kdqat.modules import QuantLinear

SHAPE = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             max_position_embeddings=70, num_labels=2)


def bert_shaped():
    torch.manual_seed(0)
    yield "bert", tiny_classifier()
    yield "roberta", RobertaForSequenceClassification(RobertaConfig(**SHAPE)).eval()
    yield "electra", ElectraForSequenceClassification(ElectraConfig(embedding_size=32, **SHAPE)).eval()


@pytest.mark.parametrize("model_type,model", list(bert_shaped()), ids=lambda x: x if isinstance(x, str) else "")
def test_a_bert_shaped_model_gets_every_quantizer_and_every_captured_tensor(model_type, model):
    family = family_of(model)
    assert family.name == "bert" and model.config.model_type == model_type
    prepare(model, QuantConfig())
    quantized = [name for name, m in model.named_modules() if isinstance(m, QuantLinear)]
    assert len([n for n in quantized if ".layer." in n]) == 2 * len(family.linears)  # 6 Linears in each of 2 layers
    ids, mask = batch()
    with capture(model) as internals:
        model(input_ids=ids, attention_mask=mask)
    assert len(internals.probs) == len(internals.attn_outputs) == 2
    assert internals.probs[0].shape == (3, 4, 9, 9) and internals.attn_outputs[0].shape == (3, 9, 32)


def test_an_unknown_family_is_refused_naming_the_known_ones():
    with pytest.raises(KdqatError) as e:
        family_for("distilbert", "--model tiny")
    assert str(e.value) == f"--model tiny is a 'distilbert' encoder; kdqat knows {', '.join(sorted(REGISTRY))}"


def test_train_refuses_an_unknown_family_before_writing_anything(tmp_path, glue_dir):
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertModel

    from kdqat.models import resolve_model

    model = tmp_path / "distil"
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("default"))
    DistilBertModel(DistilBertConfig(vocab_size=tokenizer.vocab_size, dim=32, n_layers=2, n_heads=4, hidden_dim=64)).save_pretrained(model)
    tokenizer.save_pretrained(model)
    done = run_cli("train", "--task", "rte", "--data-dir", glue_dir, "--model", model, "--output-dir", tmp_path / "run",
                   "--max-steps", "2", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: --model {model} is a 'distilbert' encoder; kdqat knows {', '.join(sorted(REGISTRY))}"
    assert not (tmp_path / "run").exists()
