"""Encoder families as a registry: where each family keeps the parts the method quantizes and distils; an encoder
kdqat does not know is refused in one line before any work."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    DistilBertConfig,
    DistilBertForSequenceClassification,
    DistilBertModel,
    ElectraConfig,
    ElectraForSequenceClassification,
    MPNetConfig,
    MPNetForSequenceClassification,
    MPNetModel,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from conftest import batch, run_cli, tiny_classifier
from kdqat import QuantConfig, prepare
from kdqat.capture import capture
from kdqat.errors import KdqatError
from kdqat.families import REGISTRY, family_for, family_of
from kdqat.modules import QuantLinear

SHAPE = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             max_position_embeddings=70, num_labels=2)


DISTILBERT_SHAPE = dict(vocab_size=120, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=70)


def tiny_models():
    torch.manual_seed(0)
    yield "bert", "bert", tiny_classifier()
    yield "roberta", "bert", RobertaForSequenceClassification(RobertaConfig(**SHAPE)).eval()
    yield "electra", "bert", ElectraForSequenceClassification(ElectraConfig(embedding_size=32, **SHAPE)).eval()
    yield "distilbert", "distilbert", DistilBertForSequenceClassification(DistilBertConfig(**DISTILBERT_SHAPE)).eval()
    yield "mpnet", "mpnet", MPNetForSequenceClassification(MPNetConfig(**SHAPE)).eval()


@pytest.mark.parametrize("model_type,family_name,model", list(tiny_models()), ids=lambda x: x if isinstance(x, str) else "")
def test_each_family_gets_every_quantizer_and_every_captured_tensor(model_type, family_name, model):
    family = family_of(model)
    assert family.name == family_name and model.config.model_type == model_type
    prepare(model, QuantConfig())
    quantized = [name for name, m in model.named_modules() if isinstance(m, QuantLinear)]
    assert len([n for n in quantized if ".layer." in n]) == 2 * len(family.linears)  # 6 Linears in each of 2 layers
    ids, mask = batch()
    with capture(model) as internals:
        model(input_ids=ids, attention_mask=mask)
    assert len(internals.probs) == len(internals.attn_outputs) == 2
    assert internals.probs[0].shape == (3, 4, 9, 9) and internals.attn_outputs[0].shape == (3, 9, 32)
    probs = internals.probs[0]
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 4, 9))  # softmax over keys
    assert float(probs[-1, :, :, -4:].detach().abs().max()) == 0.0  # the padded keys of the last sentence get nothing


def test_an_unknown_family_is_refused_naming_the_known_ones():
    with pytest.raises(KdqatError) as e:
        family_for("deberta-v2", "--model tiny")
    assert str(e.value) == f"--model tiny is a 'deberta-v2' encoder; kdqat knows {', '.join(sorted(REGISTRY))}"
    assert {"bert", "roberta", "xlm-roberta", "electra", "distilbert", "mpnet"} <= set(REGISTRY)


def test_mpnet_attention_through_kdqat_is_the_models_own_arithmetic():
    """MPNet's relative-position bias joins the padding mask: before any quantizer, the kdqat route computes what
    the model computes."""
    torch.manual_seed(0)
    model = MPNetForSequenceClassification(MPNetConfig(**SHAPE)).eval()
    ids, mask = batch()
    reference = model(input_ids=ids, attention_mask=mask).logits
    family_of(model).use_kdqat_attention(model)
    torch.testing.assert_close(model(input_ids=ids, attention_mask=mask).logits, reference, rtol=0, atol=1e-6)


def saved_with_default_tokenizer(model, folder):
    from transformers import AutoTokenizer

    from kdqat.models import resolve_model

    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(resolve_model("default")).save_pretrained(folder)
    return folder


def test_train_refuses_an_unknown_family_before_writing_anything(tmp_path, glue_dir):
    from transformers import DebertaV2Config, DebertaV2Model

    model = saved_with_default_tokenizer(DebertaV2Model(DebertaV2Config(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                                                        num_attention_heads=4, intermediate_size=64)),
                                         tmp_path / "deberta")
    done = run_cli("train", "--task", "rte", "--data-dir", glue_dir, "--model", model, "--output-dir", tmp_path / "run",
                   "--max-steps", "2", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: --model {model} is a 'deberta-v2' encoder; kdqat knows {', '.join(sorted(REGISTRY))}"
    assert not (tmp_path / "run").exists()


ENCODERS = {  # a tiny encoder of each family beyond BERT's layout, as a pretrained folder would hold it
    "distilbert": lambda: DistilBertModel(DistilBertConfig(**{**DISTILBERT_SHAPE, "vocab_size": 30522,
                                                              "max_position_embeddings": 128})),
    "mpnet": lambda: MPNetModel(MPNetConfig(**{**SHAPE, "vocab_size": 30522, "max_position_embeddings": 130})),
}


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_a_run_of_each_family_trains_exports_checks_and_serves(tmp_path, glue_dir, name):
    """DistilBERT and MPNet (no token type ids) through every stage: train, export with its parity gate, the
    TensorRT rules, eval and one served request; the graph takes the inputs the family names."""
    import json

    import httpx
    import onnx
    from test_serve import Server

    torch.manual_seed(0)
    model = saved_with_default_tokenizer(ENCODERS[name](), tmp_path / name)
    run = tmp_path / "run"
    done = run_cli("train", "--task", "rte", "--data-dir", glue_dir, "--model", model, "--output-dir", run, "--max-steps", "2",
                   "--max-train-samples", "32", "--max-eval-samples", "32", "--eval-steps", "1", "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    done = run_cli("export", run, "--samples", "32", "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads((run / "onnx" / "export.json").read_text())
    graph = onnx.load(str(run / "onnx" / "model.onnx"))
    assert [i.name for i in graph.graph.input] == report["inputs"] == list(REGISTRY[name].inputs)
    assert report["parity"]["ort_deploy_vs_torch"]["agreement"] == 1.0
    assert report["parity"]["ort_deploy_vs_torch"]["max_abs_diff"] < 1e-4
    assert run_cli("check", run / "onnx" / "model.onnx", "--target", "trt", cwd=tmp_path).returncode == 0
    assert run_cli("eval", run, "--engine", "ort", "--max-samples", "16", "--no-progress", cwd=tmp_path).returncode == 0
    server = Server(run, "--workers", "1")
    try:
        server.wait()
        answer = httpx.post(f"{server.url}/v1/predict", json=[["a man plays", "a person plays"]], timeout=30)
        assert answer.status_code == 200 and answer.json()["predictions"][0]["label"] in ("entailment", "not_entailment")
    finally:
        server.stop()


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_a_sentence_embedder_of_each_family_is_quantized_and_captured(name):
    from kdqat.embedding import Pooling, SentenceEmbedder

    torch.manual_seed(0)
    encoder = ENCODERS[name]()
    encoder.pooler = None  # as SentenceEmbedder.from_pretrained loads an encoder: sentence vectors are pooled tokens
    model = SentenceEmbedder(encoder, Pooling("mean", True)).eval()
    prepare(model, QuantConfig())
    assert family_of(model).name == name
    assert sum(isinstance(m, QuantLinear) for m in model.modules()) == 12  # the 6 Linears of 2 layers, no pooler
    ids, mask = batch()
    with capture(model) as internals:
        vectors = model(input_ids=ids, attention_mask=mask).logits
    assert vectors.shape == (3, 32) and len(internals.probs) == len(internals.attn_outputs) == 2
    torch.testing.assert_close(vectors.norm(dim=-1), torch.ones(3))  # pooled and normalised
