"""`kdqat export DIR --onnx`: the deploy, storage and float graphs of a trained student, verified.

Writes into DIR/onnx (atomically: all or nothing):
  model.onnx         deploy graph: int8 weight codes + 8-bit activation Q/DQ, zero point 0, opset 19
  model.fp16.onnx    the deploy graph for TensorRT: the same with its float parts (and Q/DQ scales) in float16
  model.packed.onnx  storage graph: the same with weights packed as INT2 (INT4 for 4-bit), opset 25
  model.float.onnx   the student's float weights without quantization, the size and speed baseline
  tokenizer files, export.json (task, labels, sizes, compression, parity)
"""

from __future__ import annotations

import platform
from dataclasses import asdict
from pathlib import Path

import numpy as np
import onnx
import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from kdqat.data.task import TaskSpec
from kdqat.glue.data import encode, resolve_data_dir
from kdqat.export.onnx_graph import to_onnx
from kdqat.export.passes import compact_names, float16_float_parts, pack_weights, strip_doc_strings
from kdqat.export.qdq_modules import check_exportable, to_qdq
from kdqat.export.sizes import float_bytes, ideal_bytes
from kdqat.export.trt_check import check_trt
from kdqat.export.verify import reference_logits
from kdqat import __version__
from kdqat.errors import KdqatError, first_line
from kdqat.io import atomic_dir, check_output, write_json
from kdqat.layout import DEPLOY, EXPORT_DIR, FLOAT, FP16, ORT_CPU, PACKED, TRAIN_OUTPUTS
from kdqat.layout import EXPORT_REPORT as REPORT
from kdqat.model_folder import load_model_folder
from kdqat.models import load_tokenizer
from kdqat.preflight import run_lock
from kdqat.student import load_student, quant_config_of, set_act_scale_mode
from kdqat.run_dir import TrainedRun, open_run
from kdqat.runtime.batching import Features, pad_batch, predict
from kdqat.runtime.ort_engine import OrtEngine
from kdqat.runtime.ort_passes import onnxruntime_cpu
from kdqat.families import family_of
from kdqat.objectives import Objective, objective_of
from kdqat.export.options import ExportOptions
from kdqat.parity import EmbeddingParity, Parity
from kdqat.runtime.torch_engine import TorchEngine



def sample_features(task: TaskSpec, run: TrainedRun, tokenizer, opts: ExportOptions) -> tuple[Features, str]:
    """A seeded sample of the task's dev set (your data: its validation split), or random token ids when no GLUE
    data folder is known."""
    if task.source == "glue":
        data_dir = opts.data_dir or run.data_dir
        if data_dir is not None and not Path(data_dir).is_dir() and opts.data_dir is None:
            data_dir = None  # the run's folder moved; fall through to GLUE_DIR / random ids
        source = run.data_source(data_dir) if data_dir is not None or resolve_data_dir(None) is not None else None
    else:
        source = run.data_source()
    if source is not None:
        split = task.dev_splits[0]
        dev = source.load(split)
        dev = dev.shuffle(seed=opts.seed).select(range(min(opts.samples, len(dev))))
        return encode(dev, tokenizer, run.max_seq_length), f"{task.name} {split} ({len(dev)} examples)"
    rng = np.random.default_rng(opts.seed)
    ids = []
    for _ in range(opts.samples):
        n = int(rng.integers(8, run.max_seq_length + 1))
        body = rng.integers(1000, tokenizer.vocab_size, n - 2).tolist()
        ids.append([tokenizer.cls_token_id, *body, tokenizer.sep_token_id])
    return {"input_ids": ids}, f"random token ids ({opts.samples} sequences, no GLUE data given)"


def _graph_record(model: onnx.ModelProto, path: Path) -> dict:
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return {"file": path.name, "bytes": path.stat().st_size, "opset": opset, "ir_version": model.ir_version}


def _save_checked(model: onnx.ModelProto, path: Path) -> dict:
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as e:
        raise KdqatError(f"{path.name}: onnx.checker refused the graph ({first_line(e)})") from None
    onnx.save(model, str(path))
    return _graph_record(model, path)


