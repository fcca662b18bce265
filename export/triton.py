"""`kdqat export RUN_DIR --triton OUT`: a Triton Inference Server model repository from an exported run.

    OUT/<task>_student/        onnxruntime backend, the deploy graph (1/model.onnx), dynamic batching; beside its
                               config, model.fp16.onnx, the graph <task>_build_trt_plan.sh builds the plan from
    OUT/<task>_student_trt/    tensorrt_plan, when kdqat built RUN_DIR/onnx/model.fp16.plan (or model.plan) on the
                               server's GPU and TensorRT version (else Triton refuses it; the script builds one)
    OUT/<task>_tokenizer/      Python backend: texts -> input_ids / attention_mask / token_type_ids, padded to
                               the run's max length (so that requests batch together), with the run's tokenizer
    OUT/<task>_text/           ensemble: TEXT (and TEXT_PAIR for pair tasks) -> tokenizer -> student -> LOGITS
                               (an embedding run's: TEXT -> tokenizer -> student -> EMBEDDING, pooled and
                               normalised in the graph)
    OUT/kdqat_triton.json      what was written, per task, from which export

A model repository is shared by design: export writes (and replaces) only the model folders it names, each one
whole and atomically, and leaves every other folder in OUT alone; a folder of one of those names that kdqat did
not write (no MODEL_MARKER inside) is refused, never replaced.

A classifier's student models get labels.txt (one label name per line, in id order) as the logits output's
label_filename, so that Triton's classification extension answers with the dataset's label names.

Every model's inputs and outputs are read from the ONNX graph, so names, types and shapes match it.
"""

from __future__ import annotations

import logging

import json
import shutil
from pathlib import Path

import onnx

from kdqat.errors import KdqatError
from kdqat.io import atomic_dir, write_json, write_text
from kdqat.export.options import TritonOptions
from kdqat.layout import DEPLOY, EXPORT_REPORT, tensorrt_graph
from kdqat.objectives import by_problem_type

MARKER = "kdqat_triton.json"  # in OUT: {"tasks": {task: record}}
MODEL_MARKER = "kdqat_model.json"  # in each model folder kdqat wrote (Triton ignores files beside config.pbtxt)
# ONNX element type -> Triton data type
TRITON_TYPES = {onnx.TensorProto.INT64: "TYPE_INT64", onnx.TensorProto.INT32: "TYPE_INT32",
                onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.FLOAT16: "TYPE_FP16"}
MODEL_PY = Path(__file__).with_name("triton_tokenizer_model.py")


log = logging.getLogger(__name__)

def _tensors(values, what: str) -> list[dict]:
    """Name, Triton type and per-example dims (the batch dimension dropped) of graph inputs or outputs."""
    out = []
    for v in values:
        t = v.type.tensor_type
        if t.elem_type not in TRITON_TYPES:
            raise KdqatError(f"graph {what} {v.name}: element type {t.elem_type} has no Triton type here")
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim][1:]
        out.append({"name": v.name, "type": TRITON_TYPES[t.elem_type], "dims": dims})
    return out


LABELS_FILE = "labels.txt"


def _label_lines(labels: list[str]) -> str:
    """labels.txt as Triton reads it: one label name per line, in id order."""
    return "".join(f"{name}\n" for name in labels)


def _write_labels(folder: Path, labels: list[str]) -> None:
    (folder / LABELS_FILE).write_text(_label_lines(labels))


def _io_block(kind: str, tensors: list[dict]) -> str:
    def item(t: dict) -> str:
        labels = f' label_filename: "{t["label_filename"]}"' if t.get("label_filename") else ""
        return f'  {{ name: "{t["name"]}" data_type: {t["type"]} dims: [ {", ".join(map(str, t["dims"]))} ]{labels} }}'

    items = ",\n".join(item(t) for t in tensors)
    return f"{kind} [\n{items}\n]\n"


def _model_config(name: str, kind: str, max_batch_size: int, inputs: list[dict], outputs: list[dict],
                  device: str, max_queue_delay_us: int) -> str:
    head = f'name: "{name}"\n' + (f'backend: "{kind}"\n' if kind in ("onnxruntime", "python") else f'platform: "{kind}"\n')
    group = f"instance_group [ {{ kind: {'KIND_GPU' if device == 'gpu' else 'KIND_CPU'} count: 1 }} ]\n"
    return (head + f"max_batch_size: {max_batch_size}\n" + _io_block("input", inputs) + _io_block("output", outputs)
            + f"dynamic_batching {{ max_queue_delay_microseconds: {max_queue_delay_us} }}\n" + group)


