"""What each onnxruntime CPU rewrite of the deploy graph buys: latency and onnxruntime's own profile of the student
with the rewrites before issue 28 and with each new one added, in one process, interleaved.

    python benchmarks/cpu_fusions.py RUN_DIR [--shapes 1x32,1x128,8x128,32x128] [--output fusions.json]

Variants (runtime/ort_passes.py): `before` = onnxruntime_cpu, what every kdqat onnxruntime CPU session runs
(uint8 activations, embedding lookup before dequantization, score scale folded, bias fused into the integer
MatMul); `+static reshapes` (exact, measured no faster: not in onnxruntime_cpu); `+skip layernorm (rejected)`:
residual Add + LayerNormalization as onnxruntime's SkipLayerNormalization (defined here, measured slower). Latency: median of --blocks blocks of
--iterations calls, variants interleaved block by block (each block after a pause: peers.block_ms), full-length
random token ids. Profile: onnxruntime's per-operator kernel time and the
node count of the graph onnxruntime runs after its own optimizations. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import tempfile
from pathlib import Path

import onnx
import onnxruntime as ort
from onnx import ModelProto, helper

from kdqat.io import write_json
from kdqat.runtime import ort_passes
from kdqat.runtime.cpu_info import cpu_info, describe
from kdqat.runtime.timing import block_ms, random_batch, ort_profile


def fuse_skip_layernorm(model: ModelProto) -> ModelProto:
    """LayerNormalization(Add(x, residual)) over the last axis -> com.microsoft SkipLayerNormalization(x, residual,
    gamma, beta), the fusion onnxruntime's BERT optimizer makes (it does not find it in-session here: the shapes
    are unknown to it). Measured here and rejected: onnxruntime 1.32's CPU kernel is slower than Add +
    LayerNormalization for these shapes (docs/results/cpu-speed.md), so kdqat's sessions do not apply it."""
    out = ModelProto()
    out.CopyFrom(model)
    producers, consumers, constant = ort_passes._producers(out), ort_passes._consumers(out), ort_passes.constants(out)
    fused: dict[str, onnx.NodeProto] = {}  # LayerNormalization output -> the node replacing it
    gone: set[str] = set()  # the Adds folded in
    for norm in out.graph.node:
        add = producers.get(norm.input[0]) if norm.op_type == "LayerNormalization" else None
        if add is None or add.op_type != "Add" or len(consumers[add.output[0]]) != 1 or len(norm.output) != 1:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in norm.attribute}
        gamma, beta = constant(norm.input[1]), constant(norm.input[2]) if len(norm.input) > 2 else None
        if attrs.get("axis", -1) != -1 or gamma is None or len(gamma.dims) != 1 or (len(norm.input) > 2 and beta is None):
            continue
        if any(x in producers and producers[x].op_type in ("Gather", "Constant") for x in add.input):
            continue  # the embeddings' sum of lookups (a position table broadcast over the batch): left as it is
        fused[norm.output[0]] = helper.make_node(
            "SkipLayerNormalization", [add.input[0], add.input[1], *norm.input[1:3]], [norm.output[0]],
            name=f"{norm.output[0]}_kdqat_skip", domain="com.microsoft", epsilon=attrs.get("epsilon", 1e-5))
        gone.add(add.output[0])
    if not fused:
        return out
    nodes = [fused.get(n.output[0], n) for n in out.graph.node if not (n.op_type == "Add" and n.output[0] in gone)]
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    if not any(o.domain == "com.microsoft" for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return out


VARIANTS = {
    "before": ort_passes.onnxruntime_cpu,  # what every kdqat onnxruntime CPU session runs
    "+static reshapes": lambda m: ort_passes.onnxruntime_cpu(ort_passes.static_reshapes(m)),
    "+skip layernorm (rejected)": lambda m: fuse_skip_layernorm(ort_passes.onnxruntime_cpu(ort_passes.static_reshapes(m))),
}


def session(model: onnx.ModelProto, threads: int, optimized: str | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    if optimized:
        options.optimized_model_filepath = optimized
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def optimized_nodes(model: onnx.ModelProto, threads: int) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "optimized.onnx")
        session(model, threads, optimized=path)
        return dict(collections.Counter(n.op_type for n in onnx.load(path).graph.node).most_common())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--shapes", default="1x32,1x128,8x128,32x128")
    parser.add_argument("--blocks", type=int, default=9)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--profile-runs", type=int, default=5)
    parser.add_argument("--output", type=Path, help="JSON file for the results")
    args = parser.parse_args()

    base = onnx.load(str(args.run_dir / "onnx" / "model.onnx"))
    models = {name: rewrite(base) for name, rewrite in VARIANTS.items()}
    sessions = {name: session(m, args.threads) for name, m in models.items()}
    vocab = json.loads((args.run_dir / "student" / "config.json").read_text())["vocab_size"]
    result: dict = {"run": str(args.run_dir), "cpu": cpu_info(), "threads": args.threads, "ort": ort.__version__,
                    "nodes": {name: optimized_nodes(m, args.threads) for name, m in models.items()}, "shapes": []}
    print(f"{args.run_dir}: {describe(cpu_info())}, {args.threads} threads, onnxruntime {ort.__version__}")
    for name, nodes in result["nodes"].items():
        print(f"  {name:26s} {sum(nodes.values())} nodes after onnxruntime's optimizations")
    for shape in args.shapes.split(","):
        batch, seq = (int(x) for x in shape.split("x"))
        inputs = random_batch(batch, seq, vocab, special=(101, 102))
        times: dict[str, list[float]] = {name: [] for name in sessions}
        for s in sessions.values():
            s.run(None, inputs)
        for _ in range(args.blocks):
            for name, s in sessions.items():
                times[name].append(block_ms(lambda x, s=s: s.run(None, x), inputs, args.iterations))
        medians = {name: statistics.median(t) for name, t in times.items()}
        profiles = {name: dict(ort_profile(m, inputs, args.profile_runs + 1, args.threads)) for name, m in models.items()}
        result["shapes"].append({"batch": batch, "seq": seq, "median_ms": medians, "profile_ms": profiles})
        print(f"{batch} x {seq}: " + "   ".join(f"{n} {ms:.2f} ms ({medians['before'] / ms:.2f}x)" for n, ms in medians.items()))
        for name, ops in profiles.items():
            total = sum(ops.values())
            print(f"    {name:26s} kernel {total:7.2f} ms: " + ", ".join(
                f"{op} {100 * ms / total:.0f}%" for op, ms in list(ops.items())[:7]))
    if args.output:
        write_json(args.output, {**result, "args": {k: str(v) for k, v in vars(args).items()}})


if __name__ == "__main__":
    main()
