"""kdqat sweep: the grid, one teacher per task, finished cells skipped, the mean +- std table."""

from __future__ import annotations

import pytest

from kdqat.eval.sweep_table import FULL_PRECISION, collect, collect_gaps, csv_rows, markdown
from kdqat import KdqatError
from kdqat.sweep import Cell, grid, run_sweep
from kdqat.train import TrainOptions


def test_grid_orders_tasks_then_variants_then_seeds():
    cells = grid(["rte", "stsb"], ["ternarybert"], [1, 2], gammas=[0.5], gamma_on="output")
    assert [(c.task, c.preset, c.seed) for c in cells] == [
        ("rte", "ternarybert", 1), ("rte", "ternarybert", 2), ("rte", "gamma-output-0.5", 1), ("rte", "gamma-output-0.5", 2),
        ("stsb", "ternarybert", 1), ("stsb", "ternarybert", 2), ("stsb", "gamma-output-0.5", 1), ("stsb", "gamma-output-0.5", 2)]
    assert cells[2].gamma == 0.5 and cells[2].gamma_on == "output"


@pytest.mark.parametrize("args, message", [
    ((["rte"], ["minilm"], [1]), "--presets minilm"),
    ((["rte"], [], [1], [0.5]), "--gammas needs --gamma-on"),
    ((["rte"], ["map"], []), "at least one"),
])
def test_bad_grids_are_refused(args, message):
    with pytest.raises(KdqatError, match=message):
        grid(*args)


def test_sweep_shares_the_teacher_skips_finished_cells_and_tabulates(tmp_path, tiny_model_dir, glue_dir):
    cells = grid(["rte"], ["ternarybert", "map+output"], [1, 2])
    base = TrainOptions(task="rte", output_dir=str(tmp_path), model=str(tiny_model_dir), data_dir=str(glue_dir),
                        max_train_samples=16, max_eval_samples=8, batch_size=8, max_steps=2, progress=False)
    seen = []
    folders = run_sweep(cells, tmp_path, base, lambda cell, status: seen.append(status))
    assert seen == ["ran"] * 4
    first = cells[0].folder(tmp_path)
    assert (first / "teacher").is_dir()
    assert not any((cell.folder(tmp_path) / "teacher").exists() for cell in cells[1:])  # one teacher per task
    import json

    assert json.loads((cells[3].folder(tmp_path) / "config.json").read_text())["options"]["teacher"] == str(first / "teacher")
    seen.clear()
    run_sweep(cells, tmp_path, base, lambda cell, status: seen.append(status))
    assert seen == ["done"] * 4  # resumable: nothing is retrained

    scores, metric_of = collect(folders, "last")
    assert metric_of == {"rte": "dev_accuracy"}
    assert list(scores) == [FULL_PRECISION, "ternarybert", "map+output"]
    assert len(scores[FULL_PRECISION]["rte"]) == 1 and len(scores["ternarybert"]["rte"]) == 2
    table = markdown(scores, metric_of, "last").splitlines()
    assert table[0] == "| last | rte (accuracy) | avg |"
    values = scores["ternarybert"]["rte"]
    import statistics

    assert f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f} (n=2)" in table[3]
    assert csv_rows({"last": scores}, metric_of).splitlines()[0] == "which,model,task,metric,mean,std,n,scores"
    records = [json.loads((cell.folder(tmp_path) / "metrics.json").read_text()) for cell in cells[2:]]
    own_gaps = [m["teacher"]["dev"]["dev_accuracy"] - m["student"]["best"]["dev"]["dev_accuracy"] for m in records]
    assert collect_gaps(folders, "best")["map+output"]["rte"] == pytest.approx(own_gaps)  # each against its own teacher

    import shutil

    shutil.rmtree(first / "teacher")  # results kept without checkpoints still tabulate
    assert set(run_sweep(cells, tmp_path, base)) == set(cells)
    (cells[3].folder(tmp_path) / "metrics.json").unlink()  # ... but a cell to rerun needs the teacher
    with pytest.raises(KdqatError, match="no teacher/ is left"):
        run_sweep(cells, tmp_path, base)


def test_an_extended_sweep_reuses_the_task_teacher(tmp_path, tiny_model_dir, glue_dir):
    base = TrainOptions(task="rte", output_dir=str(tmp_path), model=str(tiny_model_dir), data_dir=str(glue_dir),
                        max_train_samples=16, max_eval_samples=8, batch_size=8, max_steps=1, progress=False)
    first = grid(["rte"], ["ternarybert"], [1])
    run_sweep(first, tmp_path, base)
    teacher = first[0].folder(tmp_path) / "teacher"
    more = grid(["rte"], ["map"], [1])  # a later sweep adds a preset: its first cell must not fine-tune anew
    run_sweep(more, tmp_path, base)
    import json

    assert not (more[0].folder(tmp_path) / "teacher").exists()
    assert json.loads((more[0].folder(tmp_path) / "config.json").read_text())["options"]["teacher"] == str(teacher)


def test_cell_folders_are_stable():
    from pathlib import Path

    assert Cell("rte", "map", 42).folder(Path("out")) == Path("out/rte/map/seed42")


def test_sweep_plot_shows_every_seed_its_mean_and_the_teacher():
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.collections import LineCollection, PathCollection

    from kdqat.eval.sweep_plot import plot_sweep

    scores = {FULL_PRECISION: {"rte": [57.0], "cola": [25.6]},
              "ternarybert": {"rte": [54.9, 55.6, 53.1], "cola": [15.0]},
              "map+output": {"rte": [53.1, 52.0, 54.2]}}  # no cola cell yet: its panel leaves it out
    fig = plot_sweep({"last": scores, "best": scores}, {"rte": "dev_accuracy", "cola": "dev_mcc"})
    assert len(fig.axes) == 4 and [a.get_title() for a in fig.axes[:2]] == ["rte, last evaluation", "cola, last evaluation"]
    rte, cola = fig.axes[0], fig.axes[1]
    dots = [sorted(c.get_offsets()[:, 1]) for c in rte.collections if isinstance(c, PathCollection)]
    assert dots == [sorted(scores["ternarybert"]["rte"]), sorted(scores["map+output"]["rte"])]
    means = [seg[0][1] for c in rte.collections if isinstance(c, LineCollection) for seg in c.get_segments()]
    assert np.allclose(means, [np.mean(scores["ternarybert"]["rte"]), np.mean(scores["map+output"]["rte"])])
    assert [line.get_ydata()[0] for line in rte.get_lines()] == [57.0]  # the teacher's dashed line
    assert len([c for c in cola.collections if isinstance(c, PathCollection)]) == 1
    assert [t.get_text() for t in cola.get_xticklabels()] == ["ternarybert", "map+output"]
    plt.close(fig)
