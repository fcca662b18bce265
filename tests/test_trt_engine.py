"""TensorRT engine logic that needs no GPU: profiles, staleness, the layer report, the errors; the build
itself runs only where TensorRT and a GPU are (marked gpu, skipped otherwise)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kdqat import KdqatError
from kdqat.runtime.engine import ShapeProfile
from kdqat.runtime.trt_engine import engine_record, layer_report, stale_reason


def test_profile_parsing_and_shape_checks():
    p = ShapeProfile.parse("1,8,32", "16,128,128")
    assert p.shapes() == ((1, 16), (8, 128), (32, 128))
    p.check((32, 128))
    p.check((1, 16))
    with pytest.raises(KdqatError, match=r"\[batch 33, sequence 64\] is outside the engine's profile"):
        p.check((33, 64))
    with pytest.raises(KdqatError, match="outside"):
        p.check((4, 8))
    with pytest.raises(KdqatError, match="min <= opt <= max"):
        ShapeProfile(4, 2, 8)
    with pytest.raises(KdqatError, match="MIN,OPT,MAX"):
        ShapeProfile.parse("1,8", "16,128,128")


def test_engine_record_and_staleness(tmp_path):
    graph = tmp_path / "model.onnx"
    graph.write_bytes(b"graph v1")
    built = engine_record(graph, ShapeProfile(), "10.9.0", "NVIDIA H100", "9.0")
    assert stale_reason(built, dict(built)) is None
    assert stale_reason(None, built) == "no engine record"
    assert "TensorRT version" in stale_reason(built, {**built, "tensorrt": "10.10.0"})
    assert "GPU" in stale_reason(built, {**built, "gpu": "NVIDIA A100"})
    graph.write_bytes(b"graph v2")  # re-exported: the same file name, other content
    assert "ONNX graph" in stale_reason(built, engine_record(graph, ShapeProfile(), "10.9.0", "NVIDIA H100", "9.0"))
    assert "profile" in stale_reason(built, {**built, "profile": {**built["profile"], "max_batch": 64}})


def test_layer_report_counts_precisions_and_flags_float_matmuls():
    info = {"Layers": [
        {"Name": "qkv", "LayerType": "MatrixMultiply", "Outputs": [{"Format/Datatype": "Int8 NC/32HW32"}]},
        {"Name": "ln", "LayerType": "Normalization", "Outputs": [{"Format/Datatype": "Half Row major linear FP16"}]},
        {"Name": "ffn", "LayerType": "MatrixMultiply", "Outputs": [{"Format/Datatype": "Row major linear FP32"}]},
        "a layer printed without details",
    ]}
    report = layer_report(info)
    assert report["layers_by_precision"] == {"INT8": 1, "FP16": 1, "FP32": 1}
    assert report["matmul_like_layers_not_int8"] == [{"name": "ffn", "type": "MatrixMultiply", "precision": "FP32"}]
    assert report["int8_gemms"] == 1


def split_schema(info: dict) -> dict:
    """The same report as TensorRT 11's inspector writes it: "Datatype" and "Format" apart."""
    def tensor(t):
        if not isinstance(t, dict) or "Format/Datatype" not in t:
            return t
        kind, _, layout = t["Format/Datatype"].partition(" ")
        return {**{k: v for k, v in t.items() if k != "Format/Datatype"}, "Datatype": kind, "Format": layout}
    return {"Layers": [layer if not isinstance(layer, dict) else
                       {**layer, **{k: [tensor(t) for t in layer[k]] for k in ("Inputs", "Outputs") if k in layer}}
                       for layer in info["Layers"]]}


def gemm(name: str, precision: str) -> dict:
    return {"Name": name, "LayerType": "MatrixMultiply", "Inputs": [{"Format/Datatype": precision}],
            "Outputs": [{"Format/Datatype": "Half"}]}