def _check(name: str, parity: Parity | EmbeddingParity, objective: Objective, minimum: float) -> None:
    """Fail where the objective's gate fails: a classifier's predictions that differ where the PyTorch student was
    decided (margin > DECIDED_MARGIN: a near-tie can flip on a rounding-level difference of two correct
    implementations, a decided one cannot); an embedding further than `minimum` cosine from the PyTorch student's."""
    failure = objective.parity_failure(parity, minimum)
    if failure is not None:
        raise KdqatError(f"{name}: {failure}. Nothing was written.")


def output_folder(opts: ExportOptions) -> Path:
    """Where an export goes: --output-dir, else RUN_DIR/onnx."""
    return Path(opts.output_dir) if opts.output_dir else open_run(opts.run_dir).root / EXPORT_DIR


def check_target(out: Path, run: TrainedRun) -> None:
    """Refuse, before any work, a target export must not replace: a link, a folder it did not write (a
    previous export has export.json), the run folder or a folder holding it, or anything inside the run's
    own files."""
    if out.is_symlink():
        raise KdqatError(f"--output-dir {out}: is a symbolic link; give the folder it points to, or another one")
    target = out.resolve()
    owned = [run.root / name for name in TRAIN_OUTPUTS] + [run.student]
    if target == run.root.resolve() or run.root.resolve().is_relative_to(target):
        raise KdqatError(f"--output-dir {out}: holds the run {run.root} itself; export into a folder of its own "
                         f"(default {run.root / EXPORT_DIR})")
    for own in owned:
        if own.exists() and target.is_relative_to(own.resolve()):
            raise KdqatError(f"--output-dir {out}: lies inside the run's {own}; export into a folder of its own")
    if out.exists():
        if not out.is_dir():
            raise KdqatError(f"--output-dir {out}: is a file, not a folder")
        if any(out.iterdir()) and not (out / REPORT).is_file():
            raise KdqatError(f"--output-dir {out}: exists and was not written by kdqat export (no {REPORT}); "
                             "export replaces only its own earlier exports: choose another folder")
    check_output(out, "--output-dir", folder=True)  # the folder itself where it exists (a read-only mount point)


def export_student(opts: ExportOptions, console: Console | None = None) -> dict:
    """Export, check and verify; returns the report also written to export.json. Holds the run folder's lock:
    never while a kdqat train of the same folder runs."""
    run = open_run(opts.run_dir)
    check_target(output_folder(opts), run)  # refused before the lock (which leaves its file) is taken
    with run_lock(run.root):
        return _export(opts, console)


