"""The TensorRT rule check: clean on the exported deploy graph, and each rule caught when broken on purpose."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from kdqat.export.passes import pack_weights
from kdqat.runtime.ort_passes import activations_to_uint8
from kdqat.layout import DEPLOY, PACKED
from kdqat.export.trt_check import check_trt


@pytest.fixture(scope="module")
def deploy(exported_run):
    return onnx.load(exported_run / "onnx" / DEPLOY), onnx.load(exported_run / "onnx" / PACKED)


def copy(model):
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def first(model, op):
    return next(n for n in model.graph.node if n.op_type == op)


def constant_node(model, name):
    return next(n for n in model.graph.node if n.op_type == "Constant" and n.output[0] == name)


def rules(model):
    return {v.rule for v in check_trt(model)}


def test_the_exported_deploy_graph_is_clean(deploy):
    assert check_trt(deploy[0]) == []


def test_nonzero_zero_point_is_caught(deploy):
    model = copy(deploy[0])
    q = first(model, "QuantizeLinear")
    constant_node(model, q.input[2]).attribute[0].t.CopyFrom(numpy_helper.from_array(np.array(3, np.int8)))
    found = check_trt(model)
    assert {v.rule for v in found} == {"zero-point"} and q.name in {v.node for v in found}


def test_a_scale_that_is_not_positive_is_caught(deploy):
    model = copy(deploy[0])
    dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and "embeddings" in n.name)
    scales = next(t for t in model.graph.initializer if t.name == dq.input[1])
    values = numpy_helper.to_array(scales).copy()
    assert values.min() > 0  # the export's own: an all-zero embedding row (the padding row) gets scale 1, not 0
    values[0] = 0.0
    scales.CopyFrom(numpy_helper.from_array(values, scales.name))
    found = check_trt(model)
    assert [(v.rule, v.node) for v in found] == [("scale", dq.name)] and "scale 0 is not positive" in found[0].message


def test_uint8_activations_are_caught(deploy):
    assert rules(activations_to_uint8(deploy[0])) == {"zero-point", "dtype"}


def test_per_channel_activation_scale_is_caught(deploy):
    model = copy(deploy[0])
    q = first(model, "QuantizeLinear")
    constant_node(model, q.input[1]).attribute[0].t.CopyFrom(numpy_helper.from_array(np.full(32, 0.01, np.float32)))
    q.attribute.append(helper.make_attribute("axis", -1))
    assert "act-scale" in rules(model)


def test_int2_weights_are_caught(deploy):
    found = check_trt(deploy[1])
    assert {v.rule for v in found} == {"dtype"} and all("INT2" in v.message for v in found)


def test_int4_weights_with_quantized_activations_are_caught(deploy):
    model = pack_weights(deploy[0], 4)
    assert "int4-weights" in rules(model)


def test_half_quantized_matmul_is_caught(deploy):
    model = copy(deploy[0])
    matmul = first(model, "MatMul")
    dq = next(n for n in model.graph.node if n.output[0] == matmul.input[0])
    q = next(n for n in model.graph.node if n.output[0] == dq.input[0])
    matmul.input[0] = q.input[0]  # bypass the activation's Q/DQ
    found = [v for v in check_trt(model) if v.rule == "both-inputs"]
    assert [v.node for v in found] == [matmul.name] and "first is float" in found[0].message


def test_check_command_exit_codes(tmp_path, deploy):
    from conftest import run_cli

    onnx.save(deploy[0], tmp_path / "ok.onnx")
    onnx.save(deploy[1], tmp_path / "packed.onnx")

    def run(*args):
        return run_cli("check", *args, cwd=tmp_path)

    assert run("ok.onnx", "--target", "trt").returncode == 0
    done = run("packed.onnx")
    assert done.returncode == 1 and "dtype" in done.stdout and "INT2" in done.stdout
    done = run("missing.onnx")
    assert done.returncode == 2 and done.stderr.strip() == "error: missing.onnx: no such ONNX file"
