"""Dev curves of `kdqat train` runs: every evaluation of each student, its teacher as a dashed line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kdqat.errors import KdqatError
from kdqat.eval.report import read_metrics
from kdqat.eval.sweep_table import metric_label


def plot_curves(run_dirs: list[str | Path]) -> Any:
    """One panel per task: each run's student dev score at every evaluation (a line, its best marked with a
    star) and its teacher's kept score (dashed). Returns the figure (save it with kdqat.io.save_figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = []
    for d in run_dirs:
        m = read_metrics(d)
        if not m["student"].get("history"):
            raise KdqatError(f"{d}/metrics.json: no evaluation history (written by a kdqat before step-wise evaluation)")
        runs.append((_short_name(d, run_dirs), m))
    tasks = list(dict.fromkeys(m["task"] for _, m in runs))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.0 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        teachers: set[float] = set()
        for i, (name, m) in enumerate(r for r in runs if r[1]["task"] == task):
            metric, student = m["metric"], m["student"]
            steps = [e["step"] for e in student["history"]]
            scores = [e["dev"][metric] for e in student["history"]]
            ax.plot(steps, scores, color=f"C{i}", marker=".", label=name if student["kd"] in Path(name).parts else f"{name} ({student['kd']})")
            best = student["best"]
            ax.plot([best["step"]], [best["dev"][metric]], color=f"C{i}", marker="*", markersize=12, linestyle="none")
            teacher = m["teacher"]["dev"][metric]
            if teacher not in teachers:  # a teacher shared by several runs is drawn once
                teachers.add(teacher)
                ax.axhline(teacher, color=f"C{i}", linestyle="--", linewidth=1)
        ax.set_title(f"{task}: student every evaluation, teacher dashed, best starred", fontsize=9)
        ax.set_xlabel("training step", fontsize=8)
        ax.set_ylabel(f"dev {metric_label(metric)}", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _short_name(run: str | Path, runs: list[str | Path]) -> str:
    """A run's label: its path below the folder all runs share (e.g. "rte/map+output/seed42"), else as given."""
    if len(runs) < 2:
        return str(run)
    common = os.path.commonpath([os.path.abspath(r) for r in runs])
    return os.path.relpath(os.path.abspath(run), common)
