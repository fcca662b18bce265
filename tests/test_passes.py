"""Graph passes, each on a small hand-built graph."""

from __future__ import annotations

import numpy as np
import onnxruntime
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from kdqat.export.passes import compact_names, pack_weights
from kdqat.runtime.ort_passes import activations_to_uint8
from kdqat import KdqatError



def weight_graph(codes: np.ndarray) -> onnx.ModelProto:
    """y = x @ DequantizeLinear(codes, 0.5)."""
    k, n = codes.shape
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["w", "s"], ["wf"]), helper.make_node("MatMul", ["x", "wf"], ["y"])],
        "w", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
        [numpy_helper.from_array(codes.astype(np.int8), "w"), numpy_helper.from_array(np.array(0.5, np.float32), "s")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)


def activation_graph() -> onnx.ModelProto:
    """y = DequantizeLinear(QuantizeLinear(x, 0.1, int8 0), 0.1, int8 0)."""
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]), helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])],
        "a", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])],
        [numpy_helper.from_array(np.array(0.1, np.float32), "s"), numpy_helper.from_array(np.array(0, np.int8), "z")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)


def test_int2_packing_matches_a_hand_packed_byte():
    # four values per byte, least significant first, two's complement: [-1, 0, 1, 1] ->
    # 0b11 | 0b00 << 2 | 0b01 << 4 | 0b01 << 6 = 0x53; [-1, 1] (padded with 0) -> 0b11 | 0b01 << 2 = 0x07
    packed = pack_weights(weight_graph(np.array([[-1, 0, 1], [1, -1, 1]])), 2)
    w = packed.graph.initializer[0]
    assert w.data_type == TensorProto.INT2 and list(w.dims) == [2, 3]
    assert w.raw_data == bytes([0x53, 0x07])
    assert packed.ir_version == 13 and packed.opset_import[0].version == 25


def test_packed_graph_computes_the_same_as_int8_codes():
    codes = np.random.default_rng(0).integers(-1, 2, (16, 8))
    x = np.random.default_rng(1).standard_normal((1, 16)).astype(np.float32)
    plain = onnxruntime.SessionOptions()
    plain.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL  # the ops as specified

    def run(model):
        return onnxruntime.InferenceSession(model.SerializeToString(), plain).run(None, {"x": x})[0]

    int8, int2 = run(weight_graph(codes)), run(pack_weights(weight_graph(codes), 2))
    np.testing.assert_array_equal(int2, int8)
    np.testing.assert_allclose(int8, x @ (codes * 0.5), rtol=1e-5, atol=1e-6)


def test_packing_refuses_codes_that_do_not_fit():
    with pytest.raises(KdqatError, match=r"codes in \[-3, 1\] do not fit 2 bits"):
        pack_weights(weight_graph(np.array([[-3, 1]])), 2)
    with pytest.raises(KdqatError, match="cannot pack 3-bit"):
        pack_weights(weight_graph(np.array([[1]])), 3)


def test_uint8_activations_are_bit_identical():
    model = activation_graph()
    rewritten = activations_to_uint8(model)
    zero = numpy_helper.to_array(next(t for t in rewritten.graph.initializer if t.name == rewritten.graph.node[0].input[2]))
    assert zero.dtype == np.uint8 and zero == 128
    assert rewritten.graph.node[1].input[2] == rewritten.graph.node[0].input[2]
    x = np.concatenate([np.linspace(-14, 14, 2001), [-12.8, -12.85, 12.7, 12.75]]).astype(np.float32)
    a = onnxruntime.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    b = onnxruntime.InferenceSession(rewritten.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_array_equal(a, b)
    assert a.min() == np.float32(-12.8) and a.max() == np.float32(12.7)  # int8 saturates at -128 / 127


def test_compact_names_keeps_inputs_outputs_and_initializers():
    model = compact_names(weight_graph(np.array([[1, 0], [0, -1]])))
    assert [n.output[0] for n in model.graph.node] == ["v0", "y"]
    assert list(model.graph.node[1].input) == ["x", "v0"]
    onnx.checker.check_model(model, full_check=True)


def test_gather_before_dequantize_gives_the_same_rows():
    rng = np.random.default_rng(0)
    codes, scale = rng.integers(-1, 2, (50, 6)).astype(np.int8), rng.random(50).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["codes", "scale"], ["table"], axis=0),
         helper.make_node("Gather", ["table", "ids"], ["rows"])],
        "e", [helper.make_tensor_value_info("ids", TensorProto.INT64, [None, None])],
        [helper.make_tensor_value_info("rows", TensorProto.FLOAT, [None, None, 6])],
        [numpy_helper.from_array(codes, "codes"), numpy_helper.from_array(scale, "scale")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)
    from kdqat.runtime.ort_passes import gather_before_dequantize

    rewritten = gather_before_dequantize(model)
    assert "DequantizeLinear" not in {n.op_type for n in rewritten.graph.node}
    onnx.checker.check_model(rewritten, full_check=True)
    ids = rng.integers(0, 50, (3, 7))
    a = onnxruntime.InferenceSession(model.SerializeToString()).run(None, {"ids": ids})[0]
    b = onnxruntime.InferenceSession(rewritten.SerializeToString()).run(None, {"ids": ids})[0]
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(b, codes[ids] * scale[ids][..., None])


