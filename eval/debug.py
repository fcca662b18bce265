"""`kdqat debug`: where an engine and the PyTorch student part ways.

Both run the same inputs. On the PyTorch side, every activation quantization point of the student's Q/DQ
stand-in (kdqat.export.qdq_modules: the same numbers as the student in static mode) reports its dequantized
output; on the engine side, the deploy graph gets every activation DequantizeLinear's output as an extra graph
output (node names carry the module path, so each point is matched by name). Points are compared in the order
PyTorch runs them, in units of that point's quantization step: two correct implementations differ by at most one
step (a value at a rounding boundary), so the first point beyond `tolerance` steps is where they part.

Exposing a point keeps the engine from fusing across it: it runs the same graph with more outputs, not its fastest
form. TensorRT builds an engine of the exposed FP16 graph (model.fp16.onnx, as its engines are built), whose
extra graph outputs its ONNX parser marks as network outputs; that path has never run (no GPU here).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from kdqat.errors import KdqatError

ENGINES = ("ort", "openvino", "trt")


@dataclass(frozen=True)
class Point:
    """One quantization point compared: its module path, the encoder layer it is in (None: outside the layers),
    its step, and the largest and mean |difference| between the two sides, in steps."""

    name: str
    layer: int | None
    step: float
    max_steps: float
    mean_steps: float


def _layer_of(name: str, layers_path: str) -> int | None:
    marker = f"{layers_path}."
    if marker not in name:
        return None
    index = name.split(marker, 1)[1].split(".", 1)[0]
    return int(index) if index.isdigit() else None


def torch_points(qdq_model, batch: dict[str, np.ndarray]) -> tuple[dict[str, tuple[np.ndarray, float]], np.ndarray]:
    """Every activation quantization point's output (name -> (values, step)), in execution order, and the output."""
    import torch

    from kdqat.export.qdq_modules import QDQActivation

    seen: dict[str, tuple[np.ndarray, float]] = {}
    hooks = []
    for name, module in qdq_model.named_modules():
        if isinstance(module, QDQActivation):
            def record(m, _inputs, output, name=name):
                seen[name] = (output.detach().float().numpy(), m.step)
            hooks.append(module.register_forward_hook(record))
    try:
        with torch.inference_mode():
            inputs = {k: torch.from_numpy(v) for k, v in batch.items()}
            output = qdq_model(**inputs).logits.float().numpy()
    finally:
        for hook in hooks:
            hook.remove()
    return seen, output


def _point_name(node_name: str) -> str:
    """"/model/bert/encoder/layer.0/attention/self/query/input_quantizer/DequantizeLinear" ->
    "bert.encoder.layer.0.attention.self.query.input_quantizer" (the graph's module scope, as the student names it)."""
    scope = node_name.strip("/").rsplit("/", 1)[0]
    return scope.split("/", 1)[1].replace("/", ".") if "/" in scope else scope


def exposed_graph(graph: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, str]]:
    """The graph with every activation DequantizeLinear output as a graph output; (graph, point name -> output)."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(graph)
    produced_by_quantize = {o for n in graph.graph.node if n.op_type == "QuantizeLinear" for o in n.output}
    outputs = {}
    for node in graph.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in produced_by_quantize:  # an activation, not a weight
            outputs[_point_name(node.name)] = node.output[0]
            exposed.graph.output.append(onnx.helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, None))
    return exposed, outputs


def engine_points(engine: str, graph: onnx.ModelProto, batch: dict[str, np.ndarray],
                  profile=None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Run the exposed graph on `engine`; (point name -> values, the graph's own first output)."""
    exposed, outputs = exposed_graph(graph)
    names = [graph.graph.output[0].name, *outputs.values()]
    feeds = {i.name: batch[i.name] for i in graph.graph.input}
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "exposed.onnx"
        onnx.save(exposed, str(path))
        if engine == "ort":
            import onnxruntime

            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            values = session.run(names, feeds)
        elif engine == "openvino":
            import openvino

            compiled = openvino.Core().compile_model(str(path), "CPU")
            result = compiled(feeds)
            values = [result[compiled.output(name)] for name in names]
        elif engine == "trt":
            from kdqat.runtime.trt_engine import TrtEngine

            result = TrtEngine.open(path, profile).run_all(feeds)
            values = [result[name] for name in names]
        else:
            raise KdqatError(f"--engine {engine!r}: kdqat debug compares {', '.join(ENGINES)}")
    by_output = dict(zip(names, values))
    return {point: np.asarray(by_output[out]) for point, out in outputs.items()}, np.asarray(values[0])


