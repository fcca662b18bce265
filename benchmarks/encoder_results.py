"""One base-size encoder's record (docs/results/encoders/<name>.json) from the measurements that produced it:
benchmarks/embeddings.py's quality JSON (STS-B dev Spearman, CLINC150 kNN accuracy, sizes) and
benchmarks/peers.py's speed JSON (the student, the peer and PyTorch fp32 timed side by side in one run).

    python benchmarks/encoder_results.py --quality Q.json --speed S.json --runs RUN [RUN ...] --output OUT.json

Writes {"float": {...}, "peer": {...}, "students": [{"seed", "stsb_spearman", "clinc_knn_accuracy",
"packed_bytes", ...}], "gaps": {...}, "speed": {"BxS": {"student_ms", "peer_ms", "torch_ms", ...}}, "sizes": {...}}
and prints it; nothing is measured here.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

FLOAT, PEER = "float (PyTorch fp32)", "peer (onnxruntime dynamic int8)"
TORCH, PEER_SPEED = "PyTorch fp32 (teacher)", "peer: onnxruntime dynamic int8 (fused)"
STUDENTS = {"student_ms": "kdqat W2/A8 student (onnxruntime)", "student_openvino_ms": "kdqat W2/A8 student (OpenVINO)",
            "student_openvino_fixed_ms": "kdqat W2/A8 student (OpenVINO, fixed shapes)", "peer_fixed_ms": "peer, fixed shapes"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quality", required=True)
    parser.add_argument("--speed", required=True)
    parser.add_argument("--runs", nargs="+", required=True, help="the students' run folders, as the quality JSON names them")
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    quality, speed = json.loads(Path(args.quality).read_text()), json.loads(Path(args.speed).read_text())
    scores = quality["quality"]
    students = []
    for run in args.runs:
        config = json.loads((Path(run) / "config.json").read_text())["options"]
        metrics = json.loads((Path(run) / "metrics.json").read_text())
        size = quality["sizes"]["students"][run]
        students.append({"run": run, "seed": config["seed"], **scores[run], "packed_bytes": size["packed_bytes"],
                         "kept_step": metrics["student"]["best"]["step"],
                         "validation_cosine": metrics["student"]["best"]["dev"]["validation_cosine"]})
    result = {"float": scores[FLOAT], "peer": scores[PEER], "students": students,
              "gaps": {metric: {"mean": statistics.mean(scores[FLOAT][metric] - s[metric] for s in students),
                                "seeds": len(students)}
                       for metric in ("stsb_spearman", "clinc_knn_accuracy")},
              "sizes": {"float_bytes": quality["sizes"]["float_bytes"], "peer_bytes": quality["sizes"]["peer_bytes"],
                        "packed_bytes": [s["packed_bytes"] for s in students]},
              "speed": {}, "cpu": speed["cpu"], "threads": speed["threads"]}
    for row in speed["latency_ms"]:
        cell = {"student_ms": row[STUDENTS["student_ms"]], "peer_ms": row[PEER_SPEED], "torch_ms": row[TORCH]}
        cell.update({key: row[name] for key, name in STUDENTS.items() if name in row and key != "student_ms"})
        cell["student_vs_peer"] = cell["peer_ms"] / cell["student_ms"]
        cell["student_vs_torch"] = cell["torch_ms"] / cell["student_ms"]
        if "student_openvino_ms" in cell:
            cell["openvino_vs_peer"] = cell["peer_ms"] / cell["student_openvino_ms"]
            cell["openvino_vs_torch"] = cell["torch_ms"] / cell["student_openvino_ms"]
        result["speed"][f"{row['batch']}x{row['seq']}"] = cell
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