def _ensemble_config(name: str, max_batch_size: int, text_inputs: list[str], tokenizer: str, student: str,
                     graph_inputs: list[dict], logits: dict, output: str = "LOGITS") -> str:
    inputs = [{"name": t, "type": "TYPE_STRING", "dims": [1]} for t in text_inputs]
    outputs = [{"name": output, "type": logits["type"], "dims": logits["dims"]}]  # names stay on the student model
    tok_in = "".join(f' input_map {{ key: "{t}" value: "{t}" }}' for t in text_inputs)
    tok_out = "".join(f' output_map {{ key: "{g["name"]}" value: "{g["name"]}" }}' for g in graph_inputs)
    model_in = "".join(f' input_map {{ key: "{g["name"]}" value: "{g["name"]}" }}' for g in graph_inputs)
    steps = (f'  step [\n    {{ model_name: "{tokenizer}" model_version: -1{tok_in}{tok_out} }},\n'
             f'    {{ model_name: "{student}" model_version: -1{model_in} output_map {{ key: "{logits["name"]}" value: "{output}" }} }}\n  ]\n')
    return (f'name: "{name}"\nplatform: "ensemble"\nmax_batch_size: {max_batch_size}\n' + _io_block("input", inputs)
            + _io_block("output", outputs) + f"ensemble_scheduling {{\n{steps}}}\n")


def write_triton_repository(onnx_dir: str | Path, out: str | Path, options: TritonOptions = TritonOptions()) -> dict:
    """Write the repository from an export folder (model.onnx, export.json, tokenizer); returns its record."""
    onnx_dir, out = Path(onnx_dir), Path(out)
    max_batch_size, device, max_queue_delay_us = options.max_batch_size, options.device, options.max_queue_delay_us
    report_file = onnx_dir / EXPORT_REPORT
    if not report_file.is_file():
        raise KdqatError(f"{report_file}: missing; run kdqat export first (the repository is built from its graph)")
    check_target(out, onnx_dir)
    report = json.loads(report_file.read_text())
    task, length = report["task"], int(report["max_seq_length"])
    graph = onnx.load(str(onnx_dir / DEPLOY), load_external_data=False)
    graph_inputs, graph_outputs = _tensors(graph.graph.input, "input"), _tensors(graph.graph.output, "output")
    pair = report["pair"] if "pair" in report else _is_pair(task)  # export.json from before "pair" was written
    labels = report.get("labels")
    output = by_problem_type(report.get("problem_type")).triton_output
    if report.get("dimension"):  # an embedding's width: the graph leaves it symbolic; the export knows it
        graph_outputs[0]["dims"] = [int(report["dimension"])]
    if labels:  # the logits output names its classes: Triton's classification extension returns names
        graph_outputs[0]["label_filename"] = LABELS_FILE
    names = {"student": f"{task}_student", "trt": f"{task}_student_trt", "tokenizer": f"{task}_tokenizer",
             "text": f"{task}_text"}
    text_inputs = ["TEXT", "TEXT_PAIR"] if pair else ["TEXT"]
    trt_graph = tensorrt_graph(onnx_dir / DEPLOY)  # model.fp16.onnx where export wrote it
    fp16 = trt_graph.name != DEPLOY
    plan = trt_graph.with_suffix(".plan")
    plan_record = json.loads(plan.with_suffix(".plan.json").read_text()) if plan.is_file() else None
    plan_skipped = None if plan_record is None else plan_misfit(plan_record.get("profile", {}), length)
    if plan_skipped is not None:
        log.warning("%s: not put into the repository: %s; build one for it with %s_build_trt_plan.sh", plan,
                    plan_skipped, task)
        plan_record = None
    kinds = [k for k in names if k != "trt" or plan_record is not None]
    ours = _recorded_models(out)
    for kind in kinds:
        _check_model_folder(out / names[kind], ours)
    source = str(onnx_dir.resolve())
    out.mkdir(parents=True, exist_ok=True)

    with atomic_dir(out / names["student"]) as model:
        (model / "1").mkdir(parents=True)
        shutil.copyfile(onnx_dir / DEPLOY, model / "1" / "model.onnx")
        if fp16:  # beside config.pbtxt, where Triton does not look for models
            shutil.copyfile(trt_graph, model / trt_graph.name)
        if labels:
            _write_labels(model, labels)
        (model / "config.pbtxt").write_text(_model_config(names["student"], "onnxruntime", max_batch_size, graph_inputs,
                                                          graph_outputs, device, max_queue_delay_us))
        write_json(model / MODEL_MARKER, {"task": task, "from": source})
    if plan_record is not None:
        with atomic_dir(out / names["trt"]) as trt:
            (trt / "1").mkdir(parents=True)
            shutil.copyfile(plan, trt / "1" / "model.plan")
            if labels:
                _write_labels(trt, labels)
            profile_max = plan_record["profile"]["max_batch"]
            (trt / "config.pbtxt").write_text(_model_config(names["trt"], "tensorrt_plan", min(max_batch_size, profile_max),
                                                            graph_inputs, graph_outputs, "gpu", max_queue_delay_us))
            write_json(trt / MODEL_MARKER, {"task": task, "from": source, "tensorrt": plan_record.get("tensorrt"),
                                            "gpu": plan_record.get("gpu")})
    script = out / f"{task}_build_trt_plan.sh"
    build_from = f"{names['student']}/{trt_graph.name if fp16 else '1/model.onnx'}"
    write_text(script, _build_plan_script(names, build_from, graph_inputs, length, max_batch_size, labels,
                                          _model_config(names["trt"], "tensorrt_plan", max_batch_size, graph_inputs,
                                                        graph_outputs, "gpu", max_queue_delay_us), task, source))
    script.chmod(0o755)
    with atomic_dir(out / names["tokenizer"]) as tok:
        (tok / "1").mkdir(parents=True)
        shutil.copyfile(MODEL_PY, tok / "1" / "model.py")
        for f in onnx_dir.iterdir():
            if f.name.startswith(("tokenizer", "special_tokens", "vocab")):
                shutil.copyfile(f, tok / "1" / f.name)
        tok_outputs = [{"name": g["name"], "type": "TYPE_INT64", "dims": [length]} for g in graph_inputs]
        config = _model_config(names["tokenizer"], "python", max_batch_size,
                               [{"name": t, "type": "TYPE_STRING", "dims": [1]} for t in text_inputs], tok_outputs,
                               "cpu", max_queue_delay_us)
        config += f'parameters {{ key: "max_length" value: {{ string_value: "{length}" }} }}\n'
        (tok / "config.pbtxt").write_text(config)
        write_json(tok / MODEL_MARKER, {"task": task, "from": source})
    with atomic_dir(out / names["text"]) as ens:
        (ens / "1").mkdir(parents=True)  # an ensemble needs a version folder, empty
        (ens / "config.pbtxt").write_text(_ensemble_config(names["text"], max_batch_size, text_inputs, names["tokenizer"],
                                                           names["student"], graph_inputs, graph_outputs[0],
                                                           output))
        write_json(ens / MODEL_MARKER, {"task": task, "from": source})
    record = {"task": task, "labels": report["labels"], "output": output, "models": {k: names[k] for k in kinds},
              "max_batch_size": max_batch_size, "device": device, "from": source, "build_trt_plan": script.name,
              **({"tensorrt_plan": {"tensorrt": plan_record.get("tensorrt"), "gpu": plan_record.get("gpu"),
                                    "serve_with": "the Triton release whose TensorRT is this version"}}
                 if plan_record else {}),
              **({"tensorrt_plan_left_out": plan_skipped} if plan_skipped else {})}
    _record(out, record)
    return record


