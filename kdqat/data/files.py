"""Your own labelled data: CSV, TSV, JSON Lines, JSON or Parquet files, or a Hugging Face dataset, read through
the `datasets` library's builders (Arrow, memory-mapped) into the columns every stage uses: text_a, text_b
(pairs) and label (a class id, or a float score for a regression).

Every check runs over Arrow in batches (`Dataset.map`), never over Python lists of the whole file, and stops at
the first bad row with the file and line (CSV, TSV, JSON Lines) or row (JSON, Parquet).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

from datasets import ClassLabel, Dataset, Value

from kdqat.errors import KdqatError, first_line

log = logging.getLogger(__name__)

# file suffix -> (datasets builder, its options). TSV follows the IANA text/tab-separated-values rules (no
# quoting: a field holds no tab or newline), which is also how GLUE's TSVs are written.
BUILDERS: dict[str, tuple[str, dict]] = {
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"sep": "\t", "quoting": csv.QUOTE_NONE}),
    ".jsonl": ("json", {}),
    ".json": ("json", {}),
    ".parquet": ("parquet", {}),
    ".txt": ("text", {}),  # one text per line (column "text"): unlabelled text for an embedding student
}
# the usual column names, tried in this order when --text-column / --text-pair-column / --label-column are not given
PAIR_COLUMNS = (("sentence1", "sentence2"), ("premise", "hypothesis"), ("question1", "question2"),
                ("question", "sentence"), ("text", "text_pair"), ("query", "passage"))
TEXT_COLUMNS = ("text", "sentence", "question", "query", "utterance", "content", "review", "document")
LABEL_COLUMNS = ("label", "labels", "intent", "category", "class", "target", "score")
PROBLEMS = ("classification", "regression")
_PANDAS_LINE = re.compile(r"[Ee]xpected (\d+) fields in line (\d+), saw (\d+)")


@dataclass(frozen=True)
class Columns:
    """Which columns of the files hold the text, the second text of a pair, and the label."""

    text: str
    pair: str | None
    label: str


def suffix_of(path: Path, option: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in BUILDERS:
        raise KdqatError(f"{option} {path}: unsupported file type {suffix or '(none)'!r}; use one of "
                         f"{', '.join(BUILDERS)}")
    return suffix


def read_file(path: str | Path, option: str) -> Dataset:
    """One data file as an Arrow-backed Dataset (cached by `datasets`, memory-mapped; a .json document is parsed
    whole, as JSON must be). A file that does not read ends in one line, `FILE:LINE: ...` where a line is at fault."""
    from datasets import load_dataset
    from datasets.utils import logging as datasets_logging

    path = Path(path)
    suffix = suffix_of(path, option)
    if not path.is_file():
        raise KdqatError(f"{option} {path}: no such file")
    if suffix == ".json":
        ds = _read_json_document(path)
    else:
        builder, kwargs = BUILDERS[suffix]
        verbosity = datasets_logging.get_verbosity()
        datasets_logging.set_verbosity(datasets_logging.CRITICAL)  # its "Failed to read file" lines precede ours
        try:
            ds = load_dataset(builder, data_files=str(path.resolve()), split="train", **kwargs)
        except Exception as e:  # the builders raise pandas, pyarrow and their own errors: all become one line
            raise KdqatError((suffix == ".jsonl" and _bad_json_line(path)) or _read_error(path, e)) from None
        finally:
            datasets_logging.set_verbosity(verbosity)
    if len(ds) == 0:
        raise KdqatError(f"{path}: no rows")
    return ds


RECORDS = '[{"text": ..., "label": ...}, ...]'
COLUMNS = '{"text": [...], "label": [...]}'


def _kind(value) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def _bad_json_line(path: Path) -> str | None:
    """`FILE:LINE: ...` for the first line of a JSON Lines file that is not one JSON object (None: every line is)."""
    try:
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line.rstrip("\r\n"))
                except json.JSONDecodeError as e:
                    return f"{path}:{number}: not valid JSON ({e.msg} at column {e.colno})"
                if not isinstance(record, dict):
                    return f"{path}:{number}: {_kind(record)}, not an object; JSON Lines holds one record a line, " \
                           '{"text": ..., "label": ...}'
    except UnicodeDecodeError:
        return f"{path}: not valid UTF-8; save the file as UTF-8"
    return None


def _read_json_document(path: Path) -> Dataset:
    """A .json file: an array of records, or an object of equal-length columns."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise KdqatError(f"{path}: not valid UTF-8; save the file as UTF-8") from None
    except json.JSONDecodeError as e:
        raise KdqatError(f"{path}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
    try:
        if isinstance(data, list):
            odd = next((i for i, record in enumerate(data) if not isinstance(record, dict)), None)
            if odd is not None:
                raise KdqatError(f"{path}: row {odd + 1} is {_kind(data[odd])}, not an object; expected an array of "
                                 f"records {RECORDS}")
            return Dataset.from_list(data)
        if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
            lengths = {name: len(v) for name, v in data.items()}
            if len(set(lengths.values())) > 1:
                raise KdqatError(f"{path}: its columns differ in length ({', '.join(f'{k}: {n}' for k, n in lengths.items())})")
            return Dataset.from_dict(data)
    except KdqatError:
        raise
    except Exception as e:  # pyarrow: a column whose values are of different types
        raise KdqatError(_read_error(path, e)) from None
    raise KdqatError(f"{path}: {_kind(data)}; expected an array of records {RECORDS} or an object of "
                     f"equal-length columns {COLUMNS}")


def _read_error(path: Path, error: Exception) -> str:
    """The innermost reason a builder gave, as `FILE:LINE: ...` where it names a line."""
    causes, e = [], error
    while e is not None and len(causes) < 10:
        causes.append(e)
        e = e.__cause__ or e.__context__
    text = " / ".join(first_line(c) for c in causes if str(c).strip())
    match = _PANDAS_LINE.search(text)
    if match:
        expected, line, found = match.groups()
        return f"{path}:{line}: expected {expected} fields, found {found} (a separator inside an unquoted field?)"
    if "changed from" in text or "cannot mix" in text.lower() or "could not convert" in text.lower():
        return f"{path}: a column mixes value types (numbers and strings): {text}"
    if isinstance(causes[-1], UnicodeDecodeError):
        return f"{path}: not valid UTF-8; save the file as UTF-8"
    return f"{path}: cannot read it ({type(causes[-1]).__name__}: {text[:300]})"


def where(path: str, row: int) -> str:
    """`FILE:LINE` of a 0-based data row for line-based files (one header line in CSV/TSV), else `FILE: row N`."""
    suffix = Path(path).suffix.lower()
    if suffix in (".csv", ".tsv"):
        return f"{path}:{row + 2}"
    if suffix == ".jsonl":
        return f"{path}:{row + 1}"
    return f"{path}: row {row + 1}"


def choose_columns(columns: list[str], origin: str, text: str | None, pair: str | None, label: str | None) -> Columns:
    """The given columns (each checked to exist), else the usual names; the choice is logged."""
    def check(name: str, option: str) -> str:
        if name not in columns:
            raise KdqatError(f"{option} {name!r}: {origin} has no such column; its columns: {', '.join(columns)}")
        return name

    guessed = []
    if text is not None:
        text = check(text, "--text-column")
        if pair is not None:
            pair = check(pair, "--text-pair-column")
    else:
        if pair is not None:
            raise KdqatError("--text-pair-column needs --text-column too")
        found = next(((a, b) for a, b in PAIR_COLUMNS if a in columns and b in columns), None)
        if found is None:
            found = (next((c for c in TEXT_COLUMNS if c in columns), None), None)
        text, pair = found
        if text is None:
            raise KdqatError(f"{origin}: no text column among the usual names ({', '.join(TEXT_COLUMNS)}); "
                             f"name it with --text-column (its columns: {', '.join(columns)})")
        guessed.append("text")
    if label is not None:
        label = check(label, "--label-column")
    else:
        label = next((c for c in LABEL_COLUMNS if c in columns and c not in (text, pair)), None)
        if label is None:
            raise KdqatError(f"{origin}: no label column among the usual names ({', '.join(LABEL_COLUMNS)}); "
                             f"name it with --label-column (its columns: {', '.join(columns)})")
        guessed.append("label")
    if label in (text, pair):
        raise KdqatError(f"--label-column {label!r} is also a text column")
    chosen = Columns(text, pair, label)
    if guessed:
        log.info("data: text column %r%s, label column %r (pass --text-column/--text-pair-column/--label-column "
                 "to choose others)", chosen.text, f", pair column {chosen.pair!r}" if chosen.pair else "", chosen.label)
    return chosen


def problem_of(ds: Dataset, label: str, given: str | None, origin: str) -> str:
    """classification (strings, integers, booleans) or regression (floats), unless --problem says."""
    if given is not None:
        if given not in PROBLEMS:
            raise KdqatError(f"--problem {given!r} is not one of {', '.join(PROBLEMS)}")
        return given
    feature = ds.features[label]
    if not isinstance(feature, (Value, ClassLabel)):  # datasets keeps a column of mixed JSON types as Json
        raise KdqatError(f"{origin}: the label column {label!r} mixes value types (numbers and strings); "
                         "write every label the same way")
    dtype = getattr(feature, "dtype", None)
    if isinstance(feature, ClassLabel) or dtype in ("string", "large_string", "bool") or str(dtype).startswith(("int", "uint")):
        return "classification"
    if str(dtype).startswith("float"):
        return "regression"
    raise KdqatError(f"{origin}: label column {label!r} holds {feature}; give --problem classification|regression")


def _name(value) -> str | None:
    """A label value as its name: strings as they are, 3 and 3.0 as "3", booleans as "true"/"false"."""
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value).strip() or None


