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
    DebertaV2Config,
    DebertaV2ForSequenceClassification,
    DebertaV2Model,
    ModernBertConfig,
    ModernBertForSequenceClassification,
    ModernBertModel,
    RobertaConfig,
    RobertaForSequenceClassification,
    RobertaModel,
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
# DeBERTa-v3's attention: relative positions in log buckets, both position terms, shared projections, no token types
DEBERTA_SHAPE = dict(**SHAPE, relative_attention=True, position_buckets=8, pos_att_type=["p2c", "c2p"], share_att_key=True,
                     norm_rel_ebd="layer_norm", type_vocab_size=0)
# ModernBERT's: a global layer then a local one whose window (2 tokens each side) is shorter than the test sentences
MODERNBERT_SHAPE = dict(**SHAPE, local_attention=4, global_attn_every_n_layers=2, pad_token_id=0, bos_token_id=101,
                        eos_token_id=102, cls_token_id=101, sep_token_id=102)


def tiny_models():
    torch.manual_seed(0)
    yield "bert", "bert", tiny_classifier()
    yield "roberta", "bert", RobertaForSequenceClassification(RobertaConfig(**SHAPE)).eval()
    yield "electra", "bert", ElectraForSequenceClassification(ElectraConfig(embedding_size=32, **SHAPE)).eval()
    yield "distilbert", "distilbert", DistilBertForSequenceClassification(DistilBertConfig(**DISTILBERT_SHAPE)).eval()
    yield "mpnet", "mpnet", MPNetForSequenceClassification(MPNetConfig(**SHAPE)).eval()
    yield "deberta-v2", "deberta-v2", DebertaV2ForSequenceClassification(DebertaV2Config(**DEBERTA_SHAPE)).eval()
    yield "modernbert", "modernbert", ModernBertForSequenceClassification(ModernBertConfig(**MODERNBERT_SHAPE)).eval()


@pytest.mark.parametrize("model_type,family_name,model", list(tiny_models()), ids=lambda x: x if isinstance(x, str) else "")
def test_each_family_gets_every_quantizer_and_every_captured_tensor(model_type, family_name, model):
    family = family_of(model)
    assert family.name == family_name and model.config.model_type == model_type
    prepare(model, QuantConfig())
    quantized = [name for name, m in model.named_modules() if isinstance(m, QuantLinear)]
    assert len([n for n in quantized if f"{family.layers}." in n]) == 2 * len(family.linears)  # every Linear of 2 layers
    ids, mask = batch()
    with capture(model) as internals:
        model(input_ids=ids, attention_mask=mask)
    assert len(internals.probs) == len(internals.attn_outputs) == 2
    assert internals.probs[0].shape == (3, 4, 9, 9) and internals.attn_outputs[0].shape == (3, 9, 32)
    probs = internals.probs[0]
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 4, 9))  # softmax over keys
    # the padded keys of the last sentence get nothing from its real tokens
    assert float(probs[-1, :, :5, -4:].detach().abs().max()) == 0.0


def test_an_unknown_family_is_refused_naming_the_known_ones():
    with pytest.raises(KdqatError) as e:
        family_for("t5", "--model tiny")
    assert str(e.value) == f"--model tiny is a 't5' encoder; kdqat knows {', '.join(sorted(REGISTRY))}"
    assert {"bert", "roberta", "xlm-roberta", "electra", "distilbert", "mpnet", "deberta-v2", "modernbert"} <= set(REGISTRY)


OWN_ATTENTION = {  # families whose attention kdqat routes through its own function, each with its position scheme
    "mpnet": lambda: MPNetForSequenceClassification(MPNetConfig(**SHAPE)),  # relative-position bias
    "deberta-v3": lambda: DebertaV2ForSequenceClassification(DebertaV2Config(**DEBERTA_SHAPE)),  # c2p + p2c, shared keys
    "deberta-v2": lambda: DebertaV2ForSequenceClassification(DebertaV2Config(**{**DEBERTA_SHAPE, "share_att_key": False,
                                                                             "position_buckets": -1})),  # own projections
    "modernbert": lambda: ModernBertForSequenceClassification(ModernBertConfig(**MODERNBERT_SHAPE)),  # rotary, windows
}


