"""The sentence-embedding quality table of docs/RESULTS.md from benchmarks/embeddings.py's JSON records.

    python benchmarks/embeddings_table.py docs/results/embedding/quality-*.json

Students are grouped by the path their run lives at, <name>/<preset>/seed<S> (e.g. stsb/map+output/seed42), and
shown as mean ± sample standard deviation over seeds, with the gap to the float model (positive = below it).
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from collections import defaultdict

FLOAT, PEER = "float (PyTorch fp32)", "peer (onnxruntime dynamic int8)"
METRICS = ("stsb_spearman", "clinc_knn_accuracy")


def cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def main(paths: list[str]) -> int:
    quality: dict[str, dict[str, float]] = {}
    for path in paths:
        quality.update(json.load(open(path))["quality"])
    groups: dict[str, list[dict[str, float]]] = defaultdict(list)
    seeds: dict[str, list[str]] = defaultdict(list)
    for name, scores in quality.items():
        match = re.search(r"([^/]+/[^/]+)/seed(\d+)$", name)
        if match:
            groups[match.group(1)].append(scores)
            seeds[match.group(1)].append(match.group(2))
    reference = quality[FLOAT]
    print("| model | seeds | STS-B dev Spearman | gap | CLINC150 kNN accuracy | gap |")
    print("|---|---|---|---|---|---|")
    for label, scores in ((FLOAT, [reference]), (PEER, [quality[PEER]])):
        row = [cell([s[m] for s in scores]) for m in METRICS]
        gaps = [f"{reference[m] - scores[0][m]:.2f}" if label != FLOAT else "-" for m in METRICS]
        print(f"| {label} | - | {row[0]} | {gaps[0]} | {row[1]} | {gaps[1]} |")
    for group in sorted(groups):
        scores = groups[group]
        row = [cell([s[m] for s in scores]) for m in METRICS]
        gaps = [cell([reference[m] - s[m] for s in scores]) for m in METRICS]
        print(f"| {group} | {','.join(sorted(seeds[group]))} | {row[0]} | {gaps[0]} | {row[1]} | {gaps[1]} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
