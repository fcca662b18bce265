"""kdqat export --triton: every config.pbtxt parses as Triton's ModelConfig and matches the ONNX graph; the
tokenizer model tokenizes as the run does; the ensemble wires them. (Triton itself does not install here.)"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import types

import numpy as np
import onnx
import pytest
from conftest import run_cli
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from kdqat.export.options import TritonOptions
from kdqat.export.triton import write_triton_repository
from kdqat import KdqatError

DTYPE = {onnx.TensorProto.INT64: model_config_pb2.TYPE_INT64, onnx.TensorProto.FLOAT: model_config_pb2.TYPE_FP32}


def config(folder) -> model_config_pb2.ModelConfig:
    return text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def repository(exported_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("triton") / "repo"
    done = run_cli("export", exported_run, "--no-onnx", "--triton", out, "--triton-max-batch-size", "16", cwd=out.parent)
    assert done.returncode == 0, done.stderr
    assert f"wrote the Triton model repository {out}/: rte_student, rte_tokenizer, rte_text" in done.stdout
    return out


def test_student_config_matches_the_onnx_graph(repository, exported_run):
    graph = onnx.load(exported_run / "onnx" / "model.onnx")
    student = config(repository / "rte_student")
    assert student.backend == "onnxruntime" and student.max_batch_size == 16
    assert student.HasField("dynamic_batching")
    assert (repository / "rte_student" / "1" / "model.onnx").read_bytes() == (exported_run / "onnx" / "model.onnx").read_bytes()
    for declared, actual in ((student.input, graph.graph.input), (student.output, graph.graph.output)):
        assert [t.name for t in declared] == [v.name for v in actual]
        for t, v in zip(declared, actual):
            assert t.data_type == DTYPE[v.type.tensor_type.elem_type]
            shape = [d.dim_value or -1 for d in v.type.tensor_type.shape.dim]
            assert list(t.dims) == shape[1:]  # the batch dimension is Triton's own
    assert list(student.output[0].dims) == [2]


def test_ensemble_wires_tokenizer_into_student(repository):
    text, tokenizer, student = (config(repository / n) for n in ("rte_text", "rte_tokenizer", "rte_student"))
    assert text.platform == "ensemble" and [t.name for t in text.input] == ["TEXT", "TEXT_PAIR"]
    assert all(t.data_type == model_config_pb2.TYPE_STRING for t in text.input)
    first, second = text.ensemble_scheduling.step
    assert (first.model_name, second.model_name) == ("rte_tokenizer", "rte_student")
    assert set(first.input_map) == {t.name for t in tokenizer.input}
    assert set(first.output_map) == {t.name for t in tokenizer.output} == set(second.input_map)
    assert set(second.input_map) == {t.name for t in student.input}
    assert dict(second.output_map) == {"logits": "LOGITS"} and list(text.output[0].dims) == [2]
    assert tokenizer.backend == "python" and tokenizer.parameters["max_length"].string_value == "32"
    assert all(list(t.dims) == [32] for t in tokenizer.output)
    record = json.loads((repository / "kdqat_triton.json").read_text())["tasks"]["rte"]
    assert record["models"] == {"student": "rte_student", "tokenizer": "rte_tokenizer", "text": "rte_text"}


def test_tokenizer_model_tokenizes_like_the_run(repository, monkeypatch):
    """model.py under a stand-in of Triton's Python-backend module: same ids as the run's tokenizer."""
    from transformers import AutoTokenizer

    fake = types.ModuleType("triton_python_backend_utils")

    class Tensor:
        def __init__(self, name, array):
            self.name, self.array = name, array

        def as_numpy(self):
            return self.array

    fake.Tensor = Tensor
    fake.InferenceResponse = lambda output_tensors, error=None: types.SimpleNamespace(tensors=output_tensors, error=error)
    fake.TritonError = str
    fake.get_input_tensor_by_name = lambda request, name: request.get(name)
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake)
    folder = repository / "rte_tokenizer"
    spec = importlib.util.spec_from_file_location("kdqat_triton_tokenizer", folder / "1" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    from google.protobuf import json_format

    # what Triton hands a Python model: its config.pbtxt as JSON with the protobuf's own field names
    model_config = json_format.MessageToJson(config(folder), preserving_proto_field_name=True)
    model.initialize({"model_config": model_config})
    texts = np.array([[b"A man is eating."], [b"Nobody eats."]], dtype=object)
    pairs = np.array([[b"Someone eats food."], [b"A man is eating."]], dtype=object)
    (response,) = model.execute([{"TEXT": Tensor("TEXT", texts), "TEXT_PAIR": Tensor("TEXT_PAIR", pairs)}])
    assert response.error is None
    got = {t.name: t.array for t in response.tensors}
    expected = AutoTokenizer.from_pretrained(folder / "1")(
        ["A man is eating.", "Nobody eats."], ["Someone eats food.", "A man is eating."], truncation=True,
        max_length=32, padding="max_length", return_tensors="np")
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        assert got[name].dtype == np.int64 and got[name].shape == (2, 32)
        np.testing.assert_array_equal(got[name], expected[name])


def test_a_built_tensorrt_plan_becomes_a_tensorrt_model(exported_run, tmp_path):
    onnx_dir = tmp_path / "onnx"
    shutil.copytree(exported_run / "onnx", onnx_dir)
    (onnx_dir / "model.fp16.plan").write_bytes(b"plan bytes")  # TrtEngine.open's plan of model.fp16.onnx
    profile = {"min_batch": 1, "opt_batch": 8, "max_batch": 8, "min_seq": 1, "opt_seq": 32, "max_seq": 32}
    (onnx_dir / "model.fp16.plan.json").write_text(json.dumps({"profile": profile}))
    record = write_triton_repository(onnx_dir, tmp_path / "repo", TritonOptions(max_batch_size=32, device="gpu"))
    trt = config(tmp_path / "repo" / "rte_student_trt")
    assert trt.platform == "tensorrt_plan" and trt.max_batch_size == 8  # not beyond the engine's profile
    assert (tmp_path / "repo" / "rte_student_trt" / "1" / "model.plan").read_bytes() == b"plan bytes"
    assert config(tmp_path / "repo" / "rte_student").instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert record["models"]["trt"] == "rte_student_trt"


@pytest.mark.parametrize("profile, reason", [
    ({"min_batch": 1, "max_batch": 8, "min_seq": 64, "max_seq": 64}, "takes sequences of 64-64 tokens; the tokenizer "
                                                                     "model pads every request to 32"),
    ({"min_batch": 4, "max_batch": 8, "min_seq": 1, "max_seq": 32}, "starts at batch 4"),
])
def test_a_plan_whose_profile_cannot_serve_the_requests_is_left_out(exported_run, tmp_path, caplog, profile, reason):
    """A plan built for other lengths (kdqat bench --seq-lengths 64) would load in Triton and refuse every request."""
    onnx_dir = tmp_path / "onnx"
    shutil.copytree(exported_run / "onnx", onnx_dir)
    (onnx_dir / "model.fp16.plan").write_bytes(b"plan bytes")
    (onnx_dir / "model.fp16.plan.json").write_text(json.dumps({"profile": profile}))
    with caplog.at_level("WARNING", logger="kdqat.export.triton"):
        record = write_triton_repository(onnx_dir, tmp_path / "repo", TritonOptions(max_batch_size=32, device="gpu"))
    assert "trt" not in record["models"] and not (tmp_path / "repo" / "rte_student_trt").exists()
    assert reason in caplog.text and "rte_build_trt_plan.sh" in caplog.text
    assert (tmp_path / "repo" / "rte_build_trt_plan.sh").is_file()  # the way to build a fitting one


def test_the_repository_replaces_only_its_own_earlier_self(exported_run, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(KdqatError, match="holds the export it is built from"):
        write_triton_repository(exported_run / "onnx", exported_run)
    write_triton_repository(exported_run / "onnx", tmp_path / "mine")  # a shared folder: other files stay
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    write_triton_repository(exported_run / "onnx", tmp_path / "repo")
    write_triton_repository(exported_run / "onnx", tmp_path / "repo", TritonOptions(max_batch_size=4))  # its own: replaced
    assert config(tmp_path / "repo" / "rte_student").max_batch_size == 4
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "rte_student").mkdir()  # a model of the same name that kdqat did not write
    with pytest.raises(KdqatError, match="its model folder rte_student was not written by kdqat export --triton"):
        write_triton_repository(exported_run / "onnx", tmp_path / "other")
    assert list((tmp_path / "other").iterdir()) == [tmp_path / "other" / "rte_student"]


def test_two_tasks_share_one_repository(exported_run, tmp_path):
    """Another task's export adds its models and record beside the first task's, which stay as they were."""
    other = tmp_path / "onnx-intents"
    shutil.copytree(exported_run / "onnx", other)
    report = json.loads((other / "export.json").read_text())
    (other / "export.json").write_text(json.dumps({**report, "task": "intents", "labels": ["a", "b"], "pair": False}))
    repo = tmp_path / "repo"
    write_triton_repository(exported_run / "onnx", repo)
    (repo / "somebody_elses_model").mkdir()
    before = (repo / "rte_student" / "config.pbtxt").read_text()
    write_triton_repository(other, repo)
    assert (repo / "rte_student" / "config.pbtxt").read_text() == before and (repo / "rte_text").is_dir()
    assert (repo / "intents_student" / "labels.txt").read_text() == "a\nb\n"
    assert [t.name for t in config(repo / "intents_text").input] == ["TEXT"]
    assert (repo / "somebody_elses_model").is_dir()
    tasks = json.loads((repo / "kdqat_triton.json").read_text())["tasks"]
    assert set(tasks) == {"rte", "intents"} and tasks["intents"]["labels"] == ["a", "b"]
    assert not [p.name for p in repo.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_the_plan_is_built_by_a_script_with_the_serving_releases_tensorrt(exported_run, tmp_path):
    """A plan only loads in the TensorRT that built it: the repository carries a script that builds it with
    trtexec in the TensorRT container of the Triton release's tag, records the TensorRT version, and writes the
    model's config (run here with a stand-in `docker` that does what the container would)."""
    import filecmp
    import os
    import stat
    import subprocess

    repo = tmp_path / "repo"
    write_triton_repository(exported_run / "onnx", repo)
    script = repo / "rte_build_trt_plan.sh"
    assert script.stat().st_mode & stat.S_IXUSR and not (repo / "rte_student_trt").exists()
    text = script.read_text()
    assert '"nvcr.io/nvidia/tensorrt:$TAG-py3"' in text and 'TAG="${1:-25.06}"' in text
    assert "--onnx=/models/rte_student/model.fp16.onnx --saveEngine=/models/rte_student_trt/1/model.plan --stronglyTyped" in text
    assert filecmp.cmp(repo / "rte_student" / "model.fp16.onnx", exported_run / "onnx" / "model.fp16.onnx", shallow=False)
    assert "--maxShapes=input_ids:32x32,attention_mask:32x32,token_type_ids:32x32" in text
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(
        '#!/bin/sh\n'
        'for a; do case "$a" in *:/models) HOST="${a%:/models}";; esac; done\n'
        'printf "%s\\n" "$@" > "$HOST/docker-args"\n'
        'ENGINE=$(printf "%s" "$*" | tr "\\n" " " | sed "s|.*--saveEngine=/models/\\([^ ]*\\).*|\\1|")\n'
        'echo plan > "$HOST/$ENGINE"; echo 10.13.3.9 > "$HOST/$(dirname "$(dirname "$ENGINE")")/TENSORRT_VERSION"\n')
    (bin_dir / "docker").chmod(0o755)
    done = subprocess.run(["sh", str(script), "25.10"], capture_output=True, text=True,
                          env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "serve it with nvcr.io/nvidia/tritonserver:25.10-py3" in done.stdout and "TensorRT 10.13.3.9" in done.stdout
    assert "nvcr.io/nvidia/tensorrt:25.10-py3" in (repo / "docker-args").read_text().splitlines()
    trt = config(repo / "rte_student_trt")
    assert trt.platform == "tensorrt_plan" and [t.name for t in trt.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert trt.output[0].label_filename == "labels.txt"
    assert (repo / "rte_student_trt" / "labels.txt").read_text() == "entailment\nnot_entailment\n"
    write_triton_repository(exported_run / "onnx", repo)  # the built model is kdqat's own: a re-export keeps going
    assert (repo / "rte_student_trt" / "1" / "model.plan").is_file()