@pytest.mark.parametrize("schema", [lambda info: info, split_schema], ids=["tensorrt10", "tensorrt11"])
def test_the_int8_check_counts_int8_gemms_against_the_students_quantized_products(schema):
    from kdqat.runtime.trt_engine import gemm_verdict

    # 2 layers: 6 quantized Linears and 2 attention products each = 16, plus the float classifier
    good = {"Layers": [gemm(f"int8 {i}", "Int8 NC/32HW32") for i in range(16)] + [gemm("classifier", "Half")]}
    assert gemm_verdict(layer_report(schema(good)), quantized=16, float_allowed=1) == \
        "16 INT8 GEMMs (student: 16 quantized products), 1 float (its float head: 1)"
    lost = {"Layers": good["Layers"][:14] + [gemm("ffn 1", "Half"), gemm("ffn 2", "Half"), gemm("classifier", "Half")]}
    with pytest.raises(AssertionError, match=r"14 INT8 GEMMs for the student's 16 quantized matrix products"):
        gemm_verdict(layer_report(schema(lost)), quantized=16, float_allowed=1)
    extra = {"Layers": good["Layers"] + [gemm("stray", "Float")]}
    with pytest.raises(AssertionError, match=r"2 GEMMs outside INT8 where the student has 1 float Linear"):
        gemm_verdict(layer_report(schema(extra)), quantized=16, float_allowed=1)
    only_myelin = {"Layers": [{"Name": "{ForeignNode[all]}", "LayerType": "Myelin", "Inputs": [{"Format/Datatype": "Int64"}],
                               "Outputs": [{"Format/Datatype": "Half"}]}]}
    with pytest.raises(AssertionError, match="lists no GEMM, only 1 fused Myelin region"):
        gemm_verdict(layer_report(schema(only_myelin)), quantized=16, float_allowed=1)


@pytest.mark.parametrize("gpu, tensorrt, missing", [
    (False, False, "no CUDA GPU is visible .*; TensorRT is not installed"),
    (False, True, "no CUDA GPU is visible [^;]*\\. Use the GPU image"),
    (True, False, "needs a CUDA GPU and TensorRT: TensorRT is not installed"),
])
def test_without_tensorrt_or_gpu_the_error_names_each_missing_part(tmp_path, monkeypatch, gpu, tensorrt, missing):
    import sys
    import types

    import torch

    from kdqat.runtime.trt_engine import TrtEngine

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt") if tensorrt else None)
    with pytest.raises(KdqatError, match=missing):
        TrtEngine.open(tmp_path / "model.onnx")


