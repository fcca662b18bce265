"""The first GPU run, cheap and decisive, from an exported run:

  1. the TensorRT INT8 engine from the Q/DQ deploy graph with FP16 float parts (model.fp16.onnx): its layer report
     must show at least one INT8 GEMM per quantized product of the student (its quantized Linears and the two
     attention products of each layer) and no float GEMM beyond the student's float head;
  2. the saved plan loads again in a new process, without a rebuild;
  3. TensorRT against the PyTorch student on real validation rows (a few hundred), judged as export judges the
     FP16 graph: decided predictions (margin 0.5) for a classifier, |diff| <= 0.25 for a regression, every
     cosine >= 0.99 for an embedding model;
  4. onnxruntime's TensorRT provider on the same rows, judged the same way against the TensorRT engine;
  5. latency: TensorRT INT8 must beat TensorRT FP16 of the student's own float graph (model.float.onnx) at the
     largest batch (p50), in a table with onnxruntime CUDA and PyTorch CUDA (teacher, student).

Ends with one PASS/FAIL line per check and exit status 1 on any FAIL.

    kdqat gpu-check RUN_DIR [--data-dir GLUE_DIR] [--max-samples N] [--batch-sizes 1,8,32]

Needs the GPU image (Dockerfile): a CUDA GPU, TensorRT 10, onnxruntime-gpu (`kdqat doctor --gpu` says what is
missing). About 5-10 minutes on one GPU for the default model (engine builds dominate; later runs load them).
The engine's profile is the run's own sequence length and the largest batch, the same profile `kdqat eval` uses
with that batch size, so step 3 reuses step 1's engine.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from kdqat.errors import first_line
from kdqat.export.options import ExportOptions
from kdqat.layout import FLOAT, deploy_graph, fp16_graph
from kdqat.objectives import objective_of
from kdqat.run_dir import open_run
from kdqat.runtime.engine import ShapeProfile
from kdqat.runtime.ort_engine import OrtEngine
from kdqat.runtime.timing import measure, random_batch
from kdqat.runtime.torch_engine import TorchEngine
from kdqat.runtime.trt_engine import TrtEngine, gemm_verdict

VALIDATION_ROWS = 256  # real rows checks 3 and 4 compare on (--max-samples sets another count)


class Checks:
    """Named checks, each PASS or FAIL with one line of detail; a failing check does not stop the others."""

    def __init__(self) -> None:
        self.results: list[tuple[str, bool, str]] = []

    def run(self, name: str, check: Callable[[], str]) -> None:
        print(f"== {name}", flush=True)
        try:
            self.results.append((name, True, check()))
        except Exception as e:  # a GPU check reports every failure and goes on to the next check
            self.results.append((name, False, f"{type(e).__name__}: {first_line(e)}"))

    def summary(self) -> int:
        for name, ok, detail in self.results:
            print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}")
        return 0 if all(ok for _, ok, _ in self.results) else 1


def require(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def engine_parity(objective, reference: np.ndarray, candidate: np.ndarray, what: str) -> str:
    """Judge an FP16-float-parts engine's outputs against the reference's as export judges its FP16 graph, with the
    objective's own gate (classifier: decided predictions; regression: tolerance; embedding: every cosine); one line
    of figures, or AssertionError saying what failed."""
    parity = objective.compare(reference, candidate, fp16=True)
    gate = getattr(ExportOptions, objective.gate_option)
    failure = objective.parity_failure(parity, gate)
    require(failure is None, f"{what}: {failure}")
    figures = parity.to_dict()
    return f"{what}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items())


def student_products(student) -> tuple[int, int]:
    """(quantized matrix products, float Linears) of a kdqat student: what its INT8 engine must run in INT8, and
    the float head it may run in FP16."""
    from torch import nn

    from kdqat.families import family_of
    from kdqat.modules import QuantLinear

    quantized = sum(isinstance(m, QuantLinear) for m in student.modules())
    attention = 2 * len(family_of(student).encoder_layers(student))  # Q.K^T and probs.V of each layer
    float_linears = sum(type(m) is nn.Linear for m in student.modules())
    return quantized + attention, float_linears


def fp16_baseline(float_graph: Path, profile: ShapeProfile) -> TrtEngine:
    """TensorRT FP16 of a float graph: with TensorRT 10's FP16 builder flag, else (11 removed it) its float16 form
    (model.float.fp16.onnx, written once) built strongly typed."""
    import tensorrt

    if hasattr(tensorrt.BuilderFlag, "FP16"):
        return TrtEngine.open(float_graph, profile, fp16=True)
    import onnx

    from kdqat.export.passes import float16_float_parts

    half = float_graph.with_name(float_graph.stem + ".fp16.onnx")
    if not half.is_file():
        onnx.save(float16_float_parts(onnx.load(str(float_graph))), str(half))
    return TrtEngine.open(half, profile)


def validation_batch(run, data_dir: str | None, count: int) -> dict[str, np.ndarray]:
    """The first `count` rows of the run's first dev split (an embedding run's validation text), tokenized as the
    student's and padded to the run's length."""
    from kdqat.glue.data import encode
    from kdqat.models import load_tokenizer
    from kdqat.runtime.batching import pad_batch

    rows = run.data_source(data_dir).load(run.spec.dev_splits[0], count)
    features = encode(rows, load_tokenizer(str(run.student)), run.max_seq_length)
    batch = pad_batch(features, list(range(len(rows))))
    width = run.max_seq_length
    return {k: np.pad(v, ((0, 0), (0, width - v.shape[1]))) for k, v in batch.items()}


def gpu_check(run_dir: Path, data_dir: str | None, max_samples: int | None, batch_sizes: tuple[int, ...],
              iterations: int) -> int:
    """Run the five checks; print one PASS/FAIL line each; 0 when all pass, else 1."""
    run = open_run(run_dir)
    batches = sorted(batch_sizes)
    seq = run.max_seq_length
    profile = ShapeProfile(1, batches[-1], batches[-1], 1, seq, seq)  # = kdqat eval's at --batch-size batches[-1]
    deploy = deploy_graph(run.root)
    trt_graph = fp16_graph(deploy)  # what kdqat's TensorRT engines are built from
    checks, engines = Checks(), {}

    objective = objective_of(run.spec)
    student = TorchEngine.student(run.student)
    quantized, float_linears = student_products(student.model)
    rows: dict = {}

    def validation() -> dict[str, np.ndarray]:
        if not rows:
            rows.update(validation_batch(run, data_dir, max_samples or VALIDATION_ROWS))
        return rows

    def in_batches(engine, batch: dict[str, np.ndarray]) -> np.ndarray:
        size = batches[-1]  # within the engines' profile
        n = len(next(iter(batch.values())))
        return np.concatenate([engine.run({k: v[i:i + size] for k, v in batch.items()}) for i in range(0, n, size)])

    def int8_engine() -> str:
        require(trt_graph.is_file(), f"{trt_graph} is missing: export again (kdqat export {run.root}) to write it")
        engines["int8"] = TrtEngine.open(trt_graph, profile)
        layers = engines["int8"].layers
        print(json.dumps(layers, indent=2))
        return gemm_verdict(layers, quantized, float_linears) + f"; layers by precision {layers['layers_by_precision']}"

    def plan_reloads() -> str:
        plan = trt_graph.with_suffix(".plan")
        before = plan.stat().st_mtime_ns
        code = ("import sys; from kdqat.layout import fp16_graph; from kdqat.runtime.engine import ShapeProfile; from kdqat.runtime.trt_engine import TrtEngine; "
                f"TrtEngine.open(sys.argv[1], ShapeProfile{dataclasses.astuple(profile)!r})")
        done = subprocess.run([sys.executable, "-c", code, str(trt_graph)], capture_output=True, text=True, timeout=600)
        require(done.returncode == 0, f"a new process could not open the plan: {done.stderr.strip()[-300:]}")
        require(plan.stat().st_mtime_ns == before, "the new process rebuilt the plan instead of loading it")
        return f"{plan.name} loaded in a new process, not rebuilt"

    def int8_or_open() -> TrtEngine:
        if "int8" not in engines:  # check 1 failed before opening it
            engines["int8"] = TrtEngine.open(trt_graph, profile)
        return engines["int8"]

    def parity() -> str:
        batch = validation()
        reference = in_batches(student, batch)
        return engine_parity(objective, reference, in_batches(int8_or_open(), batch),
                             f"TensorRT vs PyTorch on {len(reference)} validation rows")

    def ort_tensorrt_provider() -> str:
        batch = validation()
        provider = OrtEngine(trt_graph, "tensorrt", profile=profile)
        return engine_parity(objective, in_batches(int8_or_open(), batch), in_batches(provider, batch),
                             f"onnxruntime's TensorRT provider vs the TensorRT engine on {len(batch['input_ids'])} rows")

    def latency() -> str:
        float_graph = deploy.with_name(FLOAT)
        require(float_graph.is_file(), f"{float_graph} is missing: export again to write the student's float graph")
        int8, fp16 = "TensorRT INT8 (FP16 float parts)", "TensorRT FP16 (the student's float graph)"
        table = {
            int8: int8_or_open(),
            fp16: fp16_baseline(float_graph, profile),
            "onnxruntime CUDA (Q/DQ graph)": OrtEngine(deploy, "cuda"),
            "PyTorch CUDA teacher fp32": TorchEngine.teacher(run.teacher or run.student, "cuda"),
            "PyTorch CUDA student (fake-quant)": TorchEngine.student(run.student, "cuda"),
        }
        vocab = student.model.config.vocab_size
        print(f"latency (ms, p50 / p99) at sequence {seq}")
        print(f"{'engine':42} " + " ".join(f"{'batch ' + str(b):>16}" for b in batches))
        p50: dict[str, float] = {}
        for name, engine in table.items():
            cells = []
            for b in batches:
                stats = measure(engine.run, random_batch(b, seq, vocab, 0), warmup=10, iterations=iterations)
                cells.append(f"{stats['p50_ms']:7.2f} / {stats['p99_ms']:6.2f}")
                if b == batches[-1]:
                    p50[name] = stats["p50_ms"]
            print(f"{name:42} " + " ".join(f"{c:>16}" for c in cells))
        require(p50[int8] < p50[fp16], f"at batch {batches[-1]}, INT8 p50 {p50[int8]:.2f} ms is not below the float "
                                       f"graph's FP16 p50 {p50[fp16]:.2f} ms: the integer kernels bought nothing")
        return f"batch {batches[-1]} x {seq}: INT8 {p50[int8]:.2f} ms < FP16 {p50[fp16]:.2f} ms ({p50[fp16] / p50[int8]:.2f}x)"

    checks.run("1. TensorRT INT8 engine from the Q/DQ graph with FP16 float parts", int8_engine)
    checks.run("2. the saved plan loads in a new process", plan_reloads)
    checks.run("3. TensorRT vs the PyTorch student on validation rows", parity)
    checks.run("4. onnxruntime TensorRT provider", ort_tensorrt_provider)
    checks.run("5. latency, INT8 against FP16", latency)
    return checks.summary()
