"""One .txt file of unlabelled training text (one sentence per line, each once) from a GLUE task's training
sentences and text columns of your own files: the input of `kdqat train --objective embedding --train-file`.

    python benchmarks/mix_texts.py OUT.txt [--glue-task stsb [cola ...] --data-dir ../shared/glue] [--file F.csv ...]
        [--text-column text]

How docs/results/embedding/stsb+clinc150-text was made: `--glue-task stsb --file ../shared/clinc150/train.csv`
(the CLINC150 index's texts without their labels; its validation and test texts are never read).
docs/results/embedding/glue-text: `--glue-task stsb cola --file ../shared/glue/QNLI/dev.tsv --text-column question`
(general English text only: no CLINC150 text).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kdqat.data.files import read_file
from kdqat.data.texts import _text_column, sentences
from kdqat.io import write_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--glue-task", nargs="*", default=[], help="GLUE tasks whose training sentences (both sides of a pair) come first")
    parser.add_argument("--data-dir", help="GLUE_DIR for --glue-task (default: GLUE_DIR)")
    parser.add_argument("--file", nargs="*", default=[], help="CSV / TSV / JSON Lines / JSON / Parquet / .txt files")
    parser.add_argument("--text-column", help="the text column of --file (default: the usual names)")
    args = parser.parse_args()
    parts = []
    for name in args.glue_task:
        from kdqat.glue.data import load_split
        from kdqat.glue.tasks import get_task

        raw = load_split(get_task(name), "train", args.data_dir)
        parts.append(sentences(raw, [c for c in ("text_a", "text_b") if c in raw.column_names], name)["text_a"])
    for path in args.file:
        ds = read_file(path, "--file")
        parts.append(sentences(ds, [_text_column(ds, args.text_column, path)], path)["text_a"])
    seen: set[str] = set()
    lines = []
    for text in (" ".join(t.split()) for part in parts for t in part):  # one line each: newlines inside become spaces
        if text and text not in seen:
            seen.add(text)
            lines.append(text)
    write_text(args.output, "".join(line + "\n" for line in lines))
    print(f"{args.output}: {len(lines)} distinct sentences from {len(parts)} source(s)")


if __name__ == "__main__":
    main()