def _export(opts: ExportOptions, console: Console | None = None) -> dict:
    console = console or Console(stderr=True)
    run = open_run(opts.run_dir)
    out = output_folder(opts)
    check_target(out, run)
    task = run.spec
    student = load_student(run.student)
    check_exportable(student)
    set_act_scale_mode(student, "static")
    config = quant_config_of(student)
    tokenizer = load_tokenizer(str(run.student))
    features, source = sample_features(task, run, tokenizer, opts)
    objective = objective_of(task)
    output = objective.onnx_output
    compared = objective.compare  # fp16=True: float16 rounding is larger than the float32 graphs' (kdqat.parity)
    gate = getattr(opts, objective.gate_option)

    with atomic_dir(out) as tmp, Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                          TimeElapsedColumn(), console=console, disable=not opts.progress) as bar:
        step = bar.add_task("export graphs", total=3)
        deploy = strip_doc_strings(to_onnx(to_qdq(student), output_name=output))
        graphs = {"deploy": _save_checked(deploy, tmp / DEPLOY)}
        fp16 = float16_float_parts(deploy)
        graphs["fp16"] = _save_checked(fp16, tmp / FP16)
        for name, graph in ((DEPLOY, deploy), (FP16, fp16)):
            violations = check_trt(graph)  # our own graph: a violation is a bug in export, not user input
            if violations:
                raise KdqatError(f"{name} breaks a TensorRT rule: {violations[0]} ({len(violations)} in all)")
        bar.advance(step)
        if config.weight_scheme != "none":
            graphs["packed"] = _save_checked(compact_names(pack_weights(deploy, config.weight_bits)), tmp / PACKED)
        bar.advance(step)
        float_model = load_model_folder(run.student).eval()  # the student's own float weights, unquantized
        graphs["float"] = _save_checked(strip_doc_strings(to_onnx(float_model, output_name=output)), tmp / FLOAT)
        if opts.ort_cpu_graph:
            graphs["ort_cpu"] = _save_checked(onnxruntime_cpu(deploy), tmp / ORT_CPU)
        bar.advance(step)

        def logits(engine, label: str) -> np.ndarray:
            task_id = bar.add_task(label, total=len(features["input_ids"]))
            return predict(engine.run, features, opts.batch_size, lambda n: bar.advance(task_id, n))

        torch_logits = logits(TorchEngine(student), "PyTorch student")
        parity = {"ort_deploy_vs_torch": compared(torch_logits, logits(OrtEngine(tmp / DEPLOY), "onnxruntime deploy"))}
        fp16_engine = OrtEngine(tmp / FP16, cpu_rewrites=False)  # onnxruntime casts around its CPU kernels lacking float16
        parity["ort_fp16_vs_torch"] = compared(torch_logits, logits(fp16_engine, "onnxruntime fp16 (TensorRT's graph)"),
                                               fp16=True)
        if opts.ort_cpu_graph:
            ort_cpu = OrtEngine(tmp / ORT_CPU, cpu_rewrites=False)
            parity["ort_cpu_graph_vs_torch"] = compared(torch_logits, logits(ort_cpu, "onnxruntime CPU form"))
        if "packed" in graphs and ort_loads_int2():
            packed = logits(OrtEngine(tmp / PACKED), "onnxruntime packed")
            parity["ort_packed_vs_torch"] = compared(torch_logits, packed)
        rows = list(range(min(opts.reference_examples, len(features["input_ids"]))))
        batch = pad_batch(features, rows)
        reference_torch = TorchEngine(student).run(batch)
        parity["onnx_reference_vs_torch"] = compared(reference_torch, reference_logits(deploy, batch))
        if "packed" in graphs and not ort_loads_int2():  # e.g. onnxruntime-gpu, whose newest release is 1.31
            packed_model = onnx.load(str(tmp / PACKED))
            parity["onnx_reference_packed_vs_torch"] = compared(reference_torch, reference_logits(packed_model, batch))
        for name, p in parity.items():
            reference = name.startswith("onnx_reference")  # the specification's own numbers: no flipped prediction
            _check(name, p, objective, objective.gate_value(gate, reference))

        tokenizer.save_pretrained(tmp)
        ideal = ideal_bytes(student)
        float_size = float_bytes(float_model)
        report = {
            "task": task.name,
            "labels": list(task.labels) if task.labels else None,
            "pair": task.pair,  # inputs are [text, text_pair]
            "problem_type": objective.problem_type,
            "max_seq_length": run.max_seq_length,
            "inputs": list(family_of(student).inputs),  # what the graph takes, as its encoder family says
            "output": output,
            **objective.export_fields(student),
            "quant_config": config.to_dict(),
            "graphs": graphs,
            "tensorrt_rules": "deploy and fp16 graphs checked: no violations (export.trt_check)",
            "sizes": {
                "float_parameters_bytes": float_size,
                "ideal_bytes": ideal,
                "deploy_compression": float_size / graphs["deploy"]["bytes"],
                **({"packed_compression": float_size / graphs["packed"]["bytes"],
                    "packed_over_ideal": graphs["packed"]["bytes"] / ideal,
                    "ideal_compression": float_size / ideal} if "packed" in graphs else {}),
            },
            "parity": {"inputs": source,
                       objective.gate_option: gate,
                       **{k: v.to_dict() for k, v in parity.items()}},
            "options": asdict(opts),
            "versions": {"kdqat": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
                         "onnxruntime": _ort_version(), "python": platform.python_version()},
        }
        write_json(tmp / REPORT, report)
    return report


# The first onnxruntime that loads INT2 weights (the packed graph): 1.22-1.23 refuse its IR version 13, 1.24-1.31
# its tensor(int2) type (measured on CPU wheels 1.22.1, 1.23.2, 1.24.4, 1.28.0, 1.31.1). Below it, export checks
# the packed graph with onnx.reference instead.
ORT_INT2 = (1, 32)


def ort_loads_int2() -> bool:
    import onnxruntime

    return tuple(int(x) for x in onnxruntime.__version__.split(".")[:2]) >= ORT_INT2


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__