def test_fold_score_scale_moves_the_constant_into_k_dequantization():
    from kdqat.runtime.ort_passes import fold_score_scale

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["q", "sq", "zp"], ["q8"]),
         helper.make_node("DequantizeLinear", ["q8", "sq", "zp"], ["qd"]),
         helper.make_node("QuantizeLinear", ["k", "sk", "zp"], ["k8"]),
         helper.make_node("DequantizeLinear", ["k8", "sk", "zp"], ["kd"]),
         helper.make_node("MatMul", ["qd", "kd"], ["raw"]),
         helper.make_node("Mul", ["raw", "c"], ["scores"]),
         helper.make_node("Softmax", ["scores"], ["probs"])],
        "s", [helper.make_tensor_value_info("q", TensorProto.FLOAT, [2, 5, 8]),
              helper.make_tensor_value_info("k", TensorProto.FLOAT, [2, 8, 5])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [2, 5, 5])],
        [numpy_helper.from_array(np.array(0.02, np.float32), "sq"), numpy_helper.from_array(np.array(0.03, np.float32), "sk"),
         numpy_helper.from_array(np.array(0, np.int8), "zp"), numpy_helper.from_array(np.array(0.125, np.float32), "c")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)
    folded = fold_score_scale(model)
    onnx.checker.check_model(folded, full_check=True)
    assert [n.op_type for n in folded.graph.node].count("Mul") == 0
    dq_k = next(n for n in folded.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == "k8")
    assert numpy_helper.to_array(next(t for t in folded.graph.initializer if t.name == dq_k.input[1])) == np.float32(0.03 * 0.125)
    q_k = next(n for n in folded.graph.node if n.op_type == "QuantizeLinear" and n.output[0] == "k8")
    assert q_k.input[1] == "sk"  # the quantization itself keeps the learned scale
    feeds = {"q": rng.normal(size=(2, 5, 8)).astype(np.float32), "k": rng.normal(size=(2, 8, 5)).astype(np.float32)}
    a = onnxruntime.InferenceSession(model.SerializeToString()).run(None, feeds)[0]
    b = onnxruntime.InferenceSession(folded.SerializeToString()).run(None, feeds)[0]
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    # a Mul whose MatMul is not fed by two DequantizeLinears is left alone
    plain = helper.make_model(helper.make_graph(
        [helper.make_node("MatMul", ["q", "k"], ["raw"]), helper.make_node("Mul", ["raw", "c"], ["scores"])], "p",
        [helper.make_tensor_value_info("q", TensorProto.FLOAT, [2, 5, 8]), helper.make_tensor_value_info("k", TensorProto.FLOAT, [2, 8, 5])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [2, 5, 5])],
        [numpy_helper.from_array(np.array(0.125, np.float32), "c")]), opset_imports=[helper.make_opsetid("", 19)], ir_version=9)
    assert [n.op_type for n in fold_score_scale(plain).graph.node] == ["MatMul", "Mul"]