@pytest.mark.gpu
def test_engine_matches_onnxruntime_on_gpu(tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (GPU image only)")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    import numpy as np
    from conftest import make_student_run

    from kdqat.export.pipeline import ExportOptions, export_student
    from kdqat import QuantConfig
    from kdqat.models import resolve_model
    from kdqat.runtime.ort_engine import OrtEngine
    from kdqat.layout import tensorrt_graph
    from kdqat.runtime.trt_engine import TrtEngine

    run = make_student_run(tmp_path / "run", resolve_model("default"), QuantConfig())
    export_student(ExportOptions(str(run), samples=8, progress=False))
    onnx_path = tensorrt_graph(run / "onnx" / "model.onnx")
    assert onnx_path.name == "model.fp16.onnx"
    engine = TrtEngine.open(onnx_path, ShapeProfile(1, 4, 8, 1, 32, 32))
    ids = np.random.default_rng(0).integers(1000, 20000, (4, 32))
    batch = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    # the same float16 graph on onnxruntime's CPU kernels: float16 rounding apart (export measured up to 0.23)
    np.testing.assert_allclose(engine.run(batch), OrtEngine(onnx_path, cpu_rewrites=False).run(batch), atol=0.25)
    assert engine.layers["layers_by_precision"].get("INT8", 0) > 0
    assert engine.layers["layers_by_precision"].get("FP16", 0) > 0  # the float parts run in half precision
    again = TrtEngine.open(onnx_path, ShapeProfile(1, 4, 8, 1, 32, 32))  # loaded from the saved plan
    np.testing.assert_array_equal(again.run(batch), engine.run(batch))


INSPECTOR = {"Layers": [
    {"Name": "qkv gemm", "LayerType": "gemm", "Inputs": [{"Name": "x", "Format/Datatype": "Int8 NC/32HW32"},
                                                       {"Name": "w", "Format/Datatype": "Int8"}],
     "Outputs": [{"Name": "y", "Format/Datatype": "Half format"}]},
    {"Name": "layernorm", "LayerType": "Normalization", "Inputs": [{"Format/Datatype": "BFloat16"}],
     "Outputs": [{"Format/Datatype": "BFloat16"}]},
    {"Name": "{ForeignNode[attention]}", "LayerType": "Myelin", "Inputs": [{"Format/Datatype": "Half"}],
     "Outputs": [{"Format/Datatype": "Half"}]},
    {"Name": "ffn", "LayerType": "MatrixMultiply", "Inputs": [{"Format/Datatype": "Row major linear FP32"}],
     "Outputs": [{"Format/Datatype": "Row major linear FP32"}]},
    {"Name": "gather ids", "LayerType": "Gather", "Inputs": [{"Format/Datatype": "Int64"}],
     "Outputs": [{"Format/Datatype": "Float"}]},
    {"Name": "constant", "LayerType": "Constant", "Inputs": [], "Outputs": [{"Format/Datatype": "Int8"}]},
    {"Name": "{ForeignNode[embeddings...encoder]}", "LayerType": "Myelin",
     "Inputs": [{"Name": "input_ids", "Format/Datatype": "Int64"}, {"Name": "attention_mask", "Format/Datatype": "Int64"}],
     "Outputs": [{"Name": "logits", "Format/Datatype": "Row major linear FP32"}]},
]}


def test_layer_precision_comes_from_the_inputs_as_the_engine_explorer_reads_it():
    report = layer_report(INSPECTOR)
    assert layer_report(split_schema(INSPECTOR))["layers_by_precision"] == {"INT8": 2, "BF16": 1, "FP16": 1, "FP32": 3}
    # the INT8 GEMM with a half output is INT8; BFloat16 is not FP32; a constant is read from its output; token
    # ids are not data: the gather reads as its FP32 output, the Myelin region fed by input_ids as FP32, not INT64
    assert report["layers_by_precision"] == {"INT8": 2, "BF16": 1, "FP16": 1, "FP32": 3}
    assert report["matmul_like_layers_not_int8"] == [{"name": "ffn", "type": "MatrixMultiply", "precision": "FP32"}]
    assert report["myelin_regions"] == [  # fused regions show their boundaries only: listed, never "broken"
        {"name": "{ForeignNode[attention]}", "inputs": ["FP16"], "outputs": ["FP16"]},
        {"name": "{ForeignNode[embeddings...encoder]}", "inputs": ["INT64", "INT64"], "outputs": ["FP32"]}]


def test_engine_io_dtypes_come_from_an_explicit_table():
    import enum

    from kdqat.runtime.trt_engine import torch_dtype

    DataType = enum.Enum("DataType", "FLOAT HALF BF16 INT8 INT32 INT64 BOOL FP8 INT4")
    assert [torch_dtype(DataType[n]) for n in ("FLOAT", "HALF", "BF16", "INT32", "INT64")] == \
        ["float32", "float16", "bfloat16", "int32", "int64"]
    with pytest.raises(KdqatError, match="engine I/O type FP8 has no buffer type"):
        torch_dtype(DataType.FP8)


def test_timing_cache_is_named_by_tensorrt_version_and_gpu(tmp_path):
    from kdqat.runtime.trt_engine import timing_cache_path

    path = timing_cache_path(tmp_path, "10.11.0.33", "NVIDIA H100 80GB HBM3")
    assert path == tmp_path / "timing-10.11.0.33-NVIDIA-H100-80GB-HBM3.cache"
    assert timing_cache_path(tmp_path, "10.13.3.9", "NVIDIA H100 80GB HBM3") != path


def test_onnxruntime_tensorrt_provider_builds_strongly_typed_with_profiles_and_caches(tmp_path):
    from kdqat.runtime.ort_engine import provider_options

    names = ["input_ids", "attention_mask", "token_type_ids"]
    options = provider_options("tensorrt", tmp_path, names, ShapeProfile(1, 8, 32, 1, 64, 128))
    # no precision flag: either one makes the provider build a weakly typed network (the graph's Q/DQ decide)
    assert not {"trt_int8_enable", "trt_fp16_enable", "trt_bf16_enable"} & set(options)
    assert options["trt_engine_cache_enable"] == "True" and options["trt_engine_cache_path"] == str(tmp_path)
    assert options["trt_profile_min_shapes"] == "input_ids:1x1,attention_mask:1x1,token_type_ids:1x1"
    assert options["trt_profile_opt_shapes"] == "input_ids:8x64,attention_mask:8x64,token_type_ids:8x64"
    assert options["trt_profile_max_shapes"] == "input_ids:32x128,attention_mask:32x128,token_type_ids:32x128"
    assert provider_options("cpu", tmp_path, names) == {} and provider_options("cuda", tmp_path, names) == {}


def test_gpu_check_reports_every_check_and_fails_without_a_gpu(exported_run, tmp_path):
    """`kdqat gpu-check` ends with one PASS/FAIL line per check and a non-zero status on any FAIL; here (no GPU, no
    TensorRT) every GPU check fails, each with its reason, and none stops the others."""
    from conftest import run_cli

    try:
        import tensorrt  # noqa: F401
        import torch

        if torch.cuda.is_available():
            pytest.skip("a GPU and TensorRT are here: the check would run for real")
    except ImportError:
        pass
    done = run_cli("gpu-check", exported_run, "--max-samples", "4", cwd=tmp_path, timeout=600)
    assert done.returncode == 1, done.stderr
    verdicts = [line for line in done.stdout.splitlines() if line.startswith(("PASS ", "FAIL "))]
    assert [v.split(":")[0] for v in verdicts] == [
        "FAIL 1. TensorRT INT8 engine from the Q/DQ graph with FP16 float parts", "FAIL 2. the saved plan loads in a new process",
        "FAIL 3. TensorRT vs the PyTorch student on validation rows", "FAIL 4. onnxruntime TensorRT provider",
        "FAIL 5. latency, INT8 against FP16"]
    assert "TensorRT" in verdicts[0] and "Traceback" not in done.stdout


def test_onnxruntime_tensorrt_cache_is_keyed_by_the_graphs_content(tmp_path):
    """The same structure with other weights (a re-export) must not reuse the engine the provider cached."""
    from kdqat.runtime.ort_engine import trt_cache_dir

    graph = tmp_path / "onnx" / "model.onnx"
    first, second = trt_cache_dir(graph, b"graph v1"), trt_cache_dir(graph, b"graph v2")
    assert first.parent == second.parent == tmp_path / "onnx" / "ort_trt_cache" and first != second
    assert trt_cache_dir(graph, b"graph v1") == first
    assert first.is_dir() and second.is_dir()  # made, both levels: the provider makes one level only, then fails


def test_engines_are_built_from_the_fp16_graph_where_export_wrote_one(tmp_path):
    """The FP16 form beside the deploy graph when it exists; an older export's (or your own) deploy graph else."""
    from kdqat.layout import fp16_graph, tensorrt_graph

    deploy = tmp_path / "model.onnx"
    deploy.write_bytes(b"")
    assert fp16_graph(deploy) == tmp_path / "model.fp16.onnx"
    assert tensorrt_graph(deploy) == deploy
    (tmp_path / "model.fp16.onnx").write_bytes(b"")
    assert tensorrt_graph(deploy) == tmp_path / "model.fp16.onnx"
    assert tensorrt_graph(deploy).with_suffix(".plan") == tmp_path / "model.fp16.plan"  # where its engine is saved



def test_onnxruntime_opens_the_fp16_graph_for_tensorrt_only(tmp_path, monkeypatch):
    """The TensorRT provider gets model.fp16.onnx; the CPU and CUDA providers keep the deploy graph."""
    from kdqat.runtime import ort_engine
    from kdqat.runtime.registry import StudentSource, open_engine

    opened = []
    monkeypatch.setattr(ort_engine, "OrtEngine", lambda path, provider, **_: opened.append((Path(path).name, provider)))
    deploy = tmp_path / "model.onnx"
    deploy.write_bytes(b"")
    (tmp_path / "model.fp16.onnx").write_bytes(b"")
    for provider in ("cpu", "cuda", "tensorrt"):
        open_engine("ort", StudentSource(tmp_path, deploy, provider))
    assert opened == [("model.onnx", "cpu"), ("model.onnx", "cuda"), ("model.fp16.onnx", "tensorrt")]


def test_the_gpu_checks_judge_each_objective_as_export_judges_its_fp16_graph():
    """Check 3 and 4's comparison: a classifier by its decided predictions (margin 0.5), a regression within 0.25,
    an embedding by every cosine (>= 0.99); each fails on what that objective cares about (before, an embedding run
    compared nothing and a regression's argmax of one column always agreed)."""
    from kdqat.eval.gpu_check import engine_parity
    from kdqat.objectives import get_objective

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(300, 32))
    assert engine_parity(get_objective("embedding"), vectors, vectors + 1e-3, "x").startswith("x: examples 300, min_cosine")
    bent = vectors.copy()
    bent[7] = -bent[7]  # one text's vector turned around
    with pytest.raises(AssertionError, match="x: an embedding's cosine similarity to the PyTorch student's is -1.0000"):
        engine_parity(get_objective("embedding"), vectors, bent, "x")
    scores = rng.uniform(0, 5, size=(300, 1))
    engine_parity(get_objective("regression"), scores, scores + 0.2, "x")  # float16 rounding: within 0.25
    with pytest.raises(AssertionError, match=r"agree on only 0.0%"):
        engine_parity(get_objective("regression"), scores, scores + 0.3, "x")
    logits = rng.normal(size=(300, 3)) * 3
    engine_parity(get_objective("classification"), logits, logits + 0.2, "x")
    flipped = logits.copy()
    flipped[:, [0, 1]] = flipped[:, [1, 0]]  # every prediction between the first two classes swaps
    with pytest.raises(AssertionError, match="x: predictions agree on only"):
        engine_parity(get_objective("classification"), logits, flipped, "x")


