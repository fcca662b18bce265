"""How long `kdqat --help` and `kdqat train --help` take to print (target: under 1 s). Prints the medians."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time


def wall(args: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "kdqat.cli", *args], capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    for args in (["--help"], ["train", "--help"]):
        print(f"kdqat {' '.join(args):<14} {wall(args, 5) * 1000:7.0f} ms (median of 5, target < 1000 ms)")


if __name__ == "__main__":
    main()