def compare_points(reference: dict[str, tuple[np.ndarray, float]], candidate: dict[str, np.ndarray],
                   layers_path: str) -> list[Point]:
    """Each point both sides expose, in the reference's order, with its difference in steps."""
    points = []
    for name, (values, step) in reference.items():
        if name not in candidate:
            continue
        other = candidate[name]
        if other.shape != values.shape:
            raise KdqatError(f"{name}: shapes differ ({values.shape} in PyTorch, {other.shape} in the engine)")
        diff = np.abs(values.astype(np.float64) - other.astype(np.float64)) / step
        points.append(Point(name, _layer_of(name, layers_path), step, float(diff.max()), float(diff.mean())))
    return points


def first_divergence(points: list[Point], tolerance: float) -> Point | None:
    """The first point beyond `tolerance` steps (0.01 step of slack: a difference of one step computed in float
    reads 1.0000001)."""
    return next((p for p in points if p.max_steps > tolerance + 0.01), None)


def debug_run(run_dir: str, engine: str = "ort", onnx_path: str | None = None, data_dir: str | None = None,
              samples: int = 16, tolerance: float = 1.0) -> dict:
    """Compare `engine` with the PyTorch student point by point on `samples` validation rows (random token ids
    where the run's data cannot be read here); returns the points, the first divergence and the outputs' gap."""
    from kdqat.eval.gpu_check import validation_batch
    from kdqat.export.qdq_modules import to_qdq
    from kdqat.families import family_of
    from kdqat.layout import deploy_graph
    from kdqat.run_dir import open_run
    from kdqat.runtime.timing import random_batch
    from kdqat.student import load_student

    if engine not in ENGINES:
        raise KdqatError(f"--engine {engine!r}: kdqat debug compares {', '.join(ENGINES)} with PyTorch")
    run = open_run(run_dir)
    path = deploy_graph(run.root, onnx_path)
    if not path.is_file():
        raise KdqatError(f"{path}: no such ONNX file (run kdqat export first)")
    student = load_student(run.student)
    try:
        batch, inputs = validation_batch(run, data_dir, samples), "validation rows"
    except KdqatError:
        vocab = student.config.vocab_size
        batch, inputs = random_batch(samples, run.max_seq_length, vocab, 0, low=min(1000, vocab // 2)), "random token ids"
    profile = None
    if engine == "trt":  # TensorRT's engines are built from the FP16 form; one profile for this batch
        from kdqat.layout import tensorrt_graph
        from kdqat.runtime.engine import ShapeProfile

        path = tensorrt_graph(path)
        rows, length = next(iter(batch.values())).shape
        profile = ShapeProfile(1, rows, rows, 1, length, length)
    graph = onnx.load(str(path))
    batch = {name: batch[name] for name in (i.name for i in graph.graph.input)}
    reference, torch_output = torch_points(to_qdq(student), batch)
    candidate, engine_output = engine_points(engine, graph, batch, profile)
    points = compare_points(reference, candidate, family_of(student).layers)
    if not points:
        raise KdqatError(f"{path}: none of the student's {len(reference)} quantization points is in the graph by name "
                         "(was it exported by kdqat export?)")
    first = first_divergence(points, tolerance)
    return {"engine": engine, "graph": str(path), "inputs": f"{len(next(iter(batch.values())))} {inputs}",
            "tolerance_steps": tolerance, "points": points, "first_divergence": first,
            "missing_in_engine": [n for n in reference if n not in candidate],
            "output_max_abs_diff": float(np.abs(torch_output - engine_output).max())}
