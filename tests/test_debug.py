"""`kdqat debug`: the first quantization point where an engine parts from the PyTorch student, found by name, in
order, in units of the point's step."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from conftest import run_cli

POINT = "bert.encoder.layer.1.intermediate.dense.input_quantizer"
NODE = "/model/bert/encoder/layer.1/intermediate/dense/input_quantizer/DequantizeLinear"  # its name in the graph


def altered(graph_path, out, node_name: str, factor: float):
    """The deploy graph with one activation point's DequantizeLinear scale multiplied by `factor` (its Quantize
    untouched): an engine that reads that scale wrong, at one layer."""
    graph = onnx.load(str(graph_path))
    node = next(n for n in graph.graph.node if n.name == node_name)
    scale_node = next(n for n in graph.graph.node if node.input[1] in n.output)
    scale = numpy_helper.to_array(scale_node.attribute[0].t)
    graph.graph.initializer.append(numpy_helper.from_array((scale * factor).astype(scale.dtype), "altered_scale"))
    node.input[1] = "altered_scale"
    onnx.save(graph, str(out))
    return out


@pytest.mark.parametrize("engine", ["ort", "openvino"])
def test_an_engine_that_agrees_is_within_a_step_everywhere(exported_run, glue_dir, tmp_path, engine):
    done = run_cli("debug", exported_run, "--engine", engine, "--data-dir", glue_dir, "--samples", "8", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "8 validation rows" in done.stdout and "no divergence: every point within 1 step(s)" in done.stdout


def test_a_scale_altered_at_one_layer_is_named_as_the_first_divergence(exported_run, glue_dir, tmp_path):
    graph = altered(exported_run / "onnx" / "model.onnx", tmp_path / "altered.onnx", NODE, 1.5)
    done = run_cli("debug", exported_run, "--onnx", graph, "--data-dir", glue_dir, "--samples", "8", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("first divergence:"))
    assert line.startswith(f"first divergence: {POINT} (layer 1): max |diff| ")


def test_points_are_compared_in_order_and_in_steps():
    from kdqat.eval.debug import compare_points, first_divergence

    step = 0.5
    reference = {"a.layer.0.x": (np.array([1.0, 2.0]), step), "a.layer.1.y": (np.array([1.0, -1.0]), step),
                 "a.layer.1.z": (np.array([3.0]), step)}
    candidate = {"a.layer.0.x": np.array([1.0, 2.5]), "a.layer.1.y": np.array([1.0, 1.0]), "a.layer.1.z": np.array([9.0])}
    points = compare_points(reference, candidate, "a.layer")
    assert [(p.name, p.layer, p.max_steps) for p in points] == [("a.layer.0.x", 0, 1.0), ("a.layer.1.y", 1, 4.0),
                                                               ("a.layer.1.z", 1, 12.0)]
    assert first_divergence(points, tolerance=1.0).name == "a.layer.1.y"  # one step is a rounding boundary's
