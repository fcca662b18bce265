"""`kdqat analyze`: per token position, the min-max range of the attention map and of the attention output
of one layer, teacher against students (the paper's "SA-PROP" figure), and how far each student sits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kdqat.capture import capture
from kdqat.families import family_of
from kdqat.errors import KdqatError
from kdqat.io import save_figure
from kdqat.runtime.batching import Features, batches
from kdqat import layout

QUANTITIES = ("map", "output")


@torch.inference_mode()
def attention_ranges(model: nn.Module, features: Features, layer: int, batch_size: int = 16) -> dict[str, np.ndarray]:
    """Mean over examples, per query position, of the min and max of the attention probabilities (over heads
    and real keys) and of the attention sub-layer output after LayerNorm (over hidden units)."""
    family_of(model).use_kdqat_attention(model)
    model.eval()
    length = max(len(x) for x in features["input_ids"])
    sums = {f"{q}_{e}": np.zeros(length) for q in QUANTITIES for e in ("min", "max")}
    count = np.zeros(length)
    for _, batch in batches(features, batch_size):
        inputs = {k: torch.from_numpy(v) for k, v in batch.items()}
        with capture(model) as internals:
            model(**inputs)
        if not 0 <= layer < len(internals.probs):
            raise KdqatError(f"--layer {layer}: the model has layers 0..{len(internals.probs) - 1}")
        mask = inputs["attention_mask"].bool()  # [B, S]
        probs = internals.probs[layer].float()  # [B, H, S, S]
        keys = mask[:, None, None, :]
        map_min = probs.masked_fill(~keys, float("inf")).amin(dim=(1, 3))
        map_max = probs.masked_fill(~keys, float("-inf")).amax(dim=(1, 3))
        out = internals.attn_outputs[layer].float()  # [B, S, D]
        stats = {"map_min": map_min, "map_max": map_max, "output_min": out.amin(-1), "output_max": out.amax(-1)}
        n = mask.shape[1]
        valid = mask.numpy()
        for key, value in stats.items():
            sums[key][:n] += np.where(valid, value.numpy(), 0.0).sum(0)
        count[:n] += valid.sum(0)
    seen = count > 0
    return {"count": count[seen], **{k: v[seen] / count[seen] for k, v in sums.items()}}


def distance(student: dict[str, np.ndarray], teacher: dict[str, np.ndarray], min_count: int) -> dict[str, float]:
    """Mean over positions (with at least min_count examples) of |min_s - min_t| + |max_s - max_t|, per quantity,
    and the student's mean range width over the teacher's."""
    keep = teacher["count"] >= min_count
    out = {}
    for q in QUANTITIES:
        lo, hi = f"{q}_min", f"{q}_max"
        gap = np.abs(student[lo] - teacher[lo]) + np.abs(student[hi] - teacher[hi])
        out[f"{q}_range_gap"] = float(gap[keep].mean())
        out[f"{q}_width_ratio"] = float((student[hi] - student[lo])[keep].mean() / (teacher[hi] - teacher[lo])[keep].mean())
    return out


def plot(ranges: dict[str, dict[str, np.ndarray]], path: Path, title: str, min_count: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, q in zip(axes, QUANTITIES):
        for i, (name, r) in enumerate(ranges.items()):
            keep = r["count"] >= min_count
            x = np.arange(len(r["count"]))[keep]
            color = "black" if i == 0 else f"C{i - 1}"
            ax.fill_between(x, r[f"{q}_min"][keep], r[f"{q}_max"][keep], color=color, alpha=0.12 if i else 0.08)
            ax.plot(x, r[f"{q}_min"][keep], color=color, lw=1, label=name)
            ax.plot(x, r[f"{q}_max"][keep], color=color, lw=1)
        ax.set(xlabel="token position", ylabel=f"attention {q}: mean min .. mean max",
               title=f"{title}: attention {'probabilities' if q == 'map' else 'output (after LayerNorm)'}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def run_label(run_dir: Path) -> str:
    metrics = run_dir / layout.METRICS
    if metrics.is_file():
        student = json.loads(metrics.read_text())["student"]
        return f"{student['kd']} ({run_dir.name})"
    return run_dir.name


def analyze_runs(runs: list[str], layer: int, samples: int, data_dir: str | None, output_dir: str,
                 batch_size: int = 16) -> dict:
    """Ranges of the first run's teacher and of every run's student on `samples` dev examples; writes
    sa_prop_layer<L>.png and analysis_layer<L>.json into output_dir and returns the summary."""
    from kdqat.glue.data import encode
    from kdqat.io import write_json
    from kdqat.models import load_tokenizer
    from kdqat.run_dir import open_run
    from kdqat.runtime.torch_engine import TorchEngine

    opened = [open_run(r) for r in runs]
    tasks = {r.task for r in opened}
    if len(tasks) > 1:
        raise KdqatError(f"runs of different tasks ({', '.join(sorted(tasks))}): analyse one task at a time")
    first = opened[0]
    if first.teacher is None:
        raise KdqatError(f"{first.root}: its teacher folder cannot be found")
    data = data_dir or (first.data_dir if first.data_dir and Path(first.data_dir).is_dir() else None)
    source = first.data_source(data)
    task = source.task
    dev = source.load(task.dev_splits[0], samples)
    features = encode(dev, load_tokenizer(str(first.student)), first.max_seq_length)
    teacher_name = "teacher (fp32)"
    models = {teacher_name: TorchEngine.teacher(first.teacher).model}
    for r in opened:
        models[run_label(r.root)] = TorchEngine.student(r.student).model
    ranges = {name: attention_ranges(m, features, layer, batch_size) for name, m in models.items()}
    min_count = max(1, len(dev) // 10)  # positions only a few long examples reach are noise
    summary = {name: distance(r, ranges[teacher_name], min_count) for name, r in ranges.items() if name != teacher_name}
    out = Path(output_dir)
    png = out / f"sa_prop_layer{layer}.png"
    plot(ranges, png, f"{task.name} layer {layer}", min_count)
    write_json(out / f"analysis_layer{layer}.json", {
        "task": task.name, "layer": layer, "examples": len(dev), "summary": summary,
        "ranges": {n: {k: v.tolist() for k, v in r.items()} for n, r in ranges.items()}})
    return {"task": task.name, "layer": layer, "examples": len(dev), "summary": summary, "plot": str(png)}
