"""A real Triton Inference Server loading what `kdqat export --triton` writes, unchanged.

nvidia-pytriton 0.7.0 bundles a Triton Inference Server 2.51 binary that runs on a CPU, with the python backend
only; it lives in its own environment (`bash tests/triton_env/make_venv.sh`, which `.ci/run` runs; numpy below 2).
Triton's C++ onnxruntime backend is on no package registry: `tests/triton_env/onnxruntime_standin.py` stands in for
it, a Python-based backend of that name running the same model.onnx with pip onnxruntime.

What this proves: the model configs load under --disable-auto-complete-config (Triton's strict mode); the
ensemble, the tokenizer model and the student answer over HTTP and gRPC with onnxruntime's numbers; the labels
(the classification extension); dynamic batching; a classifier and an embedding model in one repository; a bad
request's error. What it does not: the C++ onnxruntime backend itself, GPU instances, TensorRT plans.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from conftest import run_cli

REPO = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent / "triton_env"


def triton_python() -> Path:
    """The interpreter of the Triton environment: $KDQAT_TRITON_PYTHON, else .venv-triton/bin/python."""
    given = os.environ.get("KDQAT_TRITON_PYTHON")
    python = Path(given) if given else REPO / ".venv-triton" / "bin" / "python"
    if not python.is_file():
        pytest.skip(f"no Triton environment at {python}: run `bash tests/triton_env/make_venv.sh` (CI does)")
    return python


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def backends(python: Path, folder: Path) -> tuple[Path, str]:
    """A backend directory: Triton's python backend with the stub for the environment's Python, and the
    onnxruntime stand-in (copies: Triton refuses backend files that link outside their directory)."""
    found = subprocess.run([python, "-c", "import pytriton, sys, sysconfig; print(pytriton.__path__[0]); "
                            "print(f'{sys.version_info[0]}.{sys.version_info[1]}'); print(sysconfig.get_config_var('LIBDIR'))"],
                           capture_output=True, text=True, check=True).stdout.split()
    server = Path(found[0]) / "tritonserver"
    (folder / "python").mkdir(parents=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy(server / "backends" / "python" / name, folder / "python")
    shutil.copy(server / "python_backend_stubs" / found[1] / "triton_python_backend_stub", folder / "python")
    (folder / "onnxruntime").mkdir()
    shutil.copy(HERE / "onnxruntime_standin.py", folder / "onnxruntime" / "model.py")
    return server, found[2]


class Triton:
    """tritonserver on 127.0.0.1 (HTTP and gRPC), started on `repository`, stopped by stop()."""

    def __init__(self, python: Path, repository: Path, scratch: Path) -> None:
        server, libdir = backends(python, scratch / "backends")
        self.http_port, self.grpc_port = free_ports(2)
        self.url = f"http://127.0.0.1:{self.http_port}"
        # the python backend's stub needs the interpreter's libpython and the wheel's bundled libraries
        libraries = [libdir, str(server.parent.parent / "nvidia_pytriton.libs")]
        env = {**os.environ, "PATH": f"{python.parent}:{os.environ['PATH']}",
               "LD_LIBRARY_PATH": ":".join(libraries + [os.environ.get("LD_LIBRARY_PATH", "")])}
        self.log = (scratch / "tritonserver.log").open("w")
        self.process = subprocess.Popen(
            [server / "bin" / "tritonserver", "--model-repository", repository, "--backend-directory", scratch / "backends",
             "--disable-auto-complete-config", "--http-address", "127.0.0.1", "--http-port", str(self.http_port),
             "--grpc-address", "127.0.0.1", "--grpc-port", str(self.grpc_port), "--allow-metrics", "false",
             "--exit-on-error", "true"], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.log_path = scratch / "tritonserver.log"

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"tritonserver exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"tritonserver not ready after {timeout} s: {self.log_path.read_text()[-3000:]}")

    def infer(self, model: str, inputs: dict[str, list[str]], outputs: list[dict] | None = None) -> httpx.Response:
        body = {"inputs": [{"name": name, "shape": [len(texts), 1], "datatype": "BYTES", "data": texts}
                           for name, texts in inputs.items()]}
        if outputs:
            body["outputs"] = outputs
        return httpx.post(f"{self.url}/v2/models/{model}/infer", json=body, timeout=60)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()


@pytest.fixture(scope="module")
def triton(tmp_path_factory, exported_run, tiny_model_dir):
    """One repository holding two tasks, written by `kdqat export --triton` into the same folder: the tiny RTE
    classifier and a tiny embedding model ("notes"); one server on it."""
    from test_embedding import sentences, st_folder

    from kdqat.embedding import Pooling

    python = triton_python()
    root = tmp_path_factory.mktemp("triton-server")
    repository = root / "repository"
    done = run_cli("export", exported_run, "--no-onnx", "--triton", repository, "--triton-max-batch-size", "8", cwd=root)
    assert done.returncode == 0, done.stderr
    model = st_folder(tiny_model_dir, root / "float-model", Pooling("mean", True))
    (root / "text.txt").write_text("\n".join(sentences(80)) + "\n")
    done = run_cli("train", "--objective", "embedding", "--task", "notes", "--train-file", "text.txt", "--model", model,
                   "--output-dir", "embed", "--max-steps", "4", "--eval-steps", "2", "--batch-size", "16",
                   "--max-seq-length", "32", "--no-progress", cwd=root)
    assert done.returncode == 0, done.stderr
    done = run_cli("export", "embed", "--no-progress", "--triton", repository, "--triton-max-batch-size", "8", cwd=root)
    assert done.returncode == 0, done.stderr
    server = Triton(python, repository, root)
    try:
        server.wait_ready()
        yield server, exported_run, root / "embed"
    finally:
        server.stop()


def engine_rows(run: Path, texts: list, pair: bool) -> np.ndarray:
    """What onnxruntime gives for the texts, tokenized and padded as the repository's tokenizer model does."""
    from transformers import AutoTokenizer

    from kdqat.runtime.ort_engine import OrtEngine

    report = json.loads((run / "onnx" / "export.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(str(run / "onnx"))
    a, b = ([t[0] for t in texts], [t[1] for t in texts]) if pair else (texts, None)
    enc = tokenizer(a, b, truncation=True, max_length=report["max_seq_length"], padding="max_length", return_tensors="np")
    return OrtEngine(run / "onnx" / "model.onnx").run({k: v.astype(np.int64) for k, v in enc.items()})


PAIRS = [["a man is playing a guitar", "a person plays music"], ["the cat sat on the mat", "a dog ran outside"],
         ["it is raining in london", "the weather in london is wet"]]


def test_every_model_of_both_tasks_loads_under_strict_config(triton):
    server, _, _ = triton
    index = httpx.post(f"{server.url}/v2/repository/index", json={}, timeout=30).json()
    states = {m["name"]: m["state"] for m in index}
    assert states == {name: "READY" for name in ("rte_student", "rte_tokenizer", "rte_text",
                                                  "notes_student", "notes_tokenizer", "notes_text")}


def test_the_classifier_ensemble_answers_pairs_with_onnxruntimes_logits_over_http_and_grpc(triton):
    import tritonclient.grpc as grpcclient

    server, run, _ = triton
    answer = server.infer("rte_text", {"TEXT": [p[0] for p in PAIRS], "TEXT_PAIR": [p[1] for p in PAIRS]})
    assert answer.status_code == 200, answer.text
    output = answer.json()["outputs"][0]
    logits = np.array(output["data"], dtype=np.float32).reshape(output["shape"])
    expected = engine_rows(run, PAIRS, pair=True)
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    tensors = []
    for name, texts in (("TEXT", [p[0] for p in PAIRS]), ("TEXT_PAIR", [p[1] for p in PAIRS])):
        tensor = grpcclient.InferInput(name, [len(texts), 1], "BYTES")
        tensor.set_data_from_numpy(np.array(texts, dtype=object).reshape(-1, 1))
        tensors.append(tensor)
    np.testing.assert_allclose(client.infer("rte_text", tensors).as_numpy("LOGITS"), expected, atol=1e-5)


def test_the_classification_extension_names_the_labels(triton):
    server, run, _ = triton
    answer = server.infer("rte_text", {"TEXT": [PAIRS[0][0]], "TEXT_PAIR": [PAIRS[0][1]]},
                          [{"name": "LOGITS", "parameters": {"classification": 2}}])
    assert answer.status_code == 200, answer.text
    ranked = answer.json()["outputs"][0]["data"]  # "score:index:label", best first
    labels = json.loads((run / "onnx" / "export.json").read_text())["labels"]
    logits = engine_rows(run, PAIRS[:1], pair=True)[0]
    assert [r.split(":", 2)[2] for r in ranked] == [labels[i] for i in np.argsort(-logits)]


def test_the_dynamic_batcher_gathers_concurrent_requests(triton):
    server, _, _ = triton

    def before() -> tuple[int, int]:
        stats = httpx.get(f"{server.url}/v2/models/rte_student/stats", timeout=30).json()["model_stats"][0]
        return stats["inference_count"], stats["execution_count"]

    inferences, executions = before()
    with ThreadPoolExecutor(16) as pool:  # bounded: 64 one-pair requests
        answers = list(pool.map(lambda i: server.infer("rte_text", {"TEXT": [PAIRS[i % 3][0]], "TEXT_PAIR": [PAIRS[i % 3][1]]}),
                                range(64)))
    assert all(a.status_code == 200 for a in answers)
    after_inferences, after_executions = before()
    assert after_inferences - inferences == 64
    assert after_executions - executions < 64  # some engine calls carried several requests


def test_the_embedding_ensemble_answers_onnxruntimes_vectors(triton):
    server, _, embed = triton
    texts = ["book a flight to paris", "what is my bank balance"]
    answer = server.infer("notes_text", {"TEXT": texts})
    assert answer.status_code == 200, answer.text
    output = answer.json()["outputs"][0]
    assert output["name"] == "EMBEDDING"
    vectors = np.array(output["data"], dtype=np.float32).reshape(output["shape"])
    np.testing.assert_allclose(vectors, engine_rows(embed, texts, pair=False), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_a_bad_request_gets_tritons_error_and_the_server_goes_on(triton):
    server, _, _ = triton
    answer = server.infer("rte_text", {"TEXT": ["only one side of the pair"]})  # TEXT_PAIR missing
    assert answer.status_code == 400 and "TEXT_PAIR" in answer.json()["error"]
    answer = server.infer("rte_text", {"TEXT": [PAIRS[0][0]], "TEXT_PAIR": [PAIRS[0][1]]})
    assert answer.status_code == 200
