"""What the onnxruntime CPU engine does to a deploy graph before it runs it, each `ModelProto -> ModelProto`,
value-preserving up to float rounding and testable alone. The graph on disk stays standard Q/DQ (what
TensorRT wants); these rewrites happen in memory when an onnxruntime CPU session opens.

- `activations_to_uint8`: int8 activations with zero point 0 become uint8 with zero point 128, the same
  numbers (q_u8 = q_i8 + 128 and (q_u8 - 128) * s = q_i8 * s), which onnxruntime's CPU integer kernels want.
- `gather_before_dequantize`: the embedding rows are dequantized after the lookup, not the whole table.
- `fold_score_scale`: the attention's 1/sqrt(d) goes into k's dequantization scale.
- `fuse_linear_bias`: each Linear's bias is fused into its integer MatMul.
- `static_reshapes` (not in `onnxruntime_cpu`): the attention's head split and merge reshape to constant shapes
  instead of shapes computed per call; exact, but measured no faster (benchmarks/cpu_fusions.py) while its
  symbolic shape inference adds about 1.2 s to the first session a process opens.
- `onnxruntime_cpu`: the others, in order.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import ModelProto, TensorProto, helper, numpy_helper


def _initializers(model: ModelProto) -> dict[str, TensorProto]:
    return {t.name: t for t in model.graph.initializer}

def _producers(model: ModelProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in model.graph.node for out in node.output}

def _consumers(model: ModelProto) -> dict[str, list[onnx.NodeProto]]:
    """Each value name -> the nodes that read it."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return consumers

def _is_scalar_zero_int8(t: TensorProto | None) -> bool:
    if t is None or t.data_type != TensorProto.INT8:
        return False
    a = numpy_helper.to_array(t)
    return a.size == 1 and int(a.reshape(())) == 0

def constants(model: ModelProto) -> Callable[[str], TensorProto | None]:
    """A lookup of the tensor behind a value name, whether an initializer or a Constant node's output
    (None for computed values). Built once per pass: the graph's maps are not rebuilt per query."""
    inits, producers = _initializers(model), _producers(model)

    def constant(name: str) -> TensorProto | None:
        if name in inits:
            return inits[name]
        node = producers.get(name)
        if node is not None and node.op_type == "Constant":
            return next((a.t for a in node.attribute if a.name == "value"), None)
        return None

    return constant


def activations_to_uint8(model: ModelProto) -> ModelProto:
    """Rewrite each int8 zero-point-0 activation QuantizeLinear (and the DequantizeLinears reading it) to
    uint8 with zero point 128. Bit-identical; weights keep their int8 codes."""
    out = ModelProto()
    out.CopyFrom(model)
    zp_name = "kdqat_uint8_zero_point_128"
    out.graph.initializer.append(numpy_helper.from_array(np.array(128, dtype=np.uint8), zp_name))
    quantized: set[str] = set()
    constant = constants(out)
    for node in out.graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) == 3 and _is_scalar_zero_int8(constant(node.input[2])):
            node.input[2] = zp_name
            quantized.add(node.output[0])
    for node in out.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in quantized:
            node.input[2] = zp_name
    return out


GATHERABLE = (TensorProto.INT8, TensorProto.UINT8)


def gather_before_dequantize(model: ModelProto) -> ModelProto:
    """Gather(DequantizeLinear(codes, per-row scale, axis 0), ids) -> Gather(codes, ids) * Gather(scale, ids).

    The same products, computed only for the looked-up rows: onnxruntime keeps a DequantizeLinear of a
    constant in the graph (for Q/DQ fusion), so without this it dequantizes the whole embedding table
    (vocabulary x hidden) on every call. TensorRT wants the Q/DQ form, so this is for onnxruntime sessions.
    """
    out = ModelProto()
    out.CopyFrom(model)
    inits = _initializers(out)
    consumers = _consumers(out)
    nodes = []
    for node in out.graph.node:
        users = consumers.get(node.output[0], []) if node.output else []
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if (node.op_type != "DequantizeLinear" or node.input[0] not in inits or len(node.input) > 2 or axis != 0
                or inits[node.input[0]].data_type not in GATHERABLE  # Gather takes no INT2 / INT4
                or not users or any(u.op_type != "Gather" or u.input[0] != node.output[0]
                                    or any(a.name == "axis" and a.i != 0 for a in u.attribute) for u in users)):
            nodes.append(node)
            continue
        codes, scale = node.input[0], node.input[1]
        for gather in users:  # rewritten in place below; each keeps its output name
            ids, result = gather.input[1], gather.output[0]
            prefix = f"{result}_kdqat"
            gather.CopyFrom(helper.make_node("Mul", [f"{prefix}_codes_f", f"{prefix}_scale_col"], [result]))
            nodes += [
                helper.make_node("Gather", [codes, ids], [f"{prefix}_codes"]),
                helper.make_node("Cast", [f"{prefix}_codes"], [f"{prefix}_codes_f"], to=TensorProto.FLOAT),
                helper.make_node("Gather", [scale, ids], [f"{prefix}_scale"]),
                helper.make_node("Unsqueeze", [f"{prefix}_scale", f"{prefix}_last_axis"], [f"{prefix}_scale_col"]),
            ]
            out.graph.initializer.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), f"{prefix}_last_axis"))
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def _scalar_float(t: TensorProto | None) -> float | None:
    if t is None or t.data_type != TensorProto.FLOAT:
        return None
    a = numpy_helper.to_array(t)
    return float(a.reshape(())) if a.size == 1 else None


