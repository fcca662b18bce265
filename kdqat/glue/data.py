"""GLUE splits as `datasets.Dataset` with columns text_a, text_b (pair tasks) and label.

Sources, in order: a GLUE_DIR-layout folder (`data_dir`, else env GLUE_DIR), read with quoting off and
checked row by row; otherwise the Hugging Face hub (nyu-mll/glue) where it is reachable.
"""

from __future__ import annotations

import csv
import io
import math
import os
import sys
from pathlib import Path

from datasets import Dataset

from kdqat.glue.tasks import Column, GlueTask
from kdqat.errors import KdqatError, first_line

HUB_DATASET = "nyu-mll/glue"

csv.field_size_limit(sys.maxsize)


def _column_index(task: GlueTask, col: Column, header: list[str] | None, path: Path) -> int:
    if header is None:
        return col.index
    if col.name not in header:
        raise KdqatError(f"{path}:1: column {col.name!r} missing from the header ({', '.join(header)})")
    return header.index(col.name)


def _read_text(path: Path) -> str:
    """The file as text: UTF-8, a leading byte-order mark dropped (MRPC's files and Windows tools write one)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise KdqatError(f"{path}:{line}: not valid UTF-8 (byte 0x{data[e.start]:02x}); save the file as UTF-8") from None


def _score(task: GlueTask, text: str, path: Path, lineno: int) -> float:
    """A regression label: a finite number inside the task's range."""
    try:
        value = float(text)
    except ValueError:
        raise KdqatError(f"{path}:{lineno}: score {text!r} is not a number") from None
    low, high = task.score_range or (-math.inf, math.inf)
    if not (math.isfinite(value) and low <= value <= high):
        raise KdqatError(f"{path}:{lineno}: score {text!r} is outside {low:g}-{high:g}" if math.isfinite(value)
                         else f"{path}:{lineno}: score {text!r} is not a finite number")
    return value


def read_tsv(task: GlueTask, path: Path) -> Dataset:
    """Read one GLUE_DIR split, stopping at the first malformed row with the file and line."""
    if not path.is_file():
        raise KdqatError(f"{path}: file not found (expected the {task.dir_name} split in GLUE_DIR layout)")
    rows = list(csv.reader(io.StringIO(_read_text(path), newline=""), delimiter="\t", quoting=csv.QUOTE_NONE))
    header = rows.pop(0) if task.has_header and rows else None
    first_line = 2 if header is not None else 1
    if task.has_header and header is None:
        raise KdqatError(f"{path}: empty file")
    columns = [task.text_a] + ([task.text_b] if task.text_b else []) + [task.label]
    idx = [_column_index(task, c, header, path) for c in columns]
    n_fields = len(header) if header is not None else None
    text_a, text_b, labels = [], [], []
    for lineno, row in enumerate(rows, start=first_line):
        if not row:
            continue
        if n_fields is None:
            n_fields = len(row)
        if len(row) != n_fields or max(idx) >= len(row):
            raise KdqatError(f"{path}:{lineno}: expected {n_fields} tab-separated fields, found {len(row)}")
        label = row[idx[-1]].strip()
        if task.is_regression:
            value: float | int = _score(task, label, path, lineno)
        else:
            if label not in task.labels:
                raise KdqatError(f"{path}:{lineno}: unknown label {label!r} for {task.name} (expected {', '.join(task.labels)})")
            value = task.labels.index(label)
        text_a.append(row[idx[0]])
        if task.text_b:
            text_b.append(row[idx[1]])
        labels.append(value)
    if not labels:
        raise KdqatError(f"{path}: the split is empty")
    data = {"text_a": text_a, "label": labels}
    if task.text_b:
        data["text_b"] = text_b
    return Dataset.from_dict(data)


def _from_hub(task: GlueTask, split: str) -> Dataset:
    from datasets import load_dataset

    hub_split = {"dev": "validation", "dev_matched": "validation_matched", "dev_mismatched": "validation_mismatched"}.get(split, split)
    ds = load_dataset(HUB_DATASET, task.name, split=hub_split)
    a, b = task.hub_columns
    ds = ds.rename_column(a, "text_a")
    if b:
        ds = ds.rename_column(b, "text_b")
    keep = {"text_a", "text_b", "label"}
    return ds.remove_columns([c for c in ds.column_names if c not in keep])


def resolve_data_dir(data_dir: str | Path | None) -> Path | None:
    """The GLUE_DIR to read: the option, else the GLUE_DIR environment variable, else None (hub)."""
    chosen = data_dir if data_dir is not None else os.environ.get("GLUE_DIR")
    if chosen is None:
        return None
    path = Path(chosen)
    if not path.is_dir():
        origin = "--data-dir" if data_dir is not None else "GLUE_DIR"
        raise KdqatError(f"{origin} {path}: no such folder")
    return path


def load_split(task: GlueTask, split: str, data_dir: str | Path | None = None, max_samples: int | None = None) -> Dataset:
    """Load `split` ("train", "dev", or MNLI's "dev_matched"/"dev_mismatched") of a task."""
    root = resolve_data_dir(data_dir)
    if root is not None:
        ds = read_tsv(task, root / task.dir_name / f"{split}.tsv")
    else:
        try:
            ds = _from_hub(task, split)
        except Exception as e:  # any hub failure ends in the same advice
            raise KdqatError(
                f"no GLUE data for {task.name}: no --data-dir given, GLUE_DIR is unset, and loading "
                f"{HUB_DATASET} from the Hugging Face hub failed ({type(e).__name__}: {first_line(e)}); "
                f"pass --data-dir pointing at a folder with {task.dir_name}/{split}.tsv"
            ) from None
    if max_samples is not None and max_samples < len(ds):
        ds = ds.select(range(max_samples))
    return ds


def encode(ds: Dataset, tokenizer, max_length: int) -> dict[str, list[list[int]]]:
    """Token ids, attention masks and token types of a split, unpadded (one list per example)."""
    pair = "text_b" in ds.column_names
    enc = tokenizer(list(ds["text_a"]), list(ds["text_b"]) if pair else None, truncation=True, max_length=max_length)
    return {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
