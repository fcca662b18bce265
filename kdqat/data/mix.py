"""One .txt file of unlabelled training text (one sentence per line, each once) from GLUE tasks' training sentences
and text columns of your own files: the input of `kdqat train --objective embedding --train-file`.

    kdqat mix-texts OUT.txt [--glue-task stsb --glue-task cola --data-dir ../shared/glue] [--file F.csv ...]
        [--text-column text]

How docs/results/embedding/stsb+clinc150-text was made: `--glue-task stsb --file ../shared/clinc150/train.csv`
(the CLINC150 index's texts without their labels; its validation and test texts are never read).
docs/results/embedding/glue-text: `--glue-task stsb --glue-task cola --file ../shared/glue/QNLI/dev.tsv
--text-column question` (general English text only: no CLINC150 text).
"""

from __future__ import annotations

from pathlib import Path

from kdqat.data.files import read_file
from kdqat.data.texts import sentences, text_column_of
from kdqat.errors import KdqatError
from kdqat.io import write_text


def mix_texts(output: Path, glue_tasks: list[str], data_dir: str | None, files: list[str],
              text_column: str | None = None) -> int:
    """Write the distinct sentences of the sources, in order (GLUE tasks first), one per line; returns how many.
    Newlines inside a text become spaces; empty texts are left out."""
    if not glue_tasks and not files:
        raise KdqatError("nothing to mix: give --glue-task and/or --file")
    parts = []
    for name in glue_tasks:
        from kdqat.glue.data import load_split
        from kdqat.glue.tasks import get_task

        raw = load_split(get_task(name), "train", data_dir)
        parts.append(sentences(raw, [c for c in ("text_a", "text_b") if c in raw.column_names], name)["text_a"])
    for path in files:
        ds = read_file(path, "--file")
        parts.append(sentences(ds, [text_column_of(ds, text_column, path)], path)["text_a"])
    seen: set[str] = set()
    lines = []
    for text in (" ".join(t.split()) for part in parts for t in part):
        if text and text not in seen:
            seen.add(text)
            lines.append(text)
    write_text(output, "".join(line + "\n" for line in lines))
    return len(lines)
