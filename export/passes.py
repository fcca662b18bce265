"""Graph passes that make the files export writes, each `ModelProto -> ModelProto` and testable alone.

- `pack_weights`: the storage graph, with every weight DequantizeLinear input re-typed to the smallest
  ONNX integer type that holds its codes (INT2 for ternary, INT4 for 4-bit; opset 25, IR version 13).
- `strip_doc_strings`, `compact_names`, `set_ir_version`: smaller, portable files.

What an onnxruntime CPU session does to the graph in memory lives with that engine (runtime/ort_passes.py).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
from onnx import ModelProto, TensorProto, numpy_helper

from kdqat.errors import KdqatError

PACKED_OPSET = 25  # DequantizeLinear-25 accepts INT2 / UINT2
PACKED_IR_VERSION = 13  # onnx 1.23 writes 14, which onnxruntime 1.31/1.32 refuses
ONNX_INT_TYPES = {2: (ml_dtypes.int2, TensorProto.INT2), 4: (ml_dtypes.int4, TensorProto.INT4),
                  8: (np.int8, TensorProto.INT8)}


def _weight_dequantize_inputs(model: ModelProto) -> list[TensorProto]:
    """Initializers read by a DequantizeLinear as its data input: the quantized weights."""
    inits = {t.name: t for t in model.graph.initializer}
    return [inits[n.input[0]] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]


def pack_weights(model: ModelProto, bits: int) -> ModelProto:
    """The storage graph: weight codes re-typed to INT`bits` (four INT2 or two INT4 values per byte)."""
    if bits not in ONNX_INT_TYPES:
        raise KdqatError(f"cannot pack {bits}-bit weights; ONNX integer types exist for {sorted(ONNX_INT_TYPES)} bits")
    dtype, _ = ONNX_INT_TYPES[bits]
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    out = ModelProto()
    out.CopyFrom(model)
    for tensor in _weight_dequantize_inputs(out):
        codes = numpy_helper.to_array(tensor)
        if codes.size and (codes.min() < lo or codes.max() > hi):
            raise KdqatError(f"weight {tensor.name}: codes in [{codes.min()}, {codes.max()}] do not fit {bits} bits")
        tensor.CopyFrom(numpy_helper.from_array(codes.astype(np.int64).astype(dtype), tensor.name))
    for opset in out.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = max(opset.version, PACKED_OPSET)
    out.ir_version = PACKED_IR_VERSION
    return out


def set_ir_version(model: ModelProto, version: int) -> ModelProto:
    out = ModelProto()
    out.CopyFrom(model)
    out.ir_version = version
    return out


def strip_doc_strings(model: ModelProto) -> ModelProto:
    """Drop the exporter's per-node source locations (bytes on disk, and paths of this machine)."""
    out = ModelProto()
    out.CopyFrom(model)
    for node in out.graph.node:
        node.doc_string = ""
    return out


def compact_names(model: ModelProto) -> ModelProto:
    """Short names for intermediate values and no node names (storage graph: the exporter's scoped names
    are ~3% of a packed file). Graph inputs, outputs and initializers keep their names."""
    out = ModelProto()
    out.CopyFrom(model)
    keep = {v.name for v in (*out.graph.input, *out.graph.output)} | {t.name for t in out.graph.initializer}
    renamed: dict[str, str] = {}
    for node in out.graph.node:
        node.name = ""
        for i, name in enumerate(node.output):
            if name and name not in keep:
                renamed[name] = node.output[i] = f"v{len(renamed)}"
        for i, name in enumerate(node.input):
            node.input[i] = renamed.get(name, name)
    del out.graph.value_info[:]
    return out
