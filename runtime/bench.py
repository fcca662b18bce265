"""`kdqat bench`: latency percentiles and throughput of each engine over a grid of batch sizes and sequence
lengths, with the float teacher measured in the same run as the baseline."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from kdqat.errors import KdqatError
from kdqat.io import check_output, save_figure, write_json
from kdqat.run_dir import open_run
from kdqat.layout import BENCH_DIR, deploy_graph
from kdqat.runtime.bench_options import BenchOptions
from kdqat.runtime.registry import StudentSource, open_engine, open_teacher
from kdqat.runtime.timing import measure, random_batch

BASELINE = "teacher fp32 (torch)"


FLOAT_BYTES = 4


def activation_bytes(config, batch: int, seq: int) -> int:
    """A generous estimate of one forward pass's peak activation memory (float32): the attention maps
    ([batch, heads, seq, seq]: scores, masked scores, probabilities and their quantized copy), the
    feed-forward activations ([batch, seq, intermediate], three at once) and a dozen hidden-size tensors."""
    from kdqat.families import family_for

    size = family_for(config.model_type).dimensions(config)
    attention = 4 * batch * size["num_attention_heads"] * seq * seq
    feed_forward = 3 * batch * seq * size["intermediate_size"]
    hidden = 12 * batch * seq * size["hidden_size"]
    return (attention + feed_forward + hidden) * FLOAT_BYTES


def check_memory(opts: BenchOptions, config, available: int | None = None) -> None:
    """Refuse grid points whose estimated activations do not fit in half the memory available now (the
    engines hold their weights and buffers beside them), instead of swapping the machine."""
    if available is None:
        import psutil

        available = psutil.virtual_memory().available
    b, s = max(opts.batch_sizes), max(opts.seq_lengths)
    need = activation_bytes(config, b, s)
    if need > available // 2:
        raise KdqatError(f"--batch-sizes {b} with --seq-lengths {s} needs about {need / 2**30:.1f} GiB of activations "
                         f"per forward pass; {available / 2**30:.1f} GiB is available: use smaller batches or sequences")


def open_engines(opts: BenchOptions) -> dict[str, object]:
    run = open_run(opts.run_dir)
    engines = {BASELINE: open_teacher(run.teacher or run.student, opts.device)}
    onnx_path = deploy_graph(run.root, opts.onnx)
    from kdqat.runtime.engine import ShapeProfile

    b, s = sorted(opts.batch_sizes), sorted(opts.seq_lengths)
    profile = ShapeProfile(b[0], b[-1], b[-1], s[0], s[-1], s[-1])  # what TensorRT (engine or provider) builds for
    source = StudentSource(run.student, onnx_path, opts.provider, opts.device, profile, static_shapes=opts.static_shapes)
    for kind in opts.engines:
        label = f"{kind}, static shapes" if kind == "openvino" and opts.static_shapes else kind
        engines[f"student ({label})"] = open_engine(kind, source)
    return engines


def bench(opts: BenchOptions, console: Console | None = None) -> dict:
    """Run the grid; write RUN_DIR/bench/bench.json (and latency.png); return the record."""
    run = open_run(opts.run_dir)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(run.student)
    if max(opts.seq_lengths) > config.max_position_embeddings:
        raise KdqatError(f"--seq-lengths {max(opts.seq_lengths)} exceeds the model's {config.max_position_embeddings} positions")
    check_memory(opts, config)
    out = Path(opts.output_dir) if opts.output_dir else run.root / BENCH_DIR
    check_output(out, "--output-dir" if opts.output_dir else "bench output", folder=True)  # before, not after, the work
    for name in ("bench.json", "latency.png"):
        check_output(out / name, "--output-dir" if opts.output_dir else "bench output")
    engines = open_engines(opts)
    vocab = config.vocab_size
    results = []
    grid = [(b, s) for s in opts.seq_lengths for b in opts.batch_sizes]
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console or Console(stderr=True), disable=not opts.progress) as bar:
        job = bar.add_task("bench", total=len(grid) * len(engines))
        for b, s in grid:
            batch = random_batch(b, s, vocab, opts.seed, opts.vocab_low)
            for name, engine in engines.items():
                bar.update(job, description=f"{name} batch {b} seq {s}")
                results.append({"engine": name, "batch": b, "seq": s, **measure(engine.run, batch, opts.warmup, opts.iterations)})
                bar.advance(job)
    for r in results:
        base = next(x for x in results if x["engine"] == BASELINE and x["batch"] == r["batch"] and x["seq"] == r["seq"])
        r["speedup_vs_teacher"] = base["p50_ms"] / r["p50_ms"]
    options = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(opts).items()}  # as JSON reads back
    record = {"task": run.task, "trained_max_seq_length": run.max_seq_length, "options": options,
              "environment": environment(opts), "results": results}
    write_json(out / "bench.json", record)
    record["files"] = [str(out / "bench.json")]
    if opts.plot:
        plot(record, out / "latency.png")
        record["files"].append(str(out / "latency.png"))
    return record


def environment(opts: BenchOptions) -> dict:
    import platform

    import onnxruntime
    import torch

    from kdqat.runtime.cpu_info import cpu_info

    env = {"torch": torch.__version__, "torch_threads": torch.get_num_threads(), "onnxruntime": onnxruntime.__version__,
           "cpu": cpu_info(), "python": platform.python_version()}
    if opts.device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
    return env


def plot(record: dict, path: Path) -> None:
    """p50 latency against batch size, one line per engine, one panel per sequence length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seqs = sorted({r["seq"] for r in record["results"]})
    fig, axes = plt.subplots(1, len(seqs), figsize=(5.5 * len(seqs), 4), squeeze=False)
    for ax, seq in zip(axes[0], seqs):
        for engine in dict.fromkeys(r["engine"] for r in record["results"]):
            rows = sorted((r for r in record["results"] if r["engine"] == engine and r["seq"] == seq), key=lambda r: r["batch"])
            ax.plot([r["batch"] for r in rows], [r["p50_ms"] for r in rows], marker="o", label=engine)
        batches = sorted({r["batch"] for r in record["results"]})
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.set(xlabel="batch size", ylabel="p50 latency (ms)", title=f"{record['task']}, sequence {seq}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