def _sort_key(name: str):
    """Numeric label names in numeric order (2 before 10), then the others alphabetically."""
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


def label_names(ds: Dataset, label: str, origin: str) -> tuple[str, ...]:
    """The classes of a training split, sorted (numbers numerically); refused when there is only one."""
    feature = ds.features[label]
    values = feature.names if isinstance(feature, ClassLabel) else ds.unique(label)
    names = {_name(v) for v in values}
    if None in names:
        row = next(i for i, v in enumerate(ds[label]) if _name(v) is None)
        raise KdqatError(f"{where(origin, row)}: empty label in column {label!r}")
    numeric = {n for n in names if _sort_key(n)[0] == 0}
    if numeric and numeric != names:
        shown = sorted(numeric, key=_sort_key)[:3] + sorted(names - numeric)[:3]
        raise KdqatError(f"{origin}: the label column {label!r} mixes numbers and names ({', '.join(shown)}, ...); "
                         "write every label the same way")
    if len(names) < 2:
        raise KdqatError(f"{origin}: the label column {label!r} has only one class ({', '.join(names)}); "
                         "a classifier needs at least two")
    return tuple(sorted(names, key=_sort_key))


def standardize(ds: Dataset, columns: Columns, labels: tuple[str, ...] | None, origin: str) -> Dataset:
    """text_a, text_b (pairs) and label (class id by name, or a finite float score) of one split, every row
    checked: no empty text, no label outside `labels` (None: a regression)."""
    feature = ds.features[columns.label]
    class_names = feature.names if isinstance(feature, ClassLabel) else None
    index = {name: i for i, name in enumerate(labels)} if labels is not None else None
    texts = [c for c in (columns.text, columns.pair) if c is not None]

    def convert(batch: dict, rows: list[int]) -> dict:
        for column in texts:
            for row, value in zip(rows, batch[column]):
                if value is None or not str(value).strip():
                    raise KdqatError(f"{where(origin, row)}: empty text in column {column!r}")
        out_labels = []
        for row, value in zip(rows, batch[columns.label]):
            if class_names is not None and value is not None and value >= 0:
                value = class_names[value]
            if index is None:
                score = _score(value)
                if score is None:
                    raise KdqatError(f"{where(origin, row)}: label {value!r} is not a finite number (a regression)")
                out_labels.append(score)
                continue
            name = _name(value)
            if name is None:
                raise KdqatError(f"{where(origin, row)}: empty label in column {columns.label!r}")
            if name not in index:
                shown = ", ".join(labels[:20]) + (f", ... ({len(labels)} in all)" if len(labels) > 20 else "")
                raise KdqatError(f"{where(origin, row)}: label {name!r} never appears in the training data ({shown})")
            out_labels.append(index[name])
        out = {"text_a": [str(v) for v in batch[columns.text]], "label": out_labels}
        if columns.pair is not None:
            out["text_b"] = [str(v) for v in batch[columns.pair]]
        return out

    label_feature = Value("float32") if labels is None else ClassLabel(names=list(labels))
    features = {"text_a": Value("string"), "label": label_feature}
    if columns.pair is not None:
        features["text_b"] = Value("string")
    from datasets import Features

    return ds.map(convert, batched=True, with_indices=True, remove_columns=ds.column_names,
                  features=Features(features), desc=None)


def _score(value) -> float | None:
    try:
        score = float(value)
    except (TypeError, ValueError):
        return None
    return score if math.isfinite(score) else None


def hold_out(train: Dataset, fraction: float, seed: int, stratify: bool) -> tuple[Dataset, Dataset]:
    """A seeded (stratified, for classification) slice of train as validation: (train, validation)."""
    try:
        parts = train.train_test_split(test_size=fraction, seed=seed, stratify_by_column="label" if stratify else None)
    except ValueError as e:
        raise KdqatError(f"--validation-fraction {fraction}: cannot hold out a validation slice of {len(train)} "
                         f"rows ({e}); give --validation-file") from None
    return parts["train"], parts["test"]
