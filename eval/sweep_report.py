"""A sweep's outputs: sweep.md (last, best and gap tables), sweep.csv, sweep.json and sweep.png, from the tables
(sweep_table) and the plot (sweep_plot)."""

from __future__ import annotations

from pathlib import Path

from kdqat.eval.sweep_plot import plot_sweep
from kdqat.eval.sweep_table import collect, collect_gaps, csv_rows, markdown
from kdqat.io import save_figure, write_json, write_text

NOTE = ("Mean ± sample std over the seeds (n) of each cell; one number where one seed ran. "
        "avg: the mean of the task columns (shown once every task has a score). "
        "gap: each cell's own teacher minus its student at the best evaluation (the student `--keep best` "
        "keeps), in the task's points; positive = below the teacher.")


def write_tables(folders: dict, root: Path) -> str:
    """root/sweep.md (last, best and gap tables), sweep.csv, sweep.json and sweep.png; returns the Markdown."""
    tables, scores_by_which, metric_of = [], {}, {}
    for which in ("last", "best"):
        scores, metric_of = collect(folders, which)
        scores_by_which[which] = scores
        tables.append(f"### {which}\n\n" + markdown(scores, metric_of, which))
    gaps = collect_gaps(folders, "best")
    tables.append("### gap to the teacher (best)\n\n" + markdown(gaps, metric_of, "gap"))
    test_scores, test_metric_of = collect(folders, "test")
    if test_metric_of:  # your data with a test split: scored once for the kept checkpoints
        scores_by_which["test"] = test_scores
        tables.append("### test (kept checkpoints, scored once)\n\n" + markdown(test_scores, test_metric_of, "test"))
        tables.append("### gap to the teacher (test)\n\n" + markdown(collect_gaps(folders, "test"), test_metric_of, "gap"))
    text = "\n\n".join(tables) + "\n\n" + NOTE
    write_text(root / "sweep.md", text + "\n")
    write_text(root / "sweep.csv", csv_rows(scores_by_which, metric_of))
    write_json(root / "sweep.json", {"cells": [{**cell.__dict__, "folder": str(f)} for cell, f in folders.items()]})
    if metric_of:
        save_figure(plot_sweep(scores_by_which, metric_of), root / "sweep.png")
    return text
