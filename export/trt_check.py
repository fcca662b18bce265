"""Does a Q/DQ graph obey TensorRT's explicit-quantization rules? Checked on the CPU, no TensorRT needed.

Rules (REFERENCE.md section 2, TensorRT 10.x/11.x):
  zero-point   Q/DQ are symmetric: zero point absent or 0
  act-scale    a Q/DQ on an activation (not a constant) has one scale for the tensor
  scale        every scale is positive (TensorRT's ONNX parser refuses a zero or negative one)
  dtype        DequantizeLinear inputs are INT8, FP8, INT4 or FP4: no INT2, no UINT8
  int4-weights INT4 only as weight-only quantization: the other input of its MatMul/Gemm is not quantized
  both-inputs  a MatMul/Gemm with a DequantizeLinear on one input has one on the other (a half-quantized
               product runs in float, and the INT8 fusion TensorRT is asked for never happens)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

QDQ = ("QuantizeLinear", "DequantizeLinear")
PRODUCTS = ("MatMul", "Gemm")
TRT_DQ_TYPES = {onnx.TensorProto.INT8, onnx.TensorProto.FLOAT8E4M3FN, onnx.TensorProto.FLOAT8E5M2, onnx.TensorProto.INT4,
                  onnx.TensorProto.FLOAT4E2M1}


@dataclass(frozen=True)
class Violation:
    rule: str
    node: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.node}: {self.message}"


def _const(t) -> np.ndarray | None:
    """The value of a constant tensor (initializer or Constant node output), else None."""
    if isinstance(t, gs.Constant):
        return np.asarray(t.values)
    if t.inputs and t.inputs[0].op == "Constant":
        return np.asarray(t.inputs[0].attrs["value"].values)
    return None


def _elem_type(model: onnx.ModelProto) -> dict[str, int]:
    """ONNX element type of every initializer and Constant output (INT2/INT4 are not numpy types)."""
    types = {t.name: t.data_type for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    types[node.output[0]] = a.t.data_type
    return types


def _is_dq_fed(t) -> bool:
    return bool(t.inputs) and t.inputs[0].op == "DequantizeLinear"


def _is_dq_fed_by_q(dq) -> bool:
    """A DequantizeLinear reading a QuantizeLinear that has an explicit zero point (its type)."""
    src = dq.inputs[0]
    return bool(src.inputs) and src.inputs[0].op == "QuantizeLinear" and len(src.inputs[0].inputs) > 2


def check_trt(model: onnx.ModelProto) -> list[Violation]:
    """Every violation of the rules above, each naming its node."""
    graph = gs.import_onnx(model)
    types = _elem_type(model)
    found: list[Violation] = []
    for node in graph.nodes:
        name = node.name or f"{node.op}({node.outputs[0].name})"
        if node.op in QDQ:
            data, scale = node.inputs[0], node.inputs[1]
            zero = node.inputs[2] if len(node.inputs) > 2 else None
            zero_value = None if zero is None or not zero.name else _const(zero)
            if zero_value is not None and np.any(zero_value.astype(np.int64) != 0):
                found.append(Violation("zero-point", name, f"zero point {zero_value.reshape(-1)[:4].tolist()} is not 0"))
            if zero is not None and zero.name and zero_value is None:
                found.append(Violation("zero-point", name, "zero point is not a constant"))
            scale_value = _const(scale)
            if scale_value is not None and scale_value.size and not np.all(scale_value.astype(np.float64) > 0):
                found.append(Violation("scale", name, f"scale {scale_value.astype(np.float64).min():g} is not positive"))
            per_tensor = scale_value is not None and scale_value.size == 1
            if _const(data) is None and not per_tensor:
                found.append(Violation("act-scale", name, "an activation needs one scale per tensor (per-channel "
                                       "scales are for constant weights only)"))
        if node.op == "DequantizeLinear":
            kind = types.get(node.inputs[0].name)
            if kind is None:  # an activation: its type is the producing QuantizeLinear's zero point's
                zero = node.inputs[0].inputs[0].inputs[2] if _is_dq_fed_by_q(node) else None
                kind = types.get(zero.name) if zero is not None else None
            if kind is not None and kind not in TRT_DQ_TYPES:
                found.append(Violation("dtype", name, f"DequantizeLinear of {onnx.TensorProto.DataType.Name(kind)}: "
                                       "TensorRT dequantizes INT8, FP8, INT4 (weight-only) and FP4 only"))
        if node.op in PRODUCTS:
            a, b = node.inputs[0], node.inputs[1]
            fed = [_is_dq_fed(a), _is_dq_fed(b)]
            if any(fed) and not all(fed):
                missing = "first" if not fed[0] else "second"
                found.append(Violation("both-inputs", name, f"{node.op} has DequantizeLinear on one input only "
                                       f"(the {missing} is float)"))
            for mine, other in ((a, b), (b, a)):
                if _is_dq_fed(mine) and types.get(mine.inputs[0].inputs[0].name) == onnx.TensorProto.INT4 and _is_dq_fed(other):
                    found.append(Violation("int4-weights", name, "INT4 weights with a quantized activation: "
                                           "TensorRT takes INT4 as weight-only quantization"))
    return found
