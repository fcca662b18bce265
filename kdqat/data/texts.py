"""Unlabelled text for distilling a sentence-embedding student: a text file (one sentence per line), a column of
a CSV / TSV / JSON Lines / JSON / Parquet file or of a Hugging Face dataset, or every sentence of a GLUE task's
train split. Splits come back as Datasets with one column, text_a, like every other source.

Validation texts (selection only) are --validation-file's, else a seeded slice of the training text held out
(validation_fraction of it, at most MAX_HELD_OUT sentences: each evaluation embeds them all).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from datasets import Dataset

from kdqat.data.files import TEXT_COLUMNS, read_file
from kdqat.data.base import DataSource, first_rows, hub_split
from kdqat.data.task import VALIDATION, TaskSpec
from kdqat.errors import KdqatError
from kdqat.objectives.embedding import Embedding

MAX_HELD_OUT = 1000


def embedding_spec(name: str, source: str) -> TaskSpec:
    return TaskSpec(name=name, source=source, labels=None, metric=Embedding.metrics[0], pair=False,
                    dev_splits=(VALIDATION,), objective=Embedding.name)


def text_column_of(ds: Dataset, given: str | None, origin: str) -> str:
    if given is not None:
        if given not in ds.column_names:
            raise KdqatError(f"{origin}: no column {given!r} (--text-column); its columns: {', '.join(ds.column_names)}")
        return given
    found = next((c for c in TEXT_COLUMNS if c in ds.column_names), None)
    if found is None:
        if len(ds.column_names) == 1:
            return ds.column_names[0]
        raise KdqatError(f"{origin}: which column holds the text? None of the usual names ({', '.join(TEXT_COLUMNS)}); "
                         f"its columns: {', '.join(ds.column_names)}: give --text-column")
    return found


def sentences(ds: Dataset, columns: list[str], origin: str) -> Dataset:
    """The non-empty strings of `columns`, stripped, in file order, each once (a GLUE pair task repeats its
    premises and questions), as a Dataset with the column text_a."""
    seen: set[str] = set()
    out: list[str] = []
    for column in columns:
        for row, value in enumerate(ds[column]):
            if value is None:
                continue
            if not isinstance(value, str):
                raise KdqatError(f"{origin}: row {row + 1} of column {column!r} is {type(value).__name__}, not text")
            text = value.strip()
            if text and text not in seen:
                seen.add(text)
                out.append(text)
    if not out:
        raise KdqatError(f"{origin}: no text in column(s) {', '.join(columns)}")
    return Dataset.from_dict({"text_a": out})


def held_out_size(n: int, fraction: float) -> int:
    return max(1, min(MAX_HELD_OUT, math.ceil(n * fraction)))


@dataclass
class TextSource(DataSource):
    """Sentences to distil on. settings: the run's data settings (kdqat.options.DATA_FIELDS)."""

    settings: dict = field(default_factory=dict)
    seed: int = 42
    _ready: dict[str, Dataset] = field(default_factory=dict)

    def load(self, split: str, max_samples: int | None = None) -> Dataset:
        if not self._ready:
            self._ready = self._read()
        if split not in self._ready:
            raise KdqatError(f"no {split} text for this embedding run (it has {', '.join(self._ready)})")
        return first_rows(self._ready[split], max_samples)

    def _read(self) -> dict[str, Dataset]:
        s = self.settings
        if self.task.source == "glue":
            from kdqat.glue.data import load_split
            from kdqat.glue.tasks import get_task

            raw = load_split(get_task(self.task.name), "train", s.get("data_dir"))
            train = sentences(raw, [c for c in ("text_a", "text_b") if c in raw.column_names], f"{self.task.name} train")
            validation = None
        elif s.get("dataset"):
            train = self._hub("train", s.get("train_split") or "train", "--train-split")
            validation = self._hub(VALIDATION, s["validation_split"], "--validation-split") if s.get("validation_split") else None
        else:
            train = self._file(s["train_file"], "--train-file")
            validation = self._file(s["validation_file"], "--validation-file") if s.get("validation_file") else None
        if validation is None:  # a seeded slice of the training text, never trained on
            n = held_out_size(len(train), s.get("validation_fraction", 0.1))
            if len(train) - n < 1:
                raise KdqatError(f"{len(train)} training sentence(s): too few to hold out validation text; give more "
                                 "text or --validation-file")
            parts = train.train_test_split(test_size=n, seed=self.seed, shuffle=True)
            train, validation = parts["train"], parts["test"]
        return {"train": train, VALIDATION: validation}

    def _file(self, path: str, option: str) -> Dataset:
        ds = read_file(path, option)
        return sentences(ds, [text_column_of(ds, self.settings.get("text_column"), str(path))], str(path))

    def _hub(self, split: str, name: str, option: str) -> Dataset:
        ds, origin = hub_split(self.settings["dataset"], self.settings.get("dataset_config"), name, option)
        return sentences(ds, [text_column_of(ds, self.settings.get("text_column"), origin)], origin)