def test_the_gpu_check_counts_the_students_quantized_products_and_reads_real_rows(exported_run, glue_dir):
    from kdqat.eval.gpu_check import student_products, validation_batch
    from kdqat.run_dir import open_run
    from kdqat.runtime.torch_engine import TorchEngine

    run = open_run(exported_run)
    student = TorchEngine.student(run.student).model
    layers = student.config.num_hidden_layers
    assert student_products(student) == (6 * layers + 1 + 2 * layers, 1)  # 6 Linears a layer, the pooler; the classifier
    batch = validation_batch(run, str(glue_dir), 40)
    assert batch["input_ids"].shape == (40, run.max_seq_length)
    assert (batch["attention_mask"].sum(1) > 2).all()  # real sentence pairs, not padding


def test_kdqat_eval_judges_an_engine_with_float16_parts_by_the_fp16_margins(exported_run, glue_dir, monkeypatch):
    """TensorRT runs model.fp16.onnx: its agreement with PyTorch is judged with export's FP16 margin (0.5), not the
    float32 one, which float16 rounding alone would fail (an onnxruntime engine marked as such stands in here)."""
    import kdqat.eval.evaluate as evaluate
    from kdqat.eval.options import EvalOptions
    from kdqat.parity import FP16_DECIDED_MARGIN

    real = evaluate.open_engine

    def marked(name, source):
        engine = real(name, source)
        if name == "ort":
            engine.float16_parts = True
        return engine

    monkeypatch.setattr(evaluate, "open_engine", marked)
    result = evaluate.evaluate_run(EvalOptions(str(exported_run), "ort", data_dir=str(glue_dir), max_samples=16,
                                               progress=False))
    (split,) = result["splits"].values()
    assert split["agreement"]["margin"] == FP16_DECIDED_MARGIN
