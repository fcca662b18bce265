"""Sentence-embedding students: pooling read from the model's sentence-transformers files, the embedding loss,
unlabelled text sources, the quality metrics against hand-computed values, and a tiny run through train, export
(parity gate), eval, Triton and `kdqat serve` with OpenAI-style and text-embeddings-inference requests."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from kdqat.embedding import Pooling, SentenceEmbedder, pool, read_pooling, write_pooling
from kdqat.errors import KdqatError
from conftest import run_cli
from test_serve import Server

WORDS = ["book", "flight", "weather", "song", "music", "train", "bank", "balance", "alarm", "timer", "recipe", "pizza",
         "restaurant", "hotel", "rain", "paris", "london", "transfer", "money", "card"]


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 9)))) for _ in range(n)]


def st_folder(base: Path, target: Path, pooling: Pooling) -> Path:
    """A sentence-transformers copy of a model folder, pooled by `pooling`."""
    shutil.copytree(base, target)
    write_pooling(target, pooling, dimension=32, max_seq_length=64)
    return target


# --- pooling and the model ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["mean", "cls", "max"])
@pytest.mark.parametrize("normalize", [True, False])
def test_pooling_is_read_from_the_models_files(tmp_path, tiny_model_dir, mode, normalize):
    folder = st_folder(tiny_model_dir, tmp_path / "m", Pooling(mode, normalize))
    assert read_pooling(folder) == Pooling(mode, normalize)
    assert SentenceEmbedder.from_pretrained(folder).pooling == Pooling(mode, normalize)


def test_the_default_model_pools_by_mean_and_normalises():
    from kdqat.models import resolve_model

    assert read_pooling(resolve_model("default")) == Pooling("mean", True)


def test_unsupported_pooling_and_missing_files_are_refused_by_name(tmp_path, tiny_model_dir):
    with pytest.raises(KdqatError, match="no modules.json"):
        read_pooling(tiny_model_dir)
    folder = st_folder(tiny_model_dir, tmp_path / "m", Pooling())
    config = json.loads((folder / "1_Pooling" / "config.json").read_text())
    config["pooling_mode_mean_sqrt_len_tokens"] = True
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(config))
    with pytest.raises(KdqatError, match="pooling mean, pooling_mode_mean_sqrt_len_tokens"):
        read_pooling(folder)
    modules = json.loads((folder / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(KdqatError, match=r"not Dense"):
        read_pooling(folder)


def test_pool_by_hand():
    hidden = torch.tensor([[[1.0, 0.0], [3.0, 4.0], [100.0, 100.0]]])  # the third token is padding
    mask = torch.tensor([[1, 1, 0]])
    assert torch.allclose(pool(hidden, mask, Pooling("mean", False)), torch.tensor([[2.0, 2.0]]))
    assert torch.allclose(pool(hidden, mask, Pooling("cls", False)), torch.tensor([[1.0, 0.0]]))
    assert torch.allclose(pool(hidden, mask, Pooling("max", False)), torch.tensor([[3.0, 4.0]]))
    assert torch.allclose(pool(hidden, mask, Pooling("max", True)), torch.tensor([[0.6, 0.8]]))


def test_embeddings_do_not_depend_on_padding(tmp_path, tiny_model_dir):
    model = SentenceEmbedder.from_pretrained(st_folder(tiny_model_dir, tmp_path / "m", Pooling("mean", True))).eval()
    ids = torch.tensor([[101, 2000, 2001, 102]])
    alone = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    padded_ids = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], 1)
    padded = model(input_ids=padded_ids, attention_mask=(padded_ids != 0).long()).logits
    assert torch.allclose(alone, padded, atol=1e-5)
    assert torch.allclose(alone.norm(dim=-1), torch.ones(1))


def test_embedding_loss_cosine_and_mse_by_hand():
    from kdqat.losses import emb_loss, loss_weights

    s, t = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    assert emb_loss(s, t, "cosine").item() == pytest.approx((1 - 0.6 + 0.0) / 2)
    assert emb_loss(s, t, "mse").item() == pytest.approx((0.4**2 + 0.8**2) / 4)
    assert loss_weights("map+output", prediction_term="emb") == {"emb": 1.0, "rep": 1.0, "map": 1.0, "output": 1.0}
    assert loss_weights("ternarybert", prediction_term="emb") == {"emb": 1.0, "rep": 1.0, "att": 1.0}


# --- text and metrics --------------------------------------------------------------------------------------------

def test_text_sources_read_lines_and_columns_each_sentence_once(tmp_path):
    from kdqat.data.texts import MAX_HELD_OUT, TextSource, embedding_spec, held_out_size

    lines = tmp_path / "s.txt"
    lines.write_text("a cat\n\nthe dog\na cat\n  spaced  \n")
    csv = tmp_path / "s.csv"
    csv.write_text("id,sentence\n1,a cat\n2,the dog\n3,spaced\n")
    for path in (lines, csv):
        source = TextSource(embedding_spec("x", "files"), settings={"train_file": str(path), "validation_fraction": 0.34})
        train, validation = source.load("train"), source.load("validation")
        assert sorted(list(train["text_a"]) + list(validation["text_a"])) == ["a cat", "spaced", "the dog"]
        assert len(validation) == 2  # ceil(3 * 0.34)
    assert held_out_size(100_000, 0.1) == MAX_HELD_OUT


def test_sentences_of_a_glue_task_are_both_sides_of_its_pairs(glue_dir):
    from kdqat.data.texts import TextSource, embedding_spec

    source = TextSource(embedding_spec("stsb", "glue"), settings={"data_dir": str(glue_dir), "validation_fraction": 0.1})
    texts = set(source.load("train")["text_a"]) | set(source.load("validation")["text_a"])
    assert "A plane is taking off." in texts and "An air plane is taking off." in texts  # STS-B train's first pair


def test_sts_spearman_and_knn_by_hand():
    from kdqat.eval.embedding_quality import knn_accuracy, knn_predict, sts_spearman

    table = {"a": [1, 0], "b": [0.9, 0.1], "c": [0, 1], "d": [0.1, 0.9], "e": [-1, 0]}
    embed = lambda texts: np.array([table[t] for t in texts], dtype=np.float32)  # noqa: E731
    # cosines: (a,b) ~0.99, (a,c) 0, (a,e) -1: gold scores in the same order -> Spearman 100
    assert sts_spearman(embed, ["a", "a", "a"], ["b", "c", "e"], [5.0, 2.0, 0.0]) == pytest.approx(100.0)
    assert sts_spearman(embed, ["a", "a", "a"], ["b", "c", "e"], [0.0, 2.0, 5.0]) == pytest.approx(-100.0)
    train = np.array([[1, 0], [0.9, 0.1], [0, 1]], dtype=np.float32)
    labels = np.array([0, 0, 1])
    assert knn_predict(train, labels, np.array([[1.0, 0.05], [0.05, 1.0]]), k=1).tolist() == [0, 1]
    # k=3: class 0 gets cos 0.71+0.77, class 1 gets 0.71: class 0 wins although the nearest is tied
    assert knn_predict(train, labels, np.array([[0.5, 0.5]]), k=3).tolist() == [0]
    assert knn_accuracy(embed, ["a", "c"], ["x", "y"], ["b", "d", "e"], ["x", "y", "y"], k=1) == pytest.approx(200 / 3)


def test_embedding_options_that_do_not_apply_are_refused():
    from kdqat.options import TrainOptions

    for field, message in (("label_column", "--label-column does not apply"), ("teacher", "--teacher does not apply"),
                           ("test_file", "--test-file does not apply")):
        opts = TrainOptions(task=None, output_dir="x", objective="embedding", train_file="t.txt", **{field: "y"})
        with pytest.raises(KdqatError, match=message):
            opts.check_data()
    with pytest.raises(KdqatError, match="--objective 'embed' is not one of classification, embedding"):
        TrainOptions(task="rte", output_dir="x", objective="embed").check_data()
    with pytest.raises(KdqatError, match="give the text to distil on"):
        TrainOptions(task=None, output_dir="x", objective="embedding").check_data()
    with pytest.raises(KdqatError, match="--embedding-loss 'l1'"):
        TrainOptions(task=None, output_dir="x", objective="embedding", train_file="t.txt", embedding_loss="l1").check_data()


# --- a tiny run, end to end --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def embedding_run(tmp_path_factory, tiny_model_dir) -> Path:
    root = tmp_path_factory.mktemp("embedding")
    model = st_folder(tiny_model_dir, root / "float-model", Pooling("mean", True))
    (root / "text.txt").write_text("\n".join(sentences(120)) + "\n")
    rows = ["text,intent"] + [f"{s},{s.split()[0]}" for s in sentences(200, seed=1)]
    (root / "knn_train.csv").write_text("\n".join(rows[:141]) + "\n")
    (root / "knn_test.csv").write_text("\n".join(rows[:1] + rows[141:]) + "\n")
    done = run_cli("train", "--objective", "embedding", "--task", "notes", "--train-file", "text.txt", "--model", str(model),
                   "--output-dir", "run", "--max-steps", "8", "--eval-steps", "4", "--batch-size", "16",
                   "--max-seq-length", "32", "--no-progress", cwd=root)
    assert done.returncode == 0, done.stderr
    return root


def test_training_selects_on_cosine_to_the_float_model_and_writes_a_sentence_transformers_folder(embedding_run):
    run = embedding_run / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    config = json.loads((run / "config.json").read_text())
    assert config["task_spec"]["objective"] == "embedding" and metrics["metric"] == "validation_cosine"
    assert metrics["teacher"]["pooling"] == {"mode": "mean", "normalize": True}
    history = metrics["student"]["history"]
    assert [h["step"] for h in history] == [4, 8]
    assert metrics["student"]["best"] == max(history, key=lambda h: h["dev"]["validation_cosine"])
    assert config["options"]["loss_weights"] == {"emb": 1.0, "rep": 1.0, "map": 1.0, "output": 1.0}
    assert read_pooling(run / "student") == Pooling("mean", True)
    assert json.loads((run / "student" / "sentence_bert_config.json").read_text())["max_seq_length"] == 32


def test_export_gates_on_cosine_and_ends_in_the_sentence_embedding(embedding_run):
    import onnx

    done = run_cli("export", "run", "--no-progress", "--triton", "triton_repo", cwd=embedding_run)
    assert done.returncode == 0, done.stderr
    report = json.loads((embedding_run / "run" / "onnx" / "export.json").read_text())
    assert report["output"] == "sentence_embedding" and report["problem_type"] == "embedding"
    assert report["dimension"] == 32 and report["parity"]["min_cosine"] == 0.99
    for name in ("ort_deploy_vs_torch", "onnx_reference_vs_torch"):  # the gate passes at 0.99; the engines match closely
        assert report["parity"][name]["min_cosine"] > 0.9999 and report["parity"][name]["examples"] > 0, name
    graph = onnx.load(str(embedding_run / "run" / "onnx" / "model.onnx"))
    assert [o.name for o in graph.graph.output] == ["sentence_embedding"]
    ensemble = (embedding_run / "triton_repo" / "notes_text" / "config.pbtxt").read_text()
    assert 'name: "EMBEDDING" data_type: TYPE_FP32 dims: [ 32 ]' in ensemble
    assert 'output_map { key: "sentence_embedding" value: "EMBEDDING" }' in ensemble
    check = run_cli("check", "run/onnx/model.onnx", cwd=embedding_run)
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_failed_parity_gate_writes_nothing(embedding_run, tmp_path):
    done = run_cli("export", "run", "--no-progress", "--min-cosine", "1.0", "--output-dir", str(tmp_path / "out"),
                   cwd=embedding_run)
    assert done.returncode != 0 and "cosine similarity" in done.stderr and not (tmp_path / "out").exists()


def test_eval_scores_knn_and_the_engine_agrees_with_pytorch(embedding_run):
    needs_export(embedding_run)
    done = run_cli("eval", "run", "--knn-train", "knn_train.csv", "--knn-test", "knn_test.csv", "--knn-k", "3",
                   "--no-progress", cwd=embedding_run, env=no_glue())
    assert done.returncode == 0, done.stderr
    result = json.loads((embedding_run / "run" / "eval" / "ort.json").read_text())
    assert set(result["scores"]) == {"teacher (fp32, PyTorch)", "student (PyTorch)", "student (onnxruntime)"}
    assert result["scores"]["teacher (fp32, PyTorch)"]["validation_cosine"] == pytest.approx(100.0)
    assert all(0 <= s["knn_accuracy"] <= 100 for s in result["scores"].values())
    assert result["agreement"]["min_cosine"] > 0.99
    # no GLUE folder: STS-B is skipped at once, without a round of network retries and their warnings first
    assert result["skipped"] == ("STS-B dev not scored: no --data-dir given and GLUE_DIR is unset (give a GLUE folder "
                                 "with STS-B/dev.tsv)")
    assert not any(word in done.stderr for word in ("Connection", "Retry", "huggingface.co")), done.stderr


def needs_export(root: Path) -> None:
    if not (root / "run" / "onnx" / "export.json").is_file():
        assert run_cli("export", "run", "--no-progress", cwd=root).returncode == 0


def no_glue() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if k != "GLUE_DIR"}


@pytest.fixture(scope="module")
def embedding_server(embedding_run):
    needs_export(embedding_run)
    server = Server(embedding_run / "run", "--batching", "--max-batch-size", "8", "--served-model-name", "mini-embed")
    server.wait()
    yield server
    server.stop()


def engine_vectors(root: Path, texts: list[str]) -> np.ndarray:
    from transformers import AutoTokenizer

    from kdqat.runtime.batching import pad_batch
    from kdqat.runtime.ort_engine import OrtEngine

    tokenizer = AutoTokenizer.from_pretrained(str(root / "run" / "onnx"))
    features = dict(tokenizer(texts, truncation=True, max_length=32))
    return OrtEngine(root / "run" / "onnx" / "model.onnx").run(pad_batch(features, list(range(len(texts)))))


def counted_inputs(server) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return float(next(x for x in text.splitlines() if x.startswith("kdqat_inputs_total")).split()[1])


def test_openai_style_requests_get_the_engines_vectors(embedding_server, embedding_run):
    texts = ["book a flight to paris", "what is my bank balance"]
    before = counted_inputs(embedding_server)
    answer = httpx.post(f"{embedding_server.url}/v1/embeddings", json={"input": texts, "model": "notes"}, timeout=30)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["object"] == "list" and [d["index"] for d in body["data"]] == [0, 1]
    assert all(d["object"] == "embedding" for d in body["data"])
    expected = engine_vectors(embedding_run, texts)
    np.testing.assert_allclose(np.array([d["embedding"] for d in body["data"]]), expected, atol=1e-5)
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0
    assert counted_inputs(embedding_server) == before + 2  # the server's metrics count embedding requests too
    one = httpx.post(f"{embedding_server.url}/v1/embeddings", json={"input": texts[0], "encoding_format": "base64"},
                     timeout=30).json()
    decoded = np.frombuffer(base64.b64decode(one["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(decoded, expected[0], atol=1e-5)


def test_the_openai_client_gets_the_engines_vectors(embedding_server, embedding_run):
    import openai

    client = openai.OpenAI(base_url=f"{embedding_server.url}/v1", api_key="not-checked", max_retries=0)
    texts = ["transfer money to my card", "rain in london"]
    answer = client.embeddings.create(input=texts, model="notes")  # the client asks for base64 and decodes it
    np.testing.assert_allclose(np.array([d.embedding for d in answer.data]), engine_vectors(embedding_run, texts),
                               atol=1e-5)
    assert answer.usage.prompt_tokens > 0
    with pytest.raises(openai.UnprocessableEntityError, match="token ids"):
        client.embeddings.create(input=[[101, 2000]], model="notes")


def test_tei_style_requests_get_a_list_of_vectors(embedding_server, embedding_run):
    texts = ["set an alarm", "play a song"]
    answer = httpx.post(f"{embedding_server.url}/embed", json={"inputs": texts}, timeout=30)
    assert answer.status_code == 200
    np.testing.assert_allclose(np.array(answer.json()), engine_vectors(embedding_run, texts), atol=1e-5)
    single = httpx.post(f"{embedding_server.url}/embed", json={"inputs": "play a song"}, timeout=30).json()
    assert len(single) == 1 and len(single[0]) == 32


@pytest.mark.parametrize("route, body, status, message", [
    ("/v1/embeddings", {"model": "notes"}, 422, "missing 'input'"),
    ("/v1/embeddings", {"input": "x", "model": "text-embedding-3-small"}, 404,
     "the model 'text-embedding-3-small' does not exist here; this server serves 'notes', 'mini-embed'"),
    ("/v1/embeddings", {"input": ["a", ""]}, 422, "input[1]: an empty string"),
    ("/v1/embeddings", {"input": "word " * 100}, 400, "an input has 102 tokens; this model takes at most 32 (send "
                                                      '"truncate": true to cut it)'),
    ("/embed", {"inputs": ""}, 422, "inputs[0]: an empty string"),
    ("/v1/embeddings", {"input": []}, 422, "non-empty list"),
    ("/v1/embeddings", {"input": [[101, 2000]]}, 422, "token ids"),
    ("/v1/embeddings", {"input": "x", "encoding_format": "int8"}, 422, "encoding_format 'int8'"),
    ("/v1/embeddings", {"input": "x", "dimensions": 8}, 422, "cannot shorten"),
    ("/v1/embeddings", {"input": ["x"] * 300}, 413, "at most 256"),
    ("/embed", {"input": "x"}, 422, "missing 'inputs'"),
    ("/embed", {"inputs": "x", "normalize": False}, 422, "normalised in its graph"),
    ("/embed", {"inputs": "word " * 100}, 413, "an input has 102 tokens; this model takes at most 32"),
    ("/embed", {"inputs": "word " * 100, "truncate": False}, 413, "an input has 102 tokens; this model takes at most 32"),
    ("/v1/predict", ["x"], 404, "serves embeddings"),
])
def test_bad_embedding_requests_are_refused_in_each_apis_shape(embedding_server, route, body, status, message):
    answer = httpx.post(f"{embedding_server.url}{route}", json=body, timeout=30)
    assert answer.status_code == status
    error = answer.json()["error"]
    if route == "/v1/embeddings":  # OpenAI's error object
        assert error["type"] == "invalid_request_error" and message in error["message"]
    else:
        assert message in error


def test_a_long_text_is_cut_only_when_asked(embedding_server, embedding_run):
    """Both APIs refuse a text over the model's length (above) unless the request says "truncate": true; then
    the vector is the one of its first 32 tokens."""
    long_text = "word " * 100
    cut = engine_vectors(embedding_run, [long_text])  # the tokenizer truncated to the model's 32 tokens
    tei = httpx.post(f"{embedding_server.url}/embed", json={"inputs": long_text, "truncate": True}, timeout=30)
    assert tei.status_code == 200
    np.testing.assert_allclose(np.array(tei.json()), cut, atol=1e-5)
    openai = httpx.post(f"{embedding_server.url}/v1/embeddings", json={"input": long_text, "truncate": True}, timeout=30)
    assert openai.status_code == 200
    np.testing.assert_allclose(np.array([d["embedding"] for d in openai.json()["data"]]), cut, atol=1e-5)


def test_the_served_names_are_listed_and_answered(embedding_server):
    listed = httpx.get(f"{embedding_server.url}/v1/models", timeout=30).json()
    assert listed["object"] == "list" and [m["id"] for m in listed["data"]] == ["notes", "mini-embed"]
    assert all(m["object"] == "model" and m["owned_by"] == "kdqat" for m in listed["data"])
    for name in ("notes", "mini-embed"):
        answer = httpx.post(f"{embedding_server.url}/v1/embeddings", json={"input": "hi", "model": name}, timeout=30)
        assert answer.status_code == 200 and answer.json()["model"] == "notes"


def test_bench_times_an_embedding_run(embedding_run):
    needs_export(embedding_run)
    done = run_cli("bench", "run", "--batch-sizes", "2", "--seq-lengths", "16", "--warmup", "1", "--iterations", "2",
                   "--no-plot", "--no-progress", cwd=embedding_run)
    assert done.returncode == 0, done.stderr
    rows = json.loads((embedding_run / "run" / "bench" / "bench.json").read_text())["results"]
    assert {r["engine"] for r in rows} >= {"teacher fp32 (torch)", "student (ort)"}


def test_embedding_routes_on_a_classifier_say_where_to_go(exported_run):
    server = Server(exported_run)
    try:
        server.wait()
        answer = httpx.post(f"{server.url}/v1/embeddings", json={"input": "x"}, timeout=30)
        assert answer.status_code == 404 and "POST /v1/predict" in answer.json()["error"]["message"]
    finally:
        server.stop()


def test_an_interrupted_embedding_run_resumes_to_the_same_student(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    from kdqat.options import TrainOptions
    from kdqat.train import train

    model = st_folder(tiny_model_dir, tmp_path / "float-model", Pooling("cls", False))
    (tmp_path / "text.txt").write_text("\n".join(sentences(60)) + "\n")

    def options(name: str) -> TrainOptions:
        return TrainOptions(task="notes", objective="embedding", train_file=str(tmp_path / "text.txt"), model=str(model),
                            output_dir=str(tmp_path / name), batch_size=8, max_seq_length=32, max_steps=4, eval_steps=2,
                            logging_steps=1, progress=False)

    class Interrupt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt

    train(options("straight"))
    with pytest.raises(KeyboardInterrupt):
        train(options("resumed"), callbacks=[Interrupt()])
    assert not (tmp_path / "resumed" / "student").exists()
    train(options("resumed"))
    a, b = (load_file(str(tmp_path / n / "student" / "model.safetensors")) for n in ("straight", "resumed"))
    assert set(a) == set(b)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert read_pooling(tmp_path / "resumed" / "student") == Pooling("cls", False)
