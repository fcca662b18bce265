"""The sweep as a picture: per task, every student's score seed by seed, its mean, and the teacher's line."""

from __future__ import annotations

from typing import Any

from kdqat.eval.sweep_table import FULL_PRECISION, metric_label


def plot_sweep(scores_by_which: dict[str, dict], metric_of: dict[str, str]) -> Any:
    """One row per table ("last", "best"), one panel per task: a dot per seed, a bar at the mean, the
    teacher as a dashed line. Returns the matplotlib figure (save it with kdqat.io.save_figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(metric_of)
    fig, axes = plt.subplots(len(scores_by_which), len(tasks), figsize=(3.6 * len(tasks), 3.2 * len(scores_by_which)),
                             squeeze=False)
    for row, (which, scores) in enumerate(scores_by_which.items()):
        presets = [p for p in scores if p != FULL_PRECISION]
        for col, task in enumerate(tasks):
            ax = axes[row][col]
            for x, preset in enumerate(presets):
                values = scores[preset].get(task, [])
                if not values:
                    continue
                offsets = [0.06 * (i - (len(values) - 1) / 2) for i in range(len(values))]
                ax.scatter([x + o for o in offsets], values, s=18, color=f"C{x}", zorder=3)
                ax.hlines(sum(values) / len(values), x - 0.25, x + 0.25, color=f"C{x}", linewidth=2)
            for teacher in scores.get(FULL_PRECISION, {}).get(task, []):
                ax.axhline(teacher, color="black", linestyle="--", linewidth=1)
            ax.set_xticks(range(len(presets)), presets, rotation=20, fontsize=8)
            ax.set_title(f"{task}, {which} evaluation", fontsize=9)
            ax.set_ylabel(metric_label(metric_of[task]), fontsize=8)
            ax.grid(axis="y", alpha=0.3)
    fig.suptitle("W2/A8 students per seed (dots), their mean (bar), the full-precision teacher (dashed)", fontsize=10)
    fig.tight_layout()
    return fig
