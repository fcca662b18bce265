"""`kdqat sweep`: tasks x distillation presets x seeds, one teacher per task, resumable cell by cell.

Layout: OUT/<task>/<preset>/seed<S>/ is a `kdqat train` folder. The first cell of a task to run fine-tunes
the task's teacher (into its own teacher/); every later cell of the task, in this sweep or in one that
extends the grid with more presets or seeds, distils from that same teacher. A cell whose metrics.json
exists is finished and is not run again; an interrupted one resumes from its checkpoint.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kdqat.errors import KdqatError
from kdqat.losses import PRESETS
from kdqat.train import TrainOptions, train
from kdqat import layout


@dataclass(frozen=True)
class Cell:
    task: str
    preset: str  # a PRESETS name, or "gamma-<on>-<g>" for the unified form
    seed: int
    kd: str = "map+output"
    gamma: float | None = None
    gamma_on: str | None = None

    def folder(self, root: Path) -> Path:
        return root / self.task / self.preset / f"seed{self.seed}"


def grid(tasks: list[str], presets: list[str], seeds: list[int], gammas: list[float] = (),
         gamma_on: str | None = None, glue_only: bool = True) -> list[Cell]:
    """Every cell, task by task (so a task's teacher comes first), presets then gammas, then seeds. `glue_only`:
    every task must be a GLUE task (a sweep trains GLUE tasks; its tables also read your data's runs)."""
    from kdqat.glue.tasks import get_task

    if glue_only:
        tasks = [get_task(task).name for task in tasks]  # every task checked before the first cell trains
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        raise KdqatError(f"--presets {', '.join(unknown)}: use {', '.join(PRESETS)}")
    if gammas and gamma_on not in ("map", "output"):
        raise KdqatError("--gammas needs --gamma-on map|output")
    if not tasks or not seeds or not (presets or gammas):
        raise KdqatError("a sweep needs at least one task, one seed and one preset or gamma")
    variants = [dict(preset=p, kd=p) for p in presets]
    variants += [dict(preset=f"gamma-{gamma_on}-{g:g}", gamma=g, gamma_on=gamma_on) for g in gammas]
    return [Cell(task, seed=seed, **v) for task in tasks for v in variants for seed in seeds]


def run_sweep(cells: list[Cell], root: Path, base: TrainOptions,
              on_cell: Callable[[Cell, str], None] | None = None) -> dict[Cell, Path]:
    """Run every unfinished cell; returns each cell's folder. `on_cell(cell, "done"|"ran")` reports progress.

    A task's teacher is looked up only when one of its cells still has to run, so a sweep whose cells are
    all finished tabulates from their metrics.json alone (e.g. results kept without the checkpoints).
    """
    folders: dict[Cell, Path] = {}
    for cell in cells:
        out = cell.folder(root)
        folders[cell] = out
        if (out / layout.METRICS).is_file():
            status = "done"
        else:
            teacher = _task_teacher(root, cell.task, base)
            opts = dataclasses.replace(base, task=cell.task, output_dir=str(out), seed=cell.seed, kd=cell.kd,
                                       gamma=cell.gamma, gamma_on=cell.gamma_on,
                                       teacher=str(teacher) if teacher else None)
            train(opts)
            status = "ran"
        if on_cell is not None:
            on_cell(cell, status)
    return folders


def _task_teacher(root: Path, task: str, base: TrainOptions) -> Path | None:
    """--teacher, else the teacher a cell of the task fine-tuned earlier; None: this cell fine-tunes it."""
    if base.teacher:
        return Path(base.teacher)
    teachers = sorted(p.parent for p in root.glob(f"{task}/*/seed*/teacher/config.json"))
    if teachers:
        return teachers[0]
    finished = sorted(root.glob(f"{task}/*/seed*/metrics.json"))
    if finished:
        raise KdqatError(f"{finished[0].parent}: finished {task} cells exist but no teacher/ is left for the others "
                         "to distil from; give --teacher (the same fine-tuned teacher) or remove those cells")
    return None
