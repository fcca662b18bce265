"""benchmarks/peers.py records taken at several instruction-set levels (kdqat isa-mask) as one table and
one picture: the student against the peer on each engine, level by level, so that it shows which CPU feature each
speed-up comes from.

    python benchmarks/isa_levels.py docs/results/peers/clinc150-map+output-seed42-cpuid-*.json \
        docs/results/peers/clinc150-map+output-seed42-warm-{1,2}.json --plot docs/results/peers/isa-levels.png

Records of the same level (several runs) are given as a range, low-high. A record taken without a mask is named by
the CPU's best feature (AMX-INT8 on machine C).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

from kdqat.io import save_figure

# the order of increasing integer throughput, and how each level is named in the table
LEVELS = {"avx2": "AVX2 (no VNNI)", "avx2_vnni": "AVX2 + AVX-VNNI", "avx512_vnni": "AVX-512 VNNI",
          "AMX-INT8": "AMX-INT8 (unmasked)"}
TICKS = {"avx2": "AVX2\n(no VNNI)", "avx2_vnni": "AVX2 +\nAVX-VNNI", "avx512_vnni": "AVX-512\nVNNI",
         "AMX-INT8": "AMX-INT8\n(unmasked)"}
RATIOS = {"student_vs_peer": "onnxruntime student vs peer", "student_openvino_vs_peer": "OpenVINO student vs peer",
          "student_openvino_static_vs_peer_fixed": "OpenVINO, shape compiled ahead, vs peer told the shape",
          "student_vs_pytorch": "onnxruntime student vs PyTorch fp32",
          "student_openvino_vs_pytorch": "OpenVINO student vs PyTorch fp32"}
ACCURACY = ("peer: onnxruntime dynamic int8 (fused)", "kdqat W2/A8 student (onnxruntime)", "kdqat W2/A8 student (OpenVINO)")


def level_of(record: dict) -> str:
    """The record's instruction-set level: the CPUID mask it was taken under, else the CPU's best feature."""
    masked = re.search(r"CPUID masked to (\w+)", record["cpu"])
    if masked:
        return masked.group(1)
    have = record["cpu"].split(":", 1)[-1].split(";")[0].split(", ")  # "MODEL (...): AVX2, AVX-VNNI; no ..."
    names = {"AMX-INT8": "AMX-INT8", "AVX-512 VNNI": "avx512_vnni", "AVX-VNNI": "avx2_vnni"}
    return next((level for feature, level in names.items() if feature in [h.strip() for h in have]), "avx2")


def collect(records: list[dict]) -> dict[str, dict]:
    """level -> {"ratios": {(shape, ratio): [values]}, "accuracy": {model: [values]}, "runs": n}."""
    out: dict[str, dict] = defaultdict(lambda: {"ratios": defaultdict(list), "accuracy": defaultdict(list), "runs": 0})
    for record in records:
        level = out[level_of(record)]
        level["runs"] += 1
        for row in record["latency_ms"]:
            for key in RATIOS:
                if key in row:
                    level["ratios"][(f"{row['batch']}x{row['seq']}", key)].append(row[key])
        for model in ACCURACY:
            if model in record["dev"]["scores"]:
                level["accuracy"][model].append(record["dev"]["scores"][model]["accuracy"])
    return {name: out[name] for name in LEVELS if name in out}


def span(values: list[float], digits: int = 2, suffix: str = "x") -> str:
    low, high = f"{min(values):.{digits}f}", f"{max(values):.{digits}f}"
    return f"{low}{suffix}" if low == high else f"{low}-{high}{suffix}"


def table(levels: dict[str, dict], shapes: list[str]) -> str:
    lines = ["| instruction set (runs) | compared | " + " | ".join(shapes) + " |",
             "|---|---|" + "---|" * len(shapes)]
    for name, level in levels.items():
        for key, label in RATIOS.items():
            cells = [span(level["ratios"][(shape, key)]) if level["ratios"].get((shape, key)) else "" for shape in shapes]
            if any(cells):
                lines.append(f"| {LEVELS[name]} ({level['runs']}) | {label} | " + " | ".join(cells) + " |")
    lines += ["", "| instruction set | " + " | ".join(f"dev accuracy, {m}" for m in ACCURACY) + " |",
              "|---|" + "---|" * len(ACCURACY)]
    for name, level in levels.items():
        cells = [span(level["accuracy"][m], 2, "") if level["accuracy"].get(m) else "" for m in ACCURACY]
        lines.append(f"| {LEVELS[name]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(levels: dict[str, dict], shapes: list[str]):
    """One panel per shape: the onnxruntime and OpenVINO students' speed over the peer's at each level (the
    mean of the runs, their range as an error bar), 1.0 dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["student_vs_peer", "student_openvino_vs_peer"]
    fig, axes = plt.subplots(1, len(shapes), figsize=(3.4 * len(shapes), 3.4), squeeze=False, sharey=True)
    for ax, shape in zip(axes[0], shapes):
        for k, key in enumerate(keys):
            for x, level in enumerate(levels.values()):
                values = level["ratios"].get((shape, key), [])
                if not values:
                    continue
                mean = sum(values) / len(values)
                ax.bar(x + (k - 0.5) * 0.38, mean, 0.36, color=f"C{k}", label=RATIOS[key] if x == 0 else None,
                       yerr=[[mean - min(values)], [max(values) - mean]], capsize=2)
        ax.axhline(1.0, color="black", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(levels)), [TICKS[n] for n in levels], fontsize=7)
        ax.set_title(f"batch x sequence {shape}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("speed over the peer (onnxruntime int8)", fontsize=8)
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.suptitle("The W2/A8 student against onnxruntime's int8 peer, by the instruction set its kernels were given",
                 fontsize=10)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("records", nargs="+", type=Path, help="benchmarks/peers.py JSON records")
    parser.add_argument("--plot", type=Path, help="PNG of the speed-ups, level by level")
    args = parser.parse_args(argv)
    levels = collect([json.loads(path.read_text()) for path in args.records])
    shapes = list(dict.fromkeys(shape for level in levels.values() for shape, _ in level["ratios"]))
    print(table(levels, shapes))
    if args.plot:
        save_figure(plot(levels, shapes), args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)


if __name__ == "__main__":
    main()
