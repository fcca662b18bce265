"""Reading your own data at scale: a synthetic CSV of N rows (default a million) through the path `kdqat train`
takes (datasets' CSV builder -> Arrow, label names, the row checks, tokenizing in batches), with the peak
resident memory and the rows per second of each step.

    python benchmarks/data_scale.py [--rows 1000000] [--classes 150] [--workdir DIR]

The file is written once into --workdir (default a temporary folder) and read through a fresh datasets cache,
so that the figures include the CSV parse. Peak memory is the process's maximum resident set (ru_maxrss).
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import resource
import tempfile
import time
from pathlib import Path

WORDS = ("account balance transfer money weather rain tomorrow flight hotel book cancel order pizza song play "
         "timer alarm reminder calendar meeting email call text translate spanish french recipe dinner car "
         "insurance bill pay card credit limit pin change password reset").split()


def write_csv(path: Path, rows: int, classes: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "intent"])
        for i in range(rows):
            writer.writerow([" ".join(rng.choices(WORDS, k=rng.randint(4, 16))), f"intent_{i % classes}"])


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--classes", type=int, default=150)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="kdqat-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["HF_DATASETS_CACHE"] = str(work / "cache")  # a fresh cache: the CSV is really parsed
    import datasets

    datasets.disable_progress_bars()
    from kdqat.data.files import choose_columns, label_names, read_file, standardize
    from kdqat.models import load_tokenizer
    from kdqat.train import tokenize

    path = work / "train.csv"
    if not path.is_file():
        write_csv(path, args.rows, args.classes)
    print(f"{path}: {args.rows:,} rows, {path.stat().st_size / 1e6:.0f} MB, {args.classes} classes; "
          f"peak memory before reading {peak_mb():.0f} MB")
    steps = []

    def timed(name, fn):
        start = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - start
        steps.append((name, seconds))
        print(f"{name:<28} {seconds:7.1f} s  {args.rows / seconds:>10,.0f} rows/s  peak memory {peak_mb():7.0f} MB")
        return out

    raw = timed("read (CSV -> Arrow)", lambda: read_file(path, "--train-file"))
    columns = choose_columns(raw.column_names, str(path), None, None, None)
    labels = timed("label names", lambda: label_names(raw, columns.label, str(path)))
    ready = timed("checks + label ids", lambda: standardize(raw, columns, labels, str(path)))
    tokenizer = load_tokenizer("default")
    timed("tokenize (batched map)", lambda: tokenize(ready, tokenizer, args.max_length))
    total = sum(s for _, s in steps)
    print(f"{'all':<28} {total:7.1f} s  {args.rows / total:>10,.0f} rows/s  peak memory {peak_mb():7.0f} MB "
          f"(the file alone is {path.stat().st_size / 1e6:.0f} MB)")


if __name__ == "__main__":
    main()