def test_fuse_linear_bias_gives_one_integer_matmul_with_the_same_output():
    from kdqat.runtime.ort_passes import activations_to_uint8, fuse_linear_bias

    rng = np.random.default_rng(1)
    codes = rng.integers(-1, 2, (8, 6)).astype(np.int8)
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "sx", "zp"], ["xq"]),
         helper.make_node("DequantizeLinear", ["xq", "sx", "zp"], ["xd"]),
         helper.make_node("DequantizeLinear", ["codes", "sw"], ["w"]),
         helper.make_node("MatMul", ["xd", "w"], ["xw"]),
         helper.make_node("Add", ["xw", "bias"], ["y"])],
        "l", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4, 6])],
        [numpy_helper.from_array(np.array(0.02, np.float32), "sx"), numpy_helper.from_array(np.array(0, np.int8), "zp"),
         numpy_helper.from_array(codes, "codes"), numpy_helper.from_array(np.array(0.7, np.float32), "sw"),
         numpy_helper.from_array(rng.normal(size=6).astype(np.float32), "bias")])
    model = activations_to_uint8(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9))
    fused = fuse_linear_bias(model)
    assert [n.op_type for n in fused.graph.node] == ["QuantizeLinear", "MatMulIntegerToFloat"]
    assert fused.graph.node[1].domain == "com.microsoft" and fused.graph.node[1].input[1] == "codes"
    x = {"x": rng.normal(scale=1.5, size=(3, 4, 8)).astype(np.float32)}
    a = onnxruntime.InferenceSession(model.SerializeToString()).run(None, x)[0]
    b = onnxruntime.InferenceSession(fused.SerializeToString()).run(None, x)[0]
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_static_reshapes_turn_computed_head_shapes_into_constants():
    """x [batch, seq, 8] -> [batch, seq, 2, 4] with the shape computed from x's own Shape, as the exporter writes
    the attention's head split: after the pass the shape is the constant [0, 0, 2, 4] and its chain is gone."""
    from kdqat.runtime.ort_passes import static_reshapes

    nodes = [helper.make_node("Shape", ["x"], ["shape"])]
    for i in (0, 1):
        nodes += [helper.make_node("Gather", ["shape", f"i{i}"], [f"d{i}"], axis=0),
                  helper.make_node("Unsqueeze", [f"d{i}", "axes"], [f"u{i}"])]
    nodes += [helper.make_node("Concat", ["u0", "u1", "heads"], ["target"], axis=0),
              helper.make_node("Reshape", ["x", "target"], ["y"])]
    graph = helper.make_graph(
        nodes, "s", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 2, 4])],
        [numpy_helper.from_array(np.array(0, np.int64), "i0"), numpy_helper.from_array(np.array(1, np.int64), "i1"),
         numpy_helper.from_array(np.array([0], np.int64), "axes"), numpy_helper.from_array(np.array([2, 4], np.int64), "heads")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)
    static = static_reshapes(model)
    assert [n.op_type for n in static.graph.node] == ["Reshape"]
    shape = next(t for t in static.graph.initializer if t.name == static.graph.node[0].input[1])
    assert numpy_helper.to_array(shape).tolist() == [0, 0, 2, 4]
    x = {"x": np.arange(3 * 7 * 8, dtype=np.float32).reshape(3, 7, 8)}
    np.testing.assert_array_equal(onnxruntime.InferenceSession(static.SerializeToString()).run(None, x)[0],
                                  x["x"].reshape(3, 7, 2, 4))


def quantized_matmul_graph(scale: float = 0.1) -> onnx.ModelProto:
    """y = LayerNorm(DQ(Q(x)) @ DQ(w)) + 1: float work around one quantized product, as in the student."""
    k = 8
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "ws"], ["wd"]),
             helper.make_node("MatMul", ["xd", "wd"], ["m"]),
             helper.make_node("LayerNormalization", ["m", "g", "b"], ["n"], axis=-1),
             helper.make_node("Add", ["n", "one"], ["y"])]
    inits = [numpy_helper.from_array(np.array(scale, np.float32), "s"), numpy_helper.from_array(np.array(0, np.int8), "z"),
             numpy_helper.from_array(rng.integers(-1, 2, (k, k)).astype(np.int8), "w"),
             numpy_helper.from_array(np.array(0.05, np.float32), "ws"),
             numpy_helper.from_array(np.ones(k, np.float32), "g"), numpy_helper.from_array(np.zeros(k, np.float32), "b"),
             numpy_helper.from_array(np.array(1.0, np.float32), "one")]
    graph = helper.make_graph(nodes, "f", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, k])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)


def _types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type
             for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)}
    return types | {t.name: t.data_type for t in inferred.graph.initializer}


def test_float16_float_parts_keeps_io_and_integer_codes_and_runs():
    from kdqat.export.passes import float16_float_parts
    from kdqat.export.trt_check import check_trt

    model = quantized_matmul_graph()
    half = float16_float_parts(model)
    onnx.checker.check_model(half, full_check=True)
    types = _types(half)
    assert types["x"] == types["y"] == TensorProto.FLOAT  # graph inputs and outputs keep their type
    assert types["w"] == types["z"] == TensorProto.INT8  # codes and zero points are untouched
    for name in ("s", "ws", "g", "b", "one", "wd", "m", "n"):  # scales, constants, activations: float16
        assert types[name] == TensorProto.FLOAT16, name
    q = next(n for n in half.graph.node if n.op_type == "QuantizeLinear")
    assert types[q.input[0]] == TensorProto.FLOAT16  # the quantized activation itself is float16, not cast back
    assert check_trt(half) == []
    assert _types(model)["m"] == TensorProto.FLOAT  # the input graph is left as it was
    x = np.random.default_rng(1).normal(size=(3, 8)).astype(np.float32)
    full = onnxruntime.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    got = onnxruntime.InferenceSession(half.SerializeToString()).run(None, {"x": x})[0]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, full, atol=2e-2)  # float16 rounding of a LayerNorm output of unit size


def test_float16_refuses_a_scale_it_cannot_hold():
    from kdqat.export.passes import float16_float_parts

    with pytest.raises(KdqatError, match=r"QuantizeLinear q: scale in \[1e-06, 1e-06\] is outside float16's normal range"):
        float16_float_parts(quantized_matmul_graph(scale=1e-6))
