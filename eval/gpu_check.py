"""The first GPU run, cheap and decisive, from an exported run:

  1. the TensorRT INT8 engine from the Q/DQ deploy graph with FP16 float parts (model.fp16.onnx), and its layer
     report (no float GEMM outside Myelin);
  2. the saved plan loads again in a new process, without a rebuild;
  3. TensorRT against the PyTorch student on dev, the way `kdqat eval --engine trt` scores it;
  4. onnxruntime's TensorRT provider, once, agreeing with the TensorRT engine;
  5. one latency table: TensorRT INT8, TensorRT FP16 teacher, onnxruntime CUDA, PyTorch CUDA (teacher, student).

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

from kdqat.errors import first_line
from kdqat.eval.evaluate import evaluate_run
from kdqat.eval.options import EvalOptions
from kdqat.layout import EXPORT_DIR, FLOAT, deploy_graph, fp16_graph
from kdqat.run_dir import open_run
from kdqat.runtime.engine import ShapeProfile
from kdqat.runtime.ort_engine import OrtEngine
from kdqat.runtime.timing import measure, random_batch
from kdqat.runtime.torch_engine import TorchEngine
from kdqat.runtime.trt_engine import TrtEngine

MIN_AGREEMENT = 0.99  # as kdqat export's parity gate: decided predictions that must agree


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

    def int8_engine() -> str:
        require(trt_graph.is_file(), f"{trt_graph} is missing: export again (kdqat export {run.root}) to write it")
        engines["int8"] = TrtEngine.open(trt_graph, profile)
        layers = engines["int8"].layers
        print(json.dumps(layers, indent=2))
        require(not layers["matmul_like_layers_not_int8"], f"GEMMs outside INT8: {layers['matmul_like_layers_not_int8']}")
        return f"layers by precision {layers['layers_by_precision']}, {len(layers['myelin_regions'])} Myelin regions"

    def plan_reloads() -> str:
        plan = trt_graph.with_suffix(".plan")
        before = plan.stat().st_mtime_ns
        code = ("import sys; from kdqat.layout import fp16_graph; from kdqat.runtime.engine import ShapeProfile; from kdqat.runtime.trt_engine import TrtEngine; "
                f"TrtEngine.open(sys.argv[1], ShapeProfile{dataclasses.astuple(profile)!r})")
        done = subprocess.run([sys.executable, "-c", code, str(trt_graph)], capture_output=True, text=True, timeout=600)
        require(done.returncode == 0, f"a new process could not open the plan: {done.stderr.strip()[-300:]}")
        require(plan.stat().st_mtime_ns == before, "the new process rebuilt the plan instead of loading it")
        return f"{plan.name} loaded in a new process, not rebuilt"

    def parity() -> str:
        result = evaluate_run(EvalOptions(str(run.root), "trt", None, "cpu", data_dir, batches[-1], max_samples, True))
        lines = []
        for split, record in result["splits"].items():
            agreement = record["agreement"]
            print(split, json.dumps(record["scores"]), json.dumps(agreement))
            require(agreement["decided_agreement"] >= MIN_AGREEMENT,
                    f"{split}: TensorRT agrees with PyTorch on {agreement['decided_agreement']:.2%} of decided predictions")
            lines.append(f"{split} {agreement['decided_agreement']:.2%} of {agreement['decided']} decided")
        return "; ".join(lines)

    def ort_tensorrt_provider() -> str:
        vocab = TorchEngine.teacher(run.student).model.config.vocab_size
        batch = random_batch(batches[-1], seq, vocab, 0)
        provider = OrtEngine(trt_graph, "tensorrt", profile=profile).run(batch)
        ours = engines["int8"].run(batch) if "int8" in engines else TrtEngine.open(trt_graph, profile).run(batch)
        same = float((provider.argmax(-1) == ours.argmax(-1)).mean())
        require(same >= MIN_AGREEMENT, f"onnxruntime's TensorRT provider agrees with the engine on {same:.2%}")
        return f"agrees with the TensorRT engine on {same:.2%} of {len(ours)} random sequences"

    def latency() -> str:
        from kdqat.export.onnx_graph import to_onnx

        teacher_graph = run.root / EXPORT_DIR / "teacher.float.onnx"
        if not teacher_graph.is_file() and run.teacher is not None:
            import onnx

            onnx.save(to_onnx(TorchEngine.teacher(run.teacher).model), str(teacher_graph))
        table = {
            "TensorRT INT8 (FP16 float parts)": engines.get("int8") or TrtEngine.open(trt_graph, profile),
            "TensorRT FP16 teacher": TrtEngine.open(teacher_graph if teacher_graph.is_file()
                                                    else deploy.with_name(FLOAT), profile, fp16=True),
            "onnxruntime CUDA (Q/DQ graph)": OrtEngine(deploy, "cuda"),
            "PyTorch CUDA teacher fp32": TorchEngine.teacher(run.teacher or run.student, "cuda"),
            "PyTorch CUDA student (fake-quant)": TorchEngine.student(run.student, "cuda"),
        }
        vocab = TorchEngine.teacher(run.student).model.config.vocab_size
        print(f"latency (ms, p50 / p99) at sequence {seq}")
        print(f"{'engine':36} " + " ".join(f"{'batch ' + str(b):>16}" for b in batches))
        for name, engine in table.items():
            cells = []
            for b in batches:
                stats = measure(engine.run, random_batch(b, seq, vocab, 0), warmup=10, iterations=iterations)
                cells.append(f"{stats['p50_ms']:7.2f} / {stats['p99_ms']:6.2f}")
            print(f"{name:36} " + " ".join(f"{c:>16}" for c in cells))
        return f"{len(table)} engines x batches {batches}"

    checks.run("1. TensorRT INT8 engine from the Q/DQ graph with FP16 float parts", int8_engine)
    checks.run("2. the saved plan loads in a new process", plan_reloads)
    checks.run("3. TensorRT vs the PyTorch student on dev", parity)
    checks.run("4. onnxruntime TensorRT provider", ort_tensorrt_provider)
    checks.run("5. latency", latency)
    return checks.summary()
