"""Results tables from the metrics.json files that `kdqat train` writes."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from kdqat.errors import KdqatError
from kdqat import layout


def read_metrics(run_dir: str | Path) -> dict:
    from kdqat.options import option_names
    from kdqat.run_config import read_run_config

    if (Path(run_dir) / layout.CONFIG).is_file():  # another kdqat's run is refused here as in every command
        read_run_config(Path(run_dir) / layout.CONFIG, option_names())
    path = Path(run_dir) / layout.METRICS
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise KdqatError(f"{path}: not found (is {run_dir} a finished kdqat train folder?)") from None
    except IsADirectoryError:
        raise KdqatError(f"{path}: is a folder, not the metrics.json kdqat train writes") from None
    except json.JSONDecodeError as e:
        raise KdqatError(f"{path}: not valid JSON ({e})") from None
    missing = [k for k in ("task", "metric", "teacher", "student") if not isinstance(data, dict) or k not in data]
    if missing:
        raise KdqatError(f"{path}: not a kdqat train metrics.json (no {', '.join(missing)})")
    if data["student"] is None:
        raise KdqatError(f"{path}: a --teacher-only run has no student to report")
    return data


def results_table(run_dirs: list[str | Path], which: str = "last") -> str:
    """Markdown: one row per model (teacher, then each distillation preset), one column per task.

    which: "last" (static-scale score at the end of training), "best" (best dev evaluation), or "test" (your
    data's test split, scored once for the kept teacher and student; runs without one are refused).
    Teachers shared by several runs of a task are listed once; a preset run twice on a task (another seed or
    option) gets a second row named by its folder.
    """
    if which not in ("last", "best", "test"):
        raise KdqatError(f"--which {which!r} is not one of last, best, test")
    rows: dict[str, dict[str, float]] = defaultdict(dict)
    metric_of: dict[str, str] = {}
    for run in run_dirs:
        m = read_metrics(run)
        task, metric = m["task"], m["metric"]
        metric_of[task] = metric
        student = m["student"]
        if which == "test":
            if "test" not in student or "test" not in m["teacher"]:
                raise KdqatError(f"{run}: no test scores (trained without --test-file / --test-split)")
            name = metric.split("_", 1)[1]
            teacher_score, student_score = m["teacher"]["test"]["scores"][name], student["test"]["scores"][name]
        else:
            record = student["best"] if which == "best" else student["last"].get("static") or student["last"]["dynamic"]
            teacher_score, student_score = m["teacher"]["dev"][metric], record["dev"][metric]
        rows["teacher (fp32)"][task] = teacher_score
        row = f"{student['kd']} (W2/A8, {student['act_scale']})"
        if task in rows[row]:  # a second run of the same preset on the task gets its own row, named by its folder
            row = f"{row}: {run}"
        rows[row][task] = student_score
    tasks = sorted(metric_of)
    header = "| model | " + " | ".join(f"{t} ({metric_of[t].split('_', 1)[1]})" for t in tasks) + " | avg |"
    lines = [header, "|---" * (len(tasks) + 2) + "|"]
    for name, scores in rows.items():
        cells = [f"{scores[t]:.2f}" if t in scores else "-" for t in tasks]
        avg = f"{sum(scores[t] for t in tasks) / len(tasks):.2f}" if all(t in scores for t in tasks) else "-"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {avg} |")
    return "\n".join(lines)
