"""Export: the Q/DQ stand-ins, the deploy / packed graphs' structure, parity, sizes and the error paths."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from conftest import batch, make_student_run
from onnx import TensorProto, numpy_helper

from kdqat.export.onnx_graph import to_onnx
from kdqat.export.pipeline import ExportOptions, export_student
from kdqat.layout import DEPLOY, FLOAT, FP16, PACKED
from kdqat.layout import EXPORT_REPORT as REPORT
from kdqat.export.qdq_modules import to_qdq
from kdqat import KdqatError, QuantConfig, load_student
from kdqat.student import act_quantizers

@pytest.fixture(scope="module")
def student_run(exported_run):
    return exported_run


@pytest.fixture(scope="module")
def exported(exported_run):
    """The export folder and its report (exported without data known: the parity sample is random token ids)."""
    return exported_run / "onnx", json.loads((exported_run / "onnx" / REPORT).read_text())


def _initializer(model, name):
    return next((t for t in model.graph.initializer if t.name == name), None)


def _producer(model):
    return {o: n for n in model.graph.node for o in n.output}


def test_standins_are_bit_identical_to_the_student(student_run):
    student = load_student(student_run / "student")
    ids, mask = batch(batch_size=3, length=12, vocab=student.config.vocab_size)
    with torch.no_grad():
        expected = student(input_ids=ids, attention_mask=mask).logits
        got = to_qdq(student)(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(got, expected)


def test_deploy_graph_quantizes_every_matmul_input(exported, student_run):
    model = onnx.load(exported[0] / DEPLOY)
    producer = _producer(model)
    matmuls = [n for n in model.graph.node if n.op_type == "MatMul"]
    assert len(matmuls) == 2 * (6 + 2) + 1  # per layer 6 linears + 2 attention products; the pooler
    for node in matmuls:
        assert [producer[i].op_type for i in node.input] == ["DequantizeLinear", "DequantizeLinear"], node.name
    quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert len(quantize) == len(act_quantizers(load_student(student_run / "student")))
    for node in quantize:
        zero = producer[node.input[2]].attribute[0].t
        assert zero.data_type == TensorProto.INT8 and numpy_helper.to_array(zero) == 0  # symmetric, for TensorRT
        scale = numpy_helper.to_array(producer[node.input[1]].attribute[0].t)
        assert scale.shape == () and scale > 0  # per tensor


def test_weights_are_ternary_codes_with_their_scales(exported):
    model = onnx.load(exported[0] / DEPLOY)
    weight_dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and _initializer(model, n.input[0])]
    assert len(weight_dq) == 2 * 6 + 1 + 1  # linears, pooler, word embeddings
    for node in weight_dq:
        codes = numpy_helper.to_array(_initializer(model, node.input[0]))
        assert codes.dtype == np.int8 and set(np.unique(codes)) <= {-1, 0, 1}
        assert len(node.input) == 2  # no zero point: 0
    embedding = next(n for n in weight_dq if "word_embeddings" in n.input[0])
    assert next(a.i for a in embedding.attribute if a.name == "axis") == 0
    scale = numpy_helper.to_array(_initializer(model, embedding.input[1]))
    assert scale.shape == (numpy_helper.to_array(_initializer(model, embedding.input[0])).shape[0],)  # per row
    assert _producer(model)[next(n for n in model.graph.node if n.op_type == "Gather" and n.input[0] == embedding.output[0]).input[0]] is embedding
    float_weights = [t.name for t in model.graph.initializer if t.data_type == TensorProto.FLOAT and len(t.dims) == 2]
    assert all("position" in n or "token_type" in n or "classifier" in n for n in float_weights), float_weights


def test_packed_graph_holds_int2_weights_and_runs(exported):
    folder = exported[0]
    packed = onnx.load(folder / PACKED)
    assert packed.ir_version == 13 and packed.opset_import[0].version == 25
    codes = [t for t in packed.graph.initializer if t.data_type == TensorProto.INT2]
    assert len(codes) == 2 * 6 + 2
    for t in codes:
        assert len(t.raw_data) == (int(np.prod(t.dims)) + 3) // 4  # four values per byte
    ids, mask = batch(batch_size=2, length=10, vocab=1000)
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": np.zeros_like(ids.numpy())}
    deploy_out = onnxruntime.InferenceSession(str(folder / DEPLOY)).run(None, feeds)[0]
    packed_out = onnxruntime.InferenceSession(str(folder / PACKED)).run(None, feeds)[0]
    np.testing.assert_allclose(packed_out, deploy_out, atol=1e-5)


def test_export_report_records_sizes_and_parity(exported):
    folder, report = exported
    assert json.loads((folder / REPORT).read_text()) == report
    for name in (DEPLOY, FP16, PACKED, FLOAT, "tokenizer.json"):
        assert (folder / name).is_file()
    sizes = report["sizes"]
    assert report["graphs"]["packed"]["bytes"] < report["graphs"]["deploy"]["bytes"] < report["graphs"]["float"]["bytes"]
    assert sizes["packed_over_ideal"] < 1.05
    assert report["parity"]["inputs"].startswith("random token ids")
    for check in ("ort_deploy_vs_torch", "ort_packed_vs_torch", "onnx_reference_vs_torch"):
        assert report["parity"][check]["agreement"] >= 0.99
        assert report["parity"][check]["max_abs_diff"] < 0.05
    for graph in report["graphs"].values():
        onnx.checker.check_model(onnx.load(folder / graph["file"]), full_check=True)


def test_four_bit_student_packs_int4(tmp_path, tiny_model_dir):
    run = make_student_run(tmp_path / "run", tiny_model_dir, QuantConfig.for_bits(4, 8))
    report = export_student(ExportOptions(str(run), samples=16, progress=False))
    packed = onnx.load(run / "onnx" / PACKED)
    assert {t.data_type for t in packed.graph.initializer if "codes" in t.name} == {TensorProto.INT4}
    deploy = onnx.load(run / "onnx" / DEPLOY)
    codes = numpy_helper.to_array(next(t for t in deploy.graph.initializer if t.name.endswith("query.codes")))
    assert codes.dtype == np.int8 and codes.min() >= -7 and codes.max() <= 7 and len(np.unique(codes)) > 3
    assert report["parity"]["ort_deploy_vs_torch"]["agreement"] >= 0.99


def test_per_channel_student_exports_per_axis_weights_with_parity(tmp_path, tiny_model_dir, exported):
    """One scale per output channel: DequantizeLinear axis 1 on the [in, out] codes, TensorRT-clean, the
    packed size still reported, onnxruntime (with its CPU rewrites) and PyTorch agreeing."""
    from kdqat.runtime.ort_passes import onnxruntime_cpu
    from kdqat.export.trt_check import check_trt

    run = make_student_run(tmp_path / "run", tiny_model_dir, QuantConfig(weight_scale="channel"))
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("GLUE_DIR", raising=False)
        report = export_student(ExportOptions(str(run), samples=64, progress=False))
    deploy = onnx.load(run / "onnx" / DEPLOY)
    query = next(n for n in deploy.graph.node if n.op_type == "DequantizeLinear" and n.input[0].endswith("query.codes"))
    codes = numpy_helper.to_array(_initializer(deploy, query.input[0]))
    scale = numpy_helper.to_array(_initializer(deploy, query.input[1]))
    assert next(a.i for a in query.attribute if a.name == "axis") == 1 and scale.shape == (codes.shape[1],)
    assert len(np.unique(scale)) == codes.shape[1]  # really one scale per channel
    assert check_trt(deploy) == []
    for check in ("ort_deploy_vs_torch", "ort_packed_vs_torch", "onnx_reference_vs_torch"):
        assert report["parity"][check]["agreement"] >= 0.99, check
    assert report["sizes"]["packed_over_ideal"] < 1.05
    def fused(graph):
        return sum(n.op_type == "MatMulIntegerToFloat" for n in onnxruntime_cpu(graph).graph.node)

    assert fused(deploy) == fused(onnx.load(exported[0] / DEPLOY)) > 0  # per-column weight scales fuse as well


def test_exports_from_dev_data_and_the_onnxruntime_cpu_form(tmp_path, tiny_model_dir, glue_dir):
    from kdqat.layout import ORT_CPU

    run = make_student_run(tmp_path / "run", tiny_model_dir, QuantConfig())
    report = export_student(ExportOptions(str(run), data_dir=str(glue_dir), samples=24, progress=False, ort_cpu_graph=True))
    assert report["parity"]["inputs"] == "rte dev (24 examples)"
    # the tiny model's logits sit within the decided margin of each other (decided 0): compare the numbers themselves
    cpu_form = report["parity"]["ort_cpu_graph_vs_torch"]
    assert cpu_form["examples"] == 24 and cpu_form["agreement"] == 1.0 and cpu_form["max_abs_diff"] < 1e-5
    ops = {n.op_type for n in onnx.load(run / "onnx" / ORT_CPU).graph.node}
    assert "QuantizeLinear" in ops
    zero_points = [t for t in onnx.load(run / "onnx" / ORT_CPU).graph.initializer if t.data_type == TensorProto.UINT8]
    assert zero_points and all(numpy_helper.to_array(t) == 128 for t in zero_points)


@pytest.mark.parametrize("problem, message", [
    ("dynamic", "dynamic activation scales"),
    ("uncalibrated", "has no learned scale"),
    ("not_a_run", "not a kdqat run"),
    ("corrupt", "not valid JSON"),
    ("missing", "no such folder"),
])
def test_bad_students_are_refused_and_nothing_is_written(tmp_path, tiny_model_dir, problem, message):
    run = tmp_path / "run"
    if problem == "dynamic":
        make_student_run(run, tiny_model_dir, QuantConfig(act_scale="dynamic"))
    elif problem == "uncalibrated":
        make_student_run(run, tiny_model_dir, QuantConfig(), calibrate=False)
    elif problem == "not_a_run":
        (run / "student").mkdir(parents=True)
        (run / "student" / "config.json").write_text("{}")
    elif problem == "corrupt":
        make_student_run(run, tiny_model_dir, QuantConfig())
        (run / "student" / "quant_config.json").write_text("{ not json")
    with pytest.raises(KdqatError, match=message):
        export_student(ExportOptions(str(run), samples=8, progress=False))
    assert not (run / "onnx").exists()
    assert not list(tmp_path.glob("**/.onnx.*"))  # no temporary folder left behind


def test_float_model_exports_without_quantization(tiny_model_dir):
    from transformers import BertForSequenceClassification

    model = to_onnx(BertForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2))
    ops = {n.op_type for n in model.graph.node}
    assert "QuantizeLinear" not in ops and "DequantizeLinear" not in ops and "MatMul" in ops


def test_onnxruntime_cpu_rewrites_keep_the_predictions(exported):
    from kdqat.runtime.ort_engine import OrtEngine

    ids, mask = batch(batch_size=4, length=16, vocab=1000)
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": np.zeros_like(ids.numpy())}
    plain = OrtEngine(exported[0] / DEPLOY, cpu_rewrites=False).run(feeds)
    fast = OrtEngine(exported[0] / DEPLOY).run(feeds)
    np.testing.assert_array_equal(plain.argmax(-1), fast.argmax(-1))
    np.testing.assert_allclose(fast, plain, atol=0.05)  # integer kernels vs float Q/DQ arithmetic


def test_parity_counts_flips_and_separates_near_ties():
    from kdqat.parity import compare

    reference = np.array([[1.0, 0.98], [2.0, 0.0], [0.0, 1.0]])  # the first is a near tie (margin 0.02)
    candidate = np.array([[0.97, 0.99], [2.0, 0.1], [0.0, 1.0]])
    p = compare(reference, candidate, regression=False)
    assert (p.examples, p.decided) == (3, 2)
    assert p.agreement == pytest.approx(2 / 3) and p.decided_agreement == 1.0
    assert p.max_abs_diff == pytest.approx(0.1)
    flipped = compare(reference, candidate[[0, 2, 1]], regression=False)  # both decided examples flip
    assert flipped.decided_agreement == 0.0 and flipped.agreement == 0.0
    scores = compare(np.array([[1.0], [3.0]]), np.array([[1.09], [3.2]]), regression=True)
    assert scores.agreement == 0.5 and scores.decided == 2  # within 0.1 counts as agreeing


def test_the_tensorrt_graph_is_the_deploy_graph_with_float16_float_parts(exported):
    """model.fp16.onnx: the same nodes and integer codes as the deploy graph, every float tensor float16 but the
    logits; TensorRT's rules hold; its parity is measured with float16's own margin and recorded."""
    from kdqat.parity import FP16_DECIDED_MARGIN
    from kdqat.layout import tensorrt_graph

    folder, report = exported
    deploy, half = onnx.load(folder / DEPLOY), onnx.load(folder / FP16)
    ops = Counter(n.op_type for n in half.graph.node)
    assert ops - Counter(n.op_type for n in deploy.graph.node) == Counter({"Cast": 1})  # one more: the logits' to float32
    assert not Counter(n.op_type for n in deploy.graph.node) - ops
    codes = {t.name: numpy_helper.to_array(t) for t in deploy.graph.initializer if t.data_type == TensorProto.INT8}
    assert codes and all(np.array_equal(numpy_helper.to_array(t), codes[t.name])
                         for t in half.graph.initializer if t.name in codes)
    assert not [t.name for t in half.graph.initializer if t.data_type == TensorProto.FLOAT]
    assert half.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert report["graphs"]["fp16"]["file"] == FP16 and "fp16" in report["tensorrt_rules"]
    parity = report["parity"]["ort_fp16_vs_torch"]
    assert parity["margin"] == FP16_DECIDED_MARGIN and parity["agreement"] == 1.0
    assert 0 < parity["max_abs_diff"] < 1e-2  # float16 rounding (1e-4 measured), not float32's nor a broken graph's
    assert report["parity"]["ort_deploy_vs_torch"]["margin"] == 0.05
    assert tensorrt_graph(folder / DEPLOY) == folder / FP16  # what kdqat's TensorRT engines are built from
