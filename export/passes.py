"""Graph passes that make the files export writes, each `ModelProto -> ModelProto` and testable alone.

- `pack_weights`: the storage graph, with every weight DequantizeLinear input re-typed to the smallest
  ONNX integer type that holds its codes (INT2 for ternary, INT4 for 4-bit; opset 25, IR version 13).
- `float16_float_parts`: the TensorRT graph, the deploy graph with its float parts (activations, constants,
  Q/DQ scales) in float16.
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


FP16_NORMAL = (float(np.finfo(np.float16).tiny), float(np.finfo(np.float16).max))  # scales must stay exact to 2^-11


def float16_float_parts(model: ModelProto) -> ModelProto:
    """The deploy graph for TensorRT: every float activation, constant and Q/DQ scale in float16, the graph's
    inputs and outputs unchanged (token ids in, float32 logits or embeddings out, through one final Cast).

    A strongly typed TensorRT network runs each layer in its tensors' types, so this is how the float work between
    the INT8 GEMMs (LayerNorm, softmax, GELU, residual adds) runs in FP16. An opset-19 QuantizeLinear's scale has
    its input's type, and a DequantizeLinear outputs its scale's type: the scales are float16 too, which TensorRT's
    ONNX parser accepts (as it does float32 and bfloat16). Constants beyond float16's range are clamped by the
    converter (the attention mask's large negative becomes -65504); a Q/DQ scale outside float16's normal range
    would lose its precision, and is refused."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from kdqat.runtime.ort_passes import constants

    constant = constants(model)
    for node in model.graph.node:
        tensor = constant(node.input[1]) if node.op_type in ("QuantizeLinear", "DequantizeLinear") else None
        if tensor is not None:
            scale = np.abs(numpy_helper.to_array(tensor).astype(np.float64))
            if scale.size and (scale.min() < FP16_NORMAL[0] or scale.max() > FP16_NORMAL[1]):
                raise KdqatError(f"{node.op_type} {node.name or node.output[0]}: scale in [{scale.min():.3g}, "
                                 f"{scale.max():.3g}] is outside float16's normal range {FP16_NORMAL}; "
                                 "the float16 graph cannot hold it exactly enough")
    out = ModelProto()
    out.CopyFrom(model)  # the converter edits the model it is given
    out = convert_float_to_float16(out, keep_io_types=True)
    # It appends the Casts of float graph inputs after their consumers; ONNX wants nodes in topological order.
    graph_inputs = {i.name for i in out.graph.input}
    nodes = sorted(out.graph.node, key=lambda n: not (n.op_type == "Cast" and n.input[0] in graph_inputs))  # stable
    del out.graph.node[:]
    out.graph.node.extend(nodes)
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