def fold_score_scale(model: ModelProto) -> ModelProto:
    """MatMul(DQ(q), DQ(k)) * c -> MatMul(DQ(q), DQ(k, scale_k * c)): the attention's 1/sqrt(d) goes into
    k's dequantization scale, which onnxruntime folds into its integer MatMul's output scaling.

    The same product up to float rounding (one multiplication reassociated), and one elementwise pass
    over every [batch, heads, seq, seq] score tensor less. Only the DequantizeLinear changes; its
    QuantizeLinear keeps the learned scale. For onnxruntime sessions; TensorRT fuses the Mul itself.
    """
    out = ModelProto()
    out.CopyFrom(model)
    producers, consumers, constant = _producers(out), _consumers(out), constants(out)
    folded_muls: set[str] = set()  # output names of the Mul nodes that go
    for node in out.graph.node:
        if node.op_type != "Mul":
            continue
        for i, name in enumerate(node.input):
            matmul = producers.get(name)
            c = _scalar_float(constant(node.input[1 - i]))
            if matmul is None or matmul.op_type != "MatMul" or c is None or len(consumers[name]) != 1:
                continue
            dq_a, dq_b = (producers.get(x) for x in matmul.input)
            if any(d is None or d.op_type != "DequantizeLinear" for d in (dq_a, dq_b)) or len(consumers[dq_b.output[0]]) != 1:
                continue
            scale = _scalar_float(constant(dq_b.input[1]))
            if scale is None:
                continue
            folded = f"{dq_b.output[0]}_kdqat_scaled"
            out.graph.initializer.append(numpy_helper.from_array(np.array(scale * c, dtype=np.float32), folded))
            dq_b.input[1] = folded
            matmul.output[0] = node.output[0]  # the Mul's consumers now read the MatMul
            folded_muls.add(node.output[0])
            break
    kept = [n for n in out.graph.node if not (n.op_type == "Mul" and n.output[0] in folded_muls)]
    del out.graph.node[:]
    out.graph.node.extend(kept)
    return out


def _per_tensor_or_column(scale: TensorProto | None, columns: int) -> bool:
    """A float scale MatMulIntegerToFloat takes for B: one value, or one per column of B ([columns])."""
    if scale is None or scale.data_type != TensorProto.FLOAT:
        return False
    return _scalar_float(scale) is not None or list(scale.dims) == [columns]


