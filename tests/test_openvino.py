"""The OpenVINO engine: the deploy graph as exported, the PyTorch student's predictions, calls from several threads,
and one-line errors."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from conftest import batch, run_cli
from test_serve import Server

pytest.importorskip("openvino", reason="openvino is not installed (pip install 'kdqat[openvino]')")

from kdqat.errors import KdqatError  # noqa: E402
from kdqat.runtime.cpu_info import openvino_caution  # noqa: E402
from kdqat.runtime.openvino_engine import OpenVinoEngine, compile_config  # noqa: E402


def feeds(seed: int, batch_size: int = 4, length: int = 16) -> dict[str, np.ndarray]:
    ids, mask = batch(seed=seed, batch_size=batch_size, length=length, vocab=1000)
    return {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": np.zeros_like(ids.numpy())}


def test_openvino_runs_the_deploy_graph_like_the_pytorch_student(exported_run):
    from kdqat.runtime.ort_engine import OrtEngine
    from kdqat.parity import compare
    from kdqat.runtime.torch_engine import TorchEngine

    graph = exported_run / "onnx" / "model.onnx"
    x = feeds(0, batch_size=8, length=24)  # the last rows padded: the mask must be honoured
    student = TorchEngine.student(exported_run / "student").run(x)
    engine = OpenVinoEngine(graph)
    logits = engine.run(x)
    assert logits.shape == student.shape and logits.dtype == np.float32
    parity = compare(student, logits, regression=False)
    assert parity.decided_agreement == 1.0
    np.testing.assert_allclose(logits, student, atol=0.05)  # re-quantization ties may round the other way
    np.testing.assert_allclose(logits, OrtEngine(graph).run(x), atol=0.05)
    other = {k: v[:3, :10] for k, v in x.items()}  # another shape, same compiled model (dynamic shapes)
    np.testing.assert_allclose(engine.run(other), TorchEngine.student(exported_run / "student").run(other), atol=0.05)


def test_opening_openvino_on_a_cpu_without_vnni_warns_once(exported_run, monkeypatch, caplog):
    from kdqat.runtime import openvino_engine

    graph = exported_run / "onnx" / "model.onnx"
    avx2_only = {"model": "cpu", "arch": "x86_64", "logical_cores": 2, "features": ["AVX2"]}
    monkeypatch.setattr(openvino_engine, "cpu_info", lambda: avx2_only)
    openvino_engine._caution_once.cache_clear()
    with caplog.at_level("WARNING", logger="kdqat"):
        OpenVinoEngine(graph), OpenVinoEngine(graph)
    warnings = [r.getMessage() for r in caplog.records if r.name == "kdqat.runtime.openvino_engine"]
    assert warnings == [f"OpenVINO: {openvino_caution(avx2_only)}"]
    assert "no VNNI or AMX" in warnings[0] and "--engine ort" in warnings[0]
    openvino_engine._caution_once.cache_clear()


def test_calls_run_on_the_smallest_fixed_shape_they_fit_padded_and_agree_with_the_dynamic_model(exported_run):
    graph = exported_run / "onnx" / "model.onnx"
    dynamic = OpenVinoEngine(graph)
    engine = OpenVinoEngine(graph, static_shapes=[(8, 24), (1, 16), (8, 24)])
    assert engine.static_shapes == [(1, 16), (8, 24)]  # sorted, once each
    assert [engine.fixed_shape_for(*s) for s in [(1, 16), (1, 9), (2, 9), (8, 24), (9, 8), (1, 30)]] == [
        (1, 16), (1, 16), (8, 24), (8, 24), None, None]
    exact = feeds(0, batch_size=8, length=24)  # its last rows padded already: a fixed-shape model honours the mask
    padded = feeds(1, batch_size=3, length=10)  # padded to 8 x 24 by the engine
    for x in (exact, padded, feeds(2, batch_size=9, length=8)):
        answer = engine.run(x)
        assert answer.shape == (len(x["input_ids"]), 2)
        np.testing.assert_allclose(answer, dynamic.run(x), atol=0.05)  # ties of re-quantization, as between engines
    assert set(engine._requests.by_model) == {(8, 24), None}  # the 9 x 8 call fits no fixed shape
    as_int32 = {k: v.astype(np.int32) for k, v in padded.items()}  # what a tokenizer may hand over
    np.testing.assert_array_equal(engine.run(as_int32), engine.run(padded))
    with pytest.raises(KdqatError, match="static shape 0x16: batch and sequence length must be 1 or more"):
        OpenVinoEngine(graph, static_shapes=[(0, 16)])
    with pytest.raises(KdqatError, match="static shape 1x4096: the graph does not take that shape"):
        OpenVinoEngine(graph, static_shapes=[(1, 4096)])


def test_bench_times_openvino_on_fixed_shape_models(exported_run, tmp_path):
    from kdqat.runtime.bench import BenchOptions, bench, open_engines

    opts = BenchOptions(str(exported_run), engines=("openvino",), batch_sizes=(1, 2), seq_lengths=(8,), iterations=2,
                        warmup=1, output_dir=str(tmp_path), plot=False, progress=False, static_shapes=((1, 8), (2, 8)))
    assert open_engines(opts)["student (openvino, static shapes)"].static_shapes == [(1, 8), (2, 8)]
    record = bench(opts)
    rows = [r for r in record["results"] if r["engine"] == "student (openvino, static shapes)"]
    assert [(r["batch"], r["seq"]) for r in rows] == [(1, 8), (2, 8)]


def test_calls_from_several_threads_get_their_own_answers(exported_run):
    engine = OpenVinoEngine(exported_run / "onnx" / "model.onnx", threads=1)  # two streams on two cores
    inputs = [feeds(seed) for seed in range(6)]
    alone = [engine.run(x) for x in inputs]
    first = alone[0].copy()
    engine.run(inputs[1])
    np.testing.assert_array_equal(alone[0], first)  # an answer is not the request's reused output buffer
    results: dict[int, list[np.ndarray]] = {}
    failures: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            results[k] = [engine.run(inputs[(k + i) % 6]) for i in range(12)]
        except BaseException as e:  # a thread's exception would otherwise vanish with it
            failures.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == [] and sorted(results) == [0, 1, 2] and all(len(a) == 12 for a in results.values())
    for k, answers in results.items():
        for i, answer in enumerate(answers):
            np.testing.assert_array_equal(answer, alone[(k + i) % 6])


@pytest.mark.parametrize("threads, cores, streams, total", [(None, 2, None, "2"), (1, 2, "2", "2"), (1, 8, "8", "8"),
                                                            (2, 8, "4", "8"), (3, 8, "2", "6"), (4, 2, "1", "4")])
def test_threads_per_call_become_streams_that_fit_the_cores(threads, cores, streams, total):
    config = compile_config(threads, cores)
    assert config["INFERENCE_PRECISION_HINT"] == "f32"  # not the BF16 default of AMX CPUs: the same numbers everywhere
    assert config.get("NUM_STREAMS") == streams and config["INFERENCE_NUM_THREADS"] == total


@pytest.mark.parametrize("text, shapes", [("1x32, 32X128", ((1, 32), (32, 128))), ("", ())])
def test_static_shapes_are_read_from_the_command_line(text, shapes):
    from kdqat.runtime.registry import parse_shapes

    assert parse_shapes(text) == shapes


def test_bench_static_shapes_grid_is_every_batch_size_with_every_length():
    from kdqat.cli import _static_shapes

    assert _static_shapes("grid", "1,8", "32,128") == ((1, 32), (8, 32), (1, 128), (8, 128))
    assert _static_shapes("1x32", "1,8", "32,128") == ((1, 32),)


@pytest.mark.parametrize("text", ["1x", "32", "0x8", "1x-3", "axb"])
def test_bad_static_shapes_get_a_one_line_error(text):
    from kdqat.runtime.registry import parse_shapes

    with pytest.raises(KdqatError, match=r"--static-shapes .*: give BATCHxLENGTH shapes"):
        parse_shapes(text)


def test_eval_scores_a_fixed_shape_deployment(exported_run, glue_dir, tmp_path):
    done = run_cli("eval", str(exported_run), "--engine", "openvino", "--static-shapes", "8x32", "--batch-size", "8",
                   "--data-dir", str(glue_dir), "--max-samples", "12", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "OpenVINO, static shapes 8x32" in done.stdout and "agree" in done.stdout.lower()
    assert "openvino-static.json" in done.stdout  # beside, not over, the dynamic model's record
    refused = run_cli("eval", str(exported_run), "--engine", "ort", "--static-shapes", "8x32", cwd=tmp_path)
    assert refused.returncode != 0 and "only --engine openvino compiles fixed-shape models" in refused.stderr


def test_openvino_errors_are_one_line(tmp_path, monkeypatch):
    with pytest.raises(KdqatError, match="no such ONNX file"):
        OpenVinoEngine(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a graph")
    with pytest.raises(KdqatError, match="junk.onnx: OpenVINO cannot read this graph"):
        OpenVinoEngine(tmp_path / "junk.onnx")
    import builtins

    real_import = builtins.__import__

    def without_openvino(name, *args, **kwargs):
        if name == "openvino":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_openvino)
    with pytest.raises(KdqatError, match=r"pip install 'kdqat\[openvino\]'"):
        OpenVinoEngine(tmp_path / "junk.onnx")


def test_serving_runs_two_openvino_workers_on_the_cpu():
    from kdqat.runtime.served_model import Layout, serving_layout

    assert serving_layout("openvino", "cpu", cores=2, platform="linux") == Layout(2, 1, 1)
    assert serving_layout("openvino", "cpu", cores=1) == Layout(1, 1, None)
    with pytest.raises(KdqatError, match="--provider cuda: OpenVINO runs on the CPU"):
        from kdqat.runtime.registry import StudentSource, open_engine

        open_engine("openvino", StudentSource(student=None, onnx=None, provider="cuda"))


def test_eval_on_openvino_scores_the_dev_set_and_agrees_with_pytorch(exported_run, glue_dir, tmp_path):
    done = run_cli("eval", str(exported_run), "--engine", "openvino", "--data-dir", str(glue_dir), "--max-samples", "24",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "OpenVINO" in done.stdout and "agree" in done.stdout.lower()


def test_kdqat_serve_answers_with_the_openvino_engine(exported_run, glue_dir):
    from transformers import AutoTokenizer

    from kdqat.glue.data import load_split
    from kdqat.glue.tasks import get_task
    from kdqat.runtime.batching import predict

    dev = load_split(get_task("rte"), "dev", glue_dir, max_samples=8)
    pairs = [[a, b] for a, b in zip(dev["text_a"], dev["text_b"])]
    server = Server(exported_run, "--engine", "openvino")
    try:
        assert "OpenVINO" in server.wait()["model"]
        answer = server.predict(pairs)
    finally:
        server.stop()
    assert answer.status_code == 200, answer.text
    tokenizer = AutoTokenizer.from_pretrained(exported_run / "onnx")
    enc = tokenizer([p[0] for p in pairs], [p[1] for p in pairs], truncation=True, max_length=32)
    logits = predict(OpenVinoEngine(exported_run / "onnx" / "model.onnx").run, dict(enc), 32)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    served = np.array([[p["probabilities"]["entailment"], p["probabilities"]["not_entailment"]]
                       for p in answer.json()["predictions"]])
    np.testing.assert_allclose(served, probs, rtol=0, atol=1e-5)
