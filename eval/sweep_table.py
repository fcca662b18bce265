"""The paper-style table of a sweep: one row per preset, one column per task, mean +- std over seeds."""

from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from pathlib import Path

from kdqat.eval.report import read_metrics
from kdqat import layout

FULL_PRECISION = "full precision (teacher)"


def _cells(cell_dirs: dict, which: str):
    """(cell, metric key, its teacher's score, the student's score) of every finished cell; which: last, best (dev)
    or test (cells with test scores only)."""
    for cell, folder in cell_dirs.items():
        if not (Path(folder) / layout.METRICS).is_file():
            continue
        m = read_metrics(folder)
        metric = m["metric"]
        student = m["student"]
        if which == "test":  # your data's test split, scored once for the kept teacher and student
            if "test" in student and "test" in m["teacher"]:
                name = metric_label(metric)
                yield cell, metric, m["teacher"]["test"]["scores"][name], student["test"]["scores"][name]
            continue
        record = student["best"] if which == "best" else (student["last"].get("static") or student["last"]["dynamic"])
        yield cell, metric, m["teacher"]["dev"][metric], record["dev"][metric]


def collect(cell_dirs: dict, which: str) -> tuple[dict[str, dict[str, list[float]]], dict[str, str]]:
    """scores[row][task] = one score per seed (row = preset name), and each task's metric key."""
    scores: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    metric_of: dict[str, str] = {}
    teachers_seen: set[tuple[str, float]] = set()
    for cell, metric, teacher, student in _cells(cell_dirs, which):
        metric_of.setdefault(cell.task, metric)
        if (cell.task, teacher) not in teachers_seen:  # one teacher per task, listed once
            teachers_seen.add((cell.task, teacher))
            scores[FULL_PRECISION][cell.task].append(teacher)
        scores[cell.preset][cell.task].append(student)
    return scores, metric_of


def collect_gaps(cell_dirs: dict, which: str) -> dict[str, dict[str, list[float]]]:
    """gaps[preset][task] = per seed, the cell's own teacher's score minus its student's (positive: below)."""
    gaps: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for cell, _, teacher, student in _cells(cell_dirs, which):
        gaps[cell.preset][cell.task].append(teacher - student)
    return gaps


def metric_label(key: str) -> str:
    """'dev_accuracy' -> 'accuracy': how a metric key is shown in tables and plots."""
    return key.split("_", 1)[1]


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def markdown(scores: dict, metric_of: dict[str, str], which: str) -> str:
    tasks = list(metric_of)
    lines = [f"| {which} | " + " | ".join(f"{t} ({metric_label(metric_of[t])})" for t in tasks) + " | avg |",
             "|---" * (len(tasks) + 2) + "|"]
    for row, per_task in scores.items():
        cells, means = [], []
        for t in tasks:
            if per_task.get(t):
                mean, std = _mean_std(per_task[t])
                means.append(mean)
                n = len(per_task[t])
                cells.append(f"{mean:.2f} ± {std:.2f} (n={n})" if n > 1 else f"{mean:.2f}")
            else:
                cells.append("-")
        avg = f"{statistics.fmean(means):.2f}" if len(means) == len(tasks) else "-"
        lines.append(f"| {row} | " + " | ".join(cells) + f" | {avg} |")
    return "\n".join(lines)


def csv_rows(scores_by_which: dict[str, dict], metric_of: dict[str, str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["which", "model", "task", "metric", "mean", "std", "n", "scores"])
    for which, scores in scores_by_which.items():
        for row, per_task in scores.items():
            for task, values in per_task.items():
                mean, std = _mean_std(values)
                writer.writerow([which, row, task, metric_of[task], f"{mean:.4f}", f"{std:.4f}", len(values),
                                 " ".join(f"{v:.4f}" for v in values)])
    return buf.getvalue()