# An engine loads only in the TensorRT version (and on the GPU model) that built it. NVIDIA's TensorRT and Triton
# containers of one release tag (YY.MM) ship the same TensorRT, so the plan Triton serves is built in the TensorRT
# container of the Triton release's tag. DEFAULT_TAG is the GPU image's (Dockerfile: tensorrt:25.06-py3).
DEFAULT_TAG = "25.06"


def _build_plan_script(names: dict, build_from: str, graph_inputs: list[dict], length: int, max_batch_size: int, labels,
                       config: str, task: str, source: str) -> str:
    """A POSIX shell script that builds <task>_student_trt/1/model.plan from the repository's own graph `build_from`
    (a path in the repository: the FP16 form, or the deploy graph) with trtexec in nvcr.io/nvidia/tensorrt:TAG-py3,
    records the TensorRT version, then writes the model's config."""
    def shapes(batch: int, seq: int) -> str:
        return ",".join(f"{t['name']}:{batch}x{seq}" for t in graph_inputs)

    trt = names["trt"]
    write_labels = (f"cat > \"$REPO/{trt}/{LABELS_FILE}\" <<'LABELS'\n{_label_lines(labels)}LABELS" if labels
                    else "# a regression: no labels")
    marker = json.dumps({"task": task, "from": source})
    return f"""#!/bin/sh
# Build {trt}/1/model.plan with the TensorRT of the Triton release that will serve it: a TensorRT engine loads only
# in the TensorRT version (and on the GPU model) that built it, and NVIDIA's Triton and TensorRT containers of one
# release tag (YY.MM) ship the same TensorRT. Run it on a machine with the serving GPU model:
#     sh {task}_build_trt_plan.sh [TAG]      (default {DEFAULT_TAG}, the kdqat GPU image's; then serve with
#                                            nvcr.io/nvidia/tritonserver:TAG-py3)
# Written by kdqat export --triton; the engine is strongly typed: INT8 where the graph's Q/DQ say so, the float
# parts in the graph's own float type (float16 in model.fp16.onnx).
set -eu
TAG="${{1:-{DEFAULT_TAG}}}"
REPO="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$REPO/{trt}/1"
docker run --rm --gpus all -v "$REPO":/models "nvcr.io/nvidia/tensorrt:$TAG-py3" sh -c '
  trtexec --onnx=/models/{build_from} --saveEngine=/models/{trt}/1/model.plan --stronglyTyped \\
    --minShapes={shapes(1, 1)} --optShapes={shapes(max_batch_size, length)} --maxShapes={shapes(max_batch_size, length)} &&
  python3 -c "import tensorrt; print(tensorrt.__version__)" > /models/{trt}/TENSORRT_VERSION'
cat > "$REPO/{trt}/config.pbtxt" <<'CONFIG'
{config}CONFIG
{write_labels}
cat > "$REPO/{trt}/{MODEL_MARKER}" <<'MARKER'
{marker}
MARKER
echo "built {trt} with TensorRT $(cat "$REPO/{trt}/TENSORRT_VERSION") from nvcr.io/nvidia/tensorrt:$TAG-py3: serve it with nvcr.io/nvidia/tritonserver:$TAG-py3"
"""