@pytest.mark.parametrize("name", sorted(OWN_ATTENTION))
def test_attention_through_kdqat_is_the_models_own_arithmetic(name):
    """Position terms join the padding mask, windows are the model's masks: before any quantizer, the kdqat route
    computes what the model computes (and every token's probabilities come from kdqat's function)."""
    torch.manual_seed(0)
    model = OWN_ATTENTION[name]().eval()
    model.config._attn_implementation = "eager"
    ids, mask = batch()
    ids = ids.clamp_max(model.config.vocab_size - 1)
    reference = model(input_ids=ids, attention_mask=mask).logits
    assert float(reference.detach().std()) > 0  # the sentences differ in the logits: a comparison that can fail
    family_of(model).use_kdqat_attention(model)
    with capture(model) as internals:
        logits = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(logits, reference, rtol=0, atol=1e-6)
    assert len(internals.probs) == 2


def saved_with_default_tokenizer(model, folder):
    from transformers import AutoTokenizer

    from kdqat.models import resolve_model

    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(resolve_model("default")).save_pretrained(folder)
    return folder


def test_train_refuses_an_unknown_family_before_writing_anything(tmp_path, glue_dir):
    from transformers import FunnelConfig, FunnelModel

    model = saved_with_default_tokenizer(FunnelModel(FunnelConfig(vocab_size=30522, d_model=32, n_head=4, d_head=8,
                                                                  d_inner=64, block_sizes=[1, 1])), tmp_path / "funnel")
    done = run_cli("train", "--task", "rte", "--data-dir", glue_dir, "--model", model, "--output-dir", tmp_path / "run",
                   "--max-steps", "2", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: --model {model} is a 'funnel' encoder; kdqat knows {', '.join(sorted(REGISTRY))}"
    assert not (tmp_path / "run").exists()


ENCODERS = {  # a tiny encoder of each family, as a pretrained folder would hold it (RoBERTa for BERT's layout, which
    # the default model covers everywhere else; two token types, as the default tokenizer gives pairs)
    "roberta": lambda: RobertaModel(RobertaConfig(**{**SHAPE, "vocab_size": 30522, "max_position_embeddings": 130,
                                                     "type_vocab_size": 2})),
    "distilbert": lambda: DistilBertModel(DistilBertConfig(**{**DISTILBERT_SHAPE, "vocab_size": 30522,
                                                              "max_position_embeddings": 128})),
    "mpnet": lambda: MPNetModel(MPNetConfig(**{**SHAPE, "vocab_size": 30522, "max_position_embeddings": 130})),
    "deberta-v2": lambda: DebertaV2Model(DebertaV2Config(**{**DEBERTA_SHAPE, "vocab_size": 30522,
                                                            "max_position_embeddings": 128})),
    "modernbert": lambda: ModernBertModel(ModernBertConfig(**{**MODERNBERT_SHAPE, "vocab_size": 30522,
                                                              "max_position_embeddings": 128})),
}


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_a_run_of_each_family_trains_exports_checks_and_serves(tmp_path, glue_dir, name):
    """RoBERTa (BERT's layout), DistilBERT, MPNet, DeBERTa and ModernBERT (the last four without token type ids)
    through every stage: train, export with its parity gate, the
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
    done = run_cli("export", run, "--samples", "32", "--no-progress", "--triton", tmp_path / "triton_repo", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads((run / "onnx" / "export.json").read_text())
    for graph_file in ("model.onnx", "model.fp16.onnx", "model.packed.onnx"):
        graph = onnx.load(str(run / "onnx" / graph_file))
        assert [i.name for i in graph.graph.input] == report["inputs"] == list(REGISTRY[name].inputs), graph_file
    student_config = (tmp_path / "triton_repo" / "rte_student" / "config.pbtxt").read_text()
    assert [n for n in ("input_ids", "attention_mask", "token_type_ids") if f'"{n}"' in student_config] == report["inputs"]
    assert report["parity"]["ort_deploy_vs_torch"]["agreement"] == 1.0
    assert report["parity"]["ort_deploy_vs_torch"]["max_abs_diff"] < 1e-4
    assert run_cli("check", run / "onnx" / "model.onnx", "--target", "trt", cwd=tmp_path).returncode == 0
    assert run_cli("eval", run, "--engine", "ort", "--max-samples", "16", "--no-progress", cwd=tmp_path).returncode == 0
    bench = run_cli("bench", run, "--batch-sizes", "1", "--seq-lengths", "8", "--iterations", "1", "--warmup", "0",
                    "--no-progress", cwd=tmp_path)
    assert bench.returncode == 0, bench.stderr
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
    assert family_of(model) is REGISTRY[name]  # RoBERTa: BERT's layout
    assert sum(isinstance(m, QuantLinear) for m in model.modules()) == 2 * len(family_of(model).linears)  # no pooler
    ids, mask = batch()
    with capture(model) as internals:
        vectors = model(input_ids=ids, attention_mask=mask).logits
    assert vectors.shape == (3, 32) and len(internals.probs) == len(internals.attn_outputs) == 2
    torch.testing.assert_close(vectors.norm(dim=-1), torch.ones(3))  # pooled and normalised


@pytest.mark.parametrize("kd", ["ternarybert", "map", "output", "map+output"])
@pytest.mark.parametrize("model_type", [t for t, _, _ in tiny_models()])
def test_every_preset_trains_every_quantized_linear_of_each_family(model_type, kd):
    """Each preset's losses between a family's float teacher and its student are finite and reach every ternary
    weight (the scores, probabilities and attention outputs each preset compares are where the family says)."""
    import copy

    from kdqat.distill import distillation_losses, run_captured
    from kdqat.losses import loss_weights

    model = {t: m for t, _, m in tiny_models()}[model_type]  # a fresh one
    teacher = copy.deepcopy(model)
    family_of(teacher).use_kdqat_attention(teacher)
    student = prepare(model.train(), QuantConfig())
    ids, mask = batch()
    inputs = dict(input_ids=ids.clamp_max(model.config.vocab_size - 1), attention_mask=mask)
    with torch.no_grad():
        teacher_view = run_captured(teacher, inputs)
    weights = loss_weights(kd)
    terms = distillation_losses(run_captured(student, inputs), teacher_view, mask, weights)
    assert set(terms) == {name for name, w in weights.items() if w}
    total = sum(weights[name] * value for name, value in terms.items())
    assert torch.isfinite(total) and float(total.detach()) > 0
    total.backward()
    for name, m in student.named_modules():
        if isinstance(m, QuantLinear) and f"{family_of(student).layers}." in name:
            assert m.weight.grad is not None and float(m.weight.grad.abs().sum()) > 0, name


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_a_sentence_embedder_of_each_family_distils_exports_and_serves_vectors(tmp_path, name):
    """The embedding objective on a tiny sentence-transformers folder of each family: distilled on text, exported
    with its cosine gate, and served: /v1/embeddings answers the exported graph's vectors."""
    import json

    import httpx
    import numpy as np
    from test_embedding import sentences
    from test_serve import Server

    from kdqat.embedding import Pooling, write_pooling

    torch.manual_seed(0)
    model = saved_with_default_tokenizer(ENCODERS[name](), tmp_path / name)
    write_pooling(model, Pooling("mean", True), dimension=32, max_seq_length=64)
    (tmp_path / "text.txt").write_text("\n".join(sentences(60)) + "\n")
    run = tmp_path / "run"
    done = run_cli("train", "--objective", "embedding", "--task", "notes", "--train-file", "text.txt", "--model", model,
                   "--output-dir", run, "--max-steps", "4", "--eval-steps", "2", "--batch-size", "16",
                   "--max-seq-length", "32", "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    done = run_cli("export", run, "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads((run / "onnx" / "export.json").read_text())
    assert report["inputs"] == list(REGISTRY[name].inputs) and report["parity"]["ort_deploy_vs_torch"]["min_cosine"] > 0.999
    server = Server(run, "--workers", "1")
    try:
        server.wait()
        answer = httpx.post(f"{server.url}/v1/embeddings", json={"input": ["book a flight", "rain in london"]}, timeout=30)
        assert answer.status_code == 200, answer.text
        vectors = np.array([d["embedding"] for d in answer.json()["data"]])
        assert vectors.shape == (2, 32)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    finally:
        server.stop()
