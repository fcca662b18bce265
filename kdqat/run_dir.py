"""The output folder of `kdqat train`, read back by the later stages (export, eval, bench)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kdqat.data.task import TaskSpec
from kdqat.errors import KdqatError
from kdqat.config import QUANT_CONFIG_FILE
from kdqat.objectives import objective_of
from kdqat.run_config import read_run_config
from kdqat import layout


@dataclass(frozen=True)
class TrainedRun:
    root: Path
    student: Path
    teacher: Path | None  # None when the run's teacher folder cannot be found any more
    task: str
    max_seq_length: int
    data_dir: str | None
    spec: TaskSpec  # labels, pairs, splits, metric
    options: dict  # the run's resolved options (its data settings and seed among them)

    def data_source(self, data_dir: str | None = None, **overrides):
        """The run's data, as kdqat train read it (GLUE: `data_dir`, else the run's; your files: `overrides` such as
        test_file replace the recorded settings)."""
        from kdqat.data.source import source_for_run
        from kdqat.options import DATA_FIELDS, TrainOptions

        defaults = TrainOptions(task=None, output_dir="")  # what a run recorded before a setting existed
        settings = {name: self.options.get(name, getattr(defaults, name)) for name in DATA_FIELDS}
        settings.update({k: v for k, v in overrides.items() if v is not None})
        return source_for_run(self.spec, settings, self.options.get("seed", defaults.seed), data_dir)


def open_run(path: str | Path) -> TrainedRun:
    """A `kdqat train` output folder (DIR with DIR/student), or its student folder itself."""
    path = Path(path)
    if not path.is_dir():
        raise KdqatError(f"{path}: no such folder (pass the --output-dir of kdqat train)")
    root = path.parent if (path / QUANT_CONFIG_FILE).is_file() else path
    student = root / layout.STUDENT if (root / layout.STUDENT).is_dir() else path
    if not (student / QUANT_CONFIG_FILE).is_file():
        raise KdqatError(f"{path}: not a kdqat run (no student/{QUANT_CONFIG_FILE}); pass the --output-dir of a finished kdqat train")
    config_file = root / layout.CONFIG
    from kdqat.options import option_names

    saved = read_run_config(config_file, option_names())  # missing, unreadable or another kdqat's: one line
    try:
        options = saved["options"]
        task, length = options["task"], int(options["max_seq_length"])
        spec = TaskSpec.from_dict(saved["task_spec"], str(config_file)) if "task_spec" in saved else _glue_spec(task, config_file)
    except (KeyError, TypeError, ValueError):
        raise KdqatError(f"{config_file}: unreadable or not written by kdqat train") from None
    teacher = objective_of(spec).teacher_folder(root, options)
    return TrainedRun(root, student, teacher, task, length, options.get("data_dir"), spec, options)


def _glue_spec(task: str, config_file: Path) -> TaskSpec:
    """A run from before task_spec was recorded: always a GLUE task."""
    from kdqat.data.source import glue_spec

    try:
        return glue_spec(task)
    except KdqatError:
        raise KdqatError(f"{config_file}: task {task!r} is not a GLUE task and the file records no task_spec") from None