def _tasks(out: Path) -> dict:
    """OUT/kdqat_triton.json's records by task (a repository of an earlier kdqat held one record, unkeyed)."""
    try:
        saved = json.loads((out / MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    if not isinstance(saved, dict):
        return {}
    return saved.get("tasks", {saved["task"]: saved} if "task" in saved and "models" in saved else {})


def _recorded_models(out: Path) -> set[str]:
    return {name for record in _tasks(out).values() for name in record.get("models", {}).values()}


def _record(out: Path, record: dict) -> None:
    """Add (or replace) this task's record in OUT/kdqat_triton.json, keeping the other tasks'."""
    write_json(out / MARKER, {"tasks": {**_tasks(out), record["task"]: record}})


def _check_model_folder(folder: Path, recorded: set[str]) -> None:
    """A model folder export may replace: absent, or written by kdqat (MODEL_MARKER inside, or listed in the
    repository's record by an earlier kdqat)."""
    ours = (folder / MODEL_MARKER).is_file() or folder.name in recorded
    if folder.is_symlink() or (folder.exists() and not ours):
        raise KdqatError(f"--triton {folder.parent}: its model folder {folder.name} was not written by kdqat export "
                         "--triton; kdqat replaces only its own models: move that folder or choose another repository")


def _is_pair(task: str) -> bool:
    from kdqat.glue.tasks import get_task

    return get_task(task).text_b is not None


def plan_misfit(profile: dict, length: int) -> str | None:
    """Why a plan's optimization profile cannot serve the repository's requests (None: it can). The tokenizer model
    pads every request to `length` tokens and the dynamic batcher sends batches from 1 up: a plan must take batch 1
    and sequences of `length` (a plan that `kdqat bench --seq-lengths 64` built loads in Triton and refuses every
    request)."""
    min_batch, min_seq, max_seq = profile.get("min_batch", 1), profile.get("min_seq"), profile.get("max_seq")
    if min_batch > 1:
        return f"its profile starts at batch {min_batch}; the dynamic batcher sends batches from 1"
    if min_seq is None or max_seq is None or not min_seq <= length <= max_seq:
        return (f"its profile takes sequences of {min_seq}-{max_seq} tokens; the tokenizer model pads every request to "
                f"{length}")
    return None


def check_target(out: Path, onnx_dir: Path) -> None:
    """A folder (new or shared) that is not the export it reads, nor a file or a link, and can be written (itself
    where it exists: a read-only mount point too). Checked before an export that precedes it does any work."""
    from kdqat.io import check_output

    if out.is_symlink():
        raise KdqatError(f"--triton {out}: is a symbolic link; give the folder it points to, or another one")
    if out.resolve() == onnx_dir.resolve() or onnx_dir.resolve().is_relative_to(out.resolve()):
        raise KdqatError(f"--triton {out}: holds the export it is built from ({onnx_dir}); choose another folder")
    if out.exists() and not out.is_dir():
        raise KdqatError(f"--triton {out}: is a file, not a folder")
    check_output(out, "--triton", folder=True)
