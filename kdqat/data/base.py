"""The interface every data source implements, and what the sources share: a split's first rows and a split of a
Hugging Face dataset read with a one-line error."""

from __future__ import annotations

from dataclasses import dataclass

from datasets import Dataset

from kdqat.data.task import TaskSpec
from kdqat.errors import KdqatError, first_line


@dataclass
class DataSource:
    """A task and its splits. `load(split)` returns the split with text_a, text_b (pairs) and label (labelled
    objectives), or text_a alone (unlabelled text)."""

    task: TaskSpec

    def load(self, split: str, max_samples: int | None = None) -> Dataset:
        raise NotImplementedError

    @property
    def splits(self) -> tuple[str, ...]:
        """Every split the later stages score: the dev splits, then the test split if there is one."""
        return self.task.dev_splits + ((self.task.test_split,) if self.task.test_split else ())


def first_rows(ds: Dataset, max_samples: int | None) -> Dataset:
    return ds.select(range(max_samples)) if max_samples is not None and max_samples < len(ds) else ds


def hub_split(name: str, config: str | None, split: str, option: str) -> tuple[Dataset, str]:
    """One split of a Hugging Face dataset and where it came from, e.g. "banking77[train]"."""
    from datasets import load_dataset

    origin = f"{name}{'/' + config if config else ''}[{split}]"
    try:
        return load_dataset(name, config, split=split), origin
    except Exception as e:  # unreachable hub, unknown dataset or split: one line with the reason
        raise KdqatError(f"--dataset {name} {option} {split}: cannot load it ({first_line(e)})") from None
