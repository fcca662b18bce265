"""Where everything of a run lives: the one owner of the file and folder names that `kdqat train`, `export`,
`eval` and `bench` write, and of the paths built from them. (Inside a model folder, its own format's files are
named by their owner: quant_config.json by kdqat.config, the learned scales by kdqat.student.)

    RUN/config.json  metrics.json  teacher/  student/  logs/  checkpoints/<stage>/   kdqat train
    RUN/onnx/model.onnx  model.fp16.onnx  model.packed.onnx  model.float.onnx  export.json   kdqat export
    RUN/eval/<engine>.json   RUN/bench/bench.json, latency.png                             kdqat eval, bench
"""

from __future__ import annotations

from pathlib import Path

CONFIG, METRICS = "config.json", "metrics.json"
TEACHER, STUDENT, LOGS, CHECKPOINTS = "teacher", "student", "logs", "checkpoints"
TRAIN_OUTPUTS = (TEACHER, STUDENT, CONFIG, METRICS, LOGS, CHECKPOINTS)  # what kdqat train writes into a run
EXPORT_DIR, EVAL_DIR, BENCH_DIR = "onnx", "eval", "bench"

DEPLOY = "model.onnx"  # int8 weight codes + 8-bit activation Q/DQ: what every engine runs
FP16 = "model.fp16.onnx"  # the deploy graph with its float parts in float16: what TensorRT builds from
PACKED = "model.packed.onnx"  # weights packed as INT2 (INT4): the storage graph
FLOAT = "model.float.onnx"  # the student's float weights unquantized: the size and speed baseline
ORT_CPU = "model.ort_cpu.onnx"  # optional: the deploy graph in onnxruntime's CPU form
EXPORT_REPORT = "export.json"  # task, labels, sizes, parity


def checkpoints(root: Path, stage: str) -> Path:
    """A training stage's resumable checkpoints."""
    return Path(root) / CHECKPOINTS / stage


def stage_log(root: Path, stage: str) -> Path:
    return Path(root) / LOGS / f"{stage}.jsonl"


def deploy_graph(root: Path, onnx: str | Path | None = None) -> Path:
    """The deploy graph engines run: `onnx` where given (--onnx), else RUN/onnx/model.onnx."""
    return Path(onnx) if onnx else Path(root) / EXPORT_DIR / DEPLOY


def export_report(graph: Path) -> Path:
    """export.json, beside the deploy graph it describes."""
    return Path(graph).parent / EXPORT_REPORT


def fp16_graph(deploy: Path) -> Path:
    """The deploy graph's TensorRT form, beside it: model.fp16.onnx beside model.onnx."""
    return Path(deploy).with_suffix(".fp16.onnx")


def tensorrt_graph(deploy: Path) -> Path:
    """The graph a TensorRT engine is built from: the FP16 form beside the deploy graph, else (an export from
    before kdqat wrote it, or a graph of your own) the deploy graph itself."""
    return fp16_graph(deploy) if fp16_graph(deploy).is_file() else Path(deploy)