def fuse_linear_bias(model: ModelProto) -> ModelProto:
    """Add(MatMul(DQ(x_q), DQ(W_codes)), bias) -> com.microsoft MatMulIntegerToFloat(x_q, W_codes, ..., bias).

    onnxruntime turns DQ -> MatMul into its integer MatMul but leaves the bias as a separate Add, one
    more pass over every Linear's output; its MatMulIntegerToFloat takes the bias in the same pass.
    The same arithmetic (integer product, times both scales, plus bias). For onnxruntime CPU sessions
    only: the graph on disk stays standard ONNX.
    """
    out = ModelProto()
    out.CopyFrom(model)
    inits, producers, consumers, constant = _initializers(out), _producers(out), _consumers(out), constants(out)
    fused: dict[str, onnx.NodeProto] = {}  # Add output -> the node replacing it
    gone: set[str] = set()  # output names of the MatMuls folded into a fused node
    for add in out.graph.node:
        if add.op_type != "Add":
            continue
        for i, name in enumerate(add.input):
            matmul, bias = producers.get(name), constant(add.input[1 - i])
            if (matmul is None or matmul.op_type != "MatMul" or len(consumers[name]) != 1 or bias is None
                    or bias.data_type != TensorProto.FLOAT or len(bias.dims) != 1):
                continue
            dq_x, dq_w = (producers.get(x) for x in matmul.input)
            if (dq_x is None or dq_w is None or dq_x.op_type != "DequantizeLinear" or dq_w.op_type != "DequantizeLinear"
                    or dq_w.input[0] not in inits or inits[dq_w.input[0]].data_type != TensorProto.INT8
                    or len(inits[dq_w.input[0]].dims) != 2 or len(dq_x.input) != 3):
                continue
            if _scalar_float(constant(dq_x.input[1])) is None or not _per_tensor_or_column(
                    constant(dq_w.input[1]), inits[dq_w.input[0]].dims[1]):
                continue  # the operator takes a per-tensor activation scale and a per-tensor or per-column weight scale
            bias_name = f"{add.output[0]}_kdqat_bias"
            out.graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(bias), bias_name))
            w_zero = dq_w.input[2] if len(dq_w.input) > 2 else ""
            fused[add.output[0]] = helper.make_node(
                "MatMulIntegerToFloat",
                [dq_x.input[0], dq_w.input[0], dq_x.input[1], dq_w.input[1], dq_x.input[2], w_zero, bias_name],
                [add.output[0]], domain="com.microsoft")
            gone.add(name)
            break
    if not fused:
        return out

    def unused_dequantize(node: onnx.NodeProto) -> bool:  # read only by MatMuls that were folded
        readers = consumers.get(node.output[0], [])
        return node.op_type == "DequantizeLinear" and bool(readers) and all(r.output[0] in gone for r in readers)

    nodes = [fused.get(n.output[0], n) if n.op_type == "Add" else n for n in out.graph.node
             if not (n.op_type == "MatMul" and n.output[0] in gone) and not unused_dequantize(n)]
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    if not any(o.domain == "com.microsoft" for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return out


def _symbolic_dims(model: ModelProto) -> dict[str, list]:
    """Each value's dimensions from onnxruntime's symbolic shape inference: ints, or names shared by equal dims."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    values = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    return {v.name: [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                     for d in v.type.tensor_type.shape.dim] for v in values if v.type.tensor_type.HasField("shape")}


def _without_dead_nodes(model: ModelProto) -> None:
    """Drop, in place, nodes none of whose outputs is read by another node or is a graph output."""
    outputs = {o.name for o in model.graph.output}
    while True:
        read = {name for node in model.graph.node for name in node.input} | outputs
        nodes = [n for n in model.graph.node if any(o in read for o in n.output if o)]
        if len(nodes) == len(model.graph.node):
            return
        del model.graph.node[:]
        model.graph.node.extend(nodes)


def static_reshapes(model: ModelProto) -> ModelProto:
    """Reshape(x, computed shape) -> Reshape(x, constant) where symbolic shape inference proves each output
    dimension to be a constant, or equal to x's dimension at the same place (written 0: keep it), with at most one
    left to infer (-1). The shape's computing nodes go when nothing else reads them. Exact: the same shapes."""
    try:
        dims = _symbolic_dims(model)
    except Exception:  # inference is best effort: a graph it cannot read keeps its computed shapes
        return model
    out = ModelProto()
    out.CopyFrom(model)
    constant = constants(out)
    changed = False
    for node in out.graph.node:
        if node.op_type != "Reshape" or constant(node.input[1]) is not None or any(
                a.name == "allowzero" and a.i for a in node.attribute):
            continue
        source, target = dims.get(node.input[0]), dims.get(node.output[0])
        if not source or not target or any(d is None for d in source):
            continue
        shape = []
        for i, d in enumerate(target):
            if isinstance(d, int):
                shape.append(d)
            elif i < len(source) and d == source[i]:
                shape.append(0)
            else:
                shape.append(-1)
        if shape.count(-1) > 1:
            continue
        name = f"{node.output[0]}_kdqat_shape"
        out.graph.initializer.append(numpy_helper.from_array(np.array(shape, dtype=np.int64), name))
        node.input[1] = name
        changed = True
    if changed:
        _without_dead_nodes(out)
    return out


def onnxruntime_cpu(model: ModelProto) -> ModelProto:
    """The in-memory rewrites for onnxruntime's CPU provider, all value-preserving up to float rounding."""
    return fuse_linear_bias(fold_score_scale(gather_before_dequantize(activations_to_uint8(model))))
