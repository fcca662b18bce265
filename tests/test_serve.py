"""kdqat serve: a real server on a free port, answers equal to the engine's, batching on = off, every bad
request class refused with a one-line JSON error and counted, slow clients and SIGTERM handled."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from kdqat.glue.data import load_split
from kdqat.glue.tasks import get_task


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, run, *options: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen([sys.executable, "-m", "kdqat.cli", "serve", str(run), "--port", str(self.port),
                                         *options], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait(self, status: str = "ready", timeout: float = 90) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited: {self.process.stderr.read()}")
            try:
                body = httpx.get(f"{self.url}/health", timeout=2).json()
                if body["status"] == status:
                    return body
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"the server did not become {status}")

    def metric(self, name: str) -> float:
        """A metric's value as the server exposes it now (0 when it has none yet)."""
        lines = httpx.get(f"{self.url}/metrics", timeout=5).text.splitlines()
        return next((float(line.split()[-1]) for line in lines if line.split(" ")[0] == name), 0.0)

    def wait_for_metric(self, name: str, at_least: float, timeout: float = 30) -> None:
        """Poll /metrics until `name` reaches `at_least` (bounded in time)."""
        deadline = time.monotonic() + timeout
        while self.metric(name) < at_least:
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} stayed below {at_least} for {timeout} s")
            time.sleep(0.02)

    def predict(self, inputs, **kwargs) -> httpx.Response:
        return httpx.post(f"{self.url}/v1/predict", json=inputs, timeout=30, **kwargs)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


@pytest.fixture(scope="module")
def servers(exported_run):
    batched = Server(exported_run, "--batching", "--max-batch-size", "8", "--max-wait-ms", "20")
    single = Server(exported_run, "--no-batching", "--workers", "1")  # one process (the batched one: two, on 2+ cores)
    try:
        batched.wait()
        single.wait()
        yield batched, single
    finally:
        batched.stop()
        single.stop()


@pytest.fixture(scope="module")
def rte_pairs(glue_dir) -> list[list[str]]:
    dev = load_split(get_task("rte"), "dev", glue_dir, max_samples=24)
    return [[a, b] for a, b in zip(dev["text_a"], dev["text_b"])]


def test_answers_match_the_engine_kdqat_eval_runs(servers, exported_run, rte_pairs):
    from transformers import AutoTokenizer

    from kdqat.runtime.batching import predict
    from kdqat.runtime.ort_engine import OrtEngine

    batched, _ = servers
    answer = batched.predict(rte_pairs)
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    tokenizer = AutoTokenizer.from_pretrained(exported_run / "onnx")
    enc = tokenizer([p[0] for p in rte_pairs], [p[1] for p in rte_pairs], truncation=True, max_length=32)
    logits = predict(OrtEngine(exported_run / "onnx" / "model.onnx").run, dict(enc), 32)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert [p["label"] for p in predictions] == [["entailment", "not_entailment"][i] for i in probs.argmax(axis=1)]
    served = np.array([[p["probabilities"]["entailment"], p["probabilities"]["not_entailment"]] for p in predictions])
    np.testing.assert_allclose(served, probs, rtol=0, atol=1e-6)


def test_the_server_tokenizes_exactly_as_transformers_does(exported_run, rte_pairs):
    """The server runs the export's tokenizer.json directly (no transformers, no PyTorch import): same ids, masks
    and segments as transformers' tokenizer, pairs and truncation included."""
    from kdqat.runtime.serving_tokenizer import RustTokenizer, TransformersTokenizer, open_tokenizer

    folder = exported_run / "onnx"
    rust, reference = RustTokenizer(folder, 32), TransformersTokenizer(folder, 32)
    a, b = [p[0] for p in rte_pairs], [p[1] for p in rte_pairs]
    long = [" ".join(a[i : i + 5]) for i in range(0, len(a), 5)]  # past the 32 tokens kept
    odd = ["", "   ", "héllo Wörld 🤖", "日本語のテキスト", "a\tb\nc", "[SEP] [CLS] ##ing"]
    for x, y in ((a, None), (a, b), (long, None), (long, long[::-1]), (odd, None), (odd, odd[::-1]), (a[:3], long[:3])):
        assert rust(x, y) == reference(x, y)
    assert rust.counts(long) == reference.counts(long) and max(rust.counts(long)) > 32
    assert isinstance(open_tokenizer(folder, 32), RustTokenizer)


def test_batching_on_and_off_give_identical_answers_and_batching_batches(servers, rte_pairs):
    requests = [rte_pairs[i : i + 1 + i % 3] for i in range(0, 24, 2)]

    def answers(server):
        with ThreadPoolExecutor(len(requests)) as pool:
            return list(pool.map(lambda r: server.predict(r).json()["predictions"], requests))

    batched, single = servers
    assert answers(batched) == answers(single)
    text = httpx.get(f"{batched.url}/metrics").text
    sizes = {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line.startswith("kdqat_batch_size_")}
    calls, inputs = sizes["kdqat_batch_size_count"], sizes["kdqat_batch_size_sum"]
    assert inputs / calls > 1.0  # concurrent requests shared engine calls
    stages = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
              if line.startswith(("kdqat_tokenize_seconds_count", "kdqat_engine_seconds_count", "kdqat_queue_seconds_count"))}
    assert stages["kdqat_engine_seconds_count"] == calls  # every engine call timed
    assert stages["kdqat_queue_seconds_count"] >= len(requests)  # every request's wait (and the first test's)
    assert stages["kdqat_tokenize_seconds_count"] < stages["kdqat_queue_seconds_count"]  # gathered requests: one tokenizer call
    single_text = httpx.get(f"{single.url}/metrics").text
    assert 'kdqat_batch_size_bucket{le="1.0"}' in single_text


BAD = [
    (dict(content=b"[not json", headers={"content-type": "application/json"}), 400, "malformed_json", "not valid JSON"),
    (dict(json=["one sentence"]), 422, "shape", "input 0: this task takes [text_a, text_b] pairs, got str"),
    (dict(json={"text": "a"}), 422, "shape", "expected a JSON list of [text_a, text_b] pairs"),
    (dict(json=[]), 422, "empty", "the list of inputs is empty"),
    (dict(json=[["a", "b"]] * 300), 413, "too_many_inputs", "300 inputs in one request; at most 256"),
    (dict(json=[["a" * 20000, "b"]]), 413, "text_too_long", "input 0: a text of 20000 bytes; at most 16384"),
    (dict(content=b'[["a","b"]]', headers={"content-type": "text/plain"}), 415, "content_type", "Content-Type must be"),
    (dict(json=[["a", 3]]), 422, "shape", "input 0: expected strings in a pair, got int"),
]


@pytest.mark.parametrize("request_kwargs, status, reason, message", BAD, ids=[b[2] + str(i) for i, b in enumerate(BAD)])
def test_bad_requests_get_a_one_line_json_error_and_are_counted(servers, request_kwargs, status, reason, message):
    batched, _ = servers

    def count() -> float:
        text = httpx.get(f"{batched.url}/metrics").text
        line = next((x for x in text.splitlines() if x.startswith(f'kdqat_request_errors_total{{reason="{reason}"}}')), None)
        return float(line.split()[1]) if line else 0.0

    before = count()
    answer = httpx.post(f"{batched.url}/v1/predict", timeout=30, **request_kwargs)
    assert answer.status_code == status
    body = answer.json()
    assert set(body) == {"error", "error_type"} and message in body["error"] and "\n" not in body["error"]
    assert count() == before + 1


def test_a_slow_client_does_not_block_others(servers):
    batched, _ = servers
    with socket.create_connection(("127.0.0.1", batched.port)) as slow:
        slow.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n[")
        start = time.monotonic()
        answer = batched.predict([["quick", "request"]])
        assert answer.status_code == 200 and time.monotonic() - start < 5


def test_sigterm_drains_the_request_in_flight(exported_run):
    """A request whose head arrived before SIGTERM is answered: its body is sent only after the signal, so it is
    in flight for certain (the server's own in-progress gauge says when it has the request)."""
    server = Server(exported_run)
    try:
        server.wait()
        body = json.dumps([["in", "flight"]]).encode()
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as client:
            client.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                           b"Content-Length: %d\r\n\r\n" % len(body) + body[:5])
            server.wait_for_metric("kdqat_requests_in_progress", 1)
            server.process.send_signal(signal.SIGTERM)
            client.sendall(body[5:])
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                chunk = client.recv(65536)
                if not chunk:
                    break
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 OK"), answer[:200]
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["predictions"][0]["label"] in ("entailment", "not_entailment")
        # uvicorn finishes the request, shuts down, then re-raises the signal: the usual "ended by SIGTERM" status
        assert server.process.wait(30) in (0, -signal.SIGTERM)
    finally:
        server.stop()


def metric(url: str, name: str) -> float:
    return next(float(line.split()[1]) for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines()
                if line.startswith(name + " "))


def worker_pids(server: Server) -> list[int]:
    """The server's worker processes (children running multiprocessing's spawn_main, not its resource tracker)."""
    from pathlib import Path

    children = [int(c) for task in Path(f"/proc/{server.process.pid}/task").iterdir()
                for c in (task / "children").read_text().split()]
    return [c for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


def test_two_worker_processes_share_the_port_the_requests_and_the_metrics(exported_run, rte_pairs):
    server = Server(exported_run, "--workers", "2")
    try:
        health = server.wait()
        assert health["workers"] == health["workers_ready"] == 2 and len(worker_pids(server)) == 2
        seen = {httpx.get(f"{server.url}/health", timeout=10).json()["worker"] for _ in range(24)}  # a connection each
        assert seen == {0, 1}  # the kernel spreads connections over both workers' sockets
        with ThreadPoolExecutor(8) as pool:  # a new connection per request: both workers answer
            answers = list(pool.map(lambda p: server.predict([p]), rte_pairs[:16]))
        assert all(a.status_code == 200 for a in answers)
        alone = [server.predict([p]).json()["predictions"][0] for p in rte_pairs[:16]]
        assert [a.json()["predictions"][0]["label"] for a in answers] == [p["label"] for p in alone]
        assert metric(server.url, 'kdqat_requests_total{status="ok"}') == 32  # summed over the workers
        assert metric(server.url, "kdqat_inputs_total") == 32 and metric(server.url, "kdqat_queue_depth") == 0
    finally:
        server.stop()


def test_a_worker_killed_under_load_loses_only_its_own_requests(exported_run, rte_pairs):
    """kill -9 of one worker while 8 clients keep it and the other busy (each on its own keep-alive connection, so
    bound to one worker, named by the x-kdqat-worker header): the only failed requests are ones in flight on the
    killed worker's connections; the other worker answers everything it held (SIGTERM drain); the supervisor exits 2
    naming the killed process. Bounded: at most 150 requests per client, 60 s."""
    import threading

    server = Server(exported_run, "--workers", "2")
    results: list[tuple[int, int | None, float, bool]] = []  # (client, worker pid that answered, started, ok)
    stop = threading.Event()
    deadline = time.monotonic() + 60

    def client(number: int) -> None:
        with httpx.Client(timeout=30) as connection:
            for i in range(150):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                started = time.monotonic()
                try:
                    answer = connection.post(f"{server.url}/v1/predict", json=[rte_pairs[(number + i) % len(rte_pairs)]])
                    results.append((number, int(answer.headers["x-kdqat-worker"]), started, answer.status_code == 200))
                except httpx.TransportError:
                    results.append((number, None, started, False))
                    return

    try:
        server.wait()
        victim, survivor = worker_pids(server)
        clients = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        for t in clients:
            t.start()
        while ({r[1] for r in results} != {victim, survivor} or len(results) < 40) and time.monotonic() < deadline:
            time.sleep(0.05)  # until both workers are busy with their clients' connections
        stop.set()  # no new request from here on: what fails was in flight
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        for t in clients:
            t.join(60)
        status, stderr = failed_start(server, timeout=60)
    finally:
        stop.set()
        server.stop()
    worker_of = {}  # each client's connection: the worker that answered it
    for number, pid, _, _ in results:
        if pid is not None:
            worker_of.setdefault(number, pid)
    failed = [r for r in results if not r[3]]
    assert all(r[2] <= killed_at for r in failed)  # every failure had been sent before the kill: it was in flight
    assert {worker_of[r[0]] for r in failed} <= {victim}, failed  # ...on the killed worker's connections only
    survivor_requests = [r for r in results if worker_of.get(r[0]) == survivor]
    assert survivor_requests and all(r[3] for r in survivor_requests)  # the other worker lost nothing
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert status == 2 and len(errors) == 1 and "Traceback" not in stderr, stderr
    assert re.fullmatch(rf"error: server process kdqat-serve-\d \(pid {victim}\) was killed by SIGKILL; the server "
                        r"stopped \(the other processes answered the requests they held\)", errors[0]), errors
    with socket.socket() as probe:  # the other worker is gone too: nothing listens (the clients' closed
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # connections may linger in TIME_WAIT)
        probe.bind(("127.0.0.1", server.port))
        probe.listen(1)


def test_workers_end_with_their_parent_and_a_taken_port_is_refused(exported_run, tmp_path):
    from conftest import run_cli

    server = Server(exported_run, "--workers", "2")
    try:
        server.wait()
        workers = worker_pids(server)
        for one_process in (["--workers", "2"], ["--workers", "1"], ["--engine", "torch"]):  # refused alike, up front
            done = run_cli("serve", exported_run, "--port", server.port, *one_process, cwd=tmp_path, timeout=60)
            assert done.returncode == 2 and done.stdout == "", (one_process, done.stdout)  # no "serving ..." line
            assert done.stderr.strip().splitlines() == [f"error: --host 127.0.0.1 --port {server.port}: cannot listen "
                                                        "there (Address already in use)"], (one_process, done.stderr)
        server.process.kill()  # no chance to stop them: each worker gets SIGTERM from the kernel
        server.process.wait(10)
        deadline = time.monotonic() + 30
        while any(os.path.exists(f"/proc/{pid}") and b"spawn_main" in open(f"/proc/{pid}/cmdline", "rb").read()
                  for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert time.monotonic() < deadline, "a worker kept running after its parent died"
    finally:
        server.stop()


def failed_start(server: Server, timeout: float = 120) -> tuple[int, str]:
    """The exit status and stderr of a server that should stop by itself."""
    try:
        status = server.process.wait(timeout)
    except subprocess.TimeoutExpired:
        server.stop()
        raise AssertionError("the server kept running") from None
    return status, server.process.stderr.read()


def test_an_engine_that_fails_to_load_ends_the_server(exported_run):
    """A process supervisor must see the failure: one line with the reason, a non-zero exit, no port left open."""
    try:
        import tensorrt  # noqa: F401
        import torch

        if torch.cuda.is_available():
            pytest.skip("TensorRT and a GPU are here: the engine would load")
    except ImportError:
        pass
    status, stderr = failed_start(Server(exported_run, "--engine", "trt"))
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert status == 2 and len(errors) == 1 and "needs a CUDA GPU and TensorRT" in errors[0], stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("damaged", ["model.onnx", "export.json"])
def test_a_damaged_export_ends_the_server_naming_the_file(exported_run, tmp_path, damaged):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(exported_run, run)
    (run / "onnx" / damaged).write_bytes(b"\x00 not what kdqat export wrote")
    status, stderr = failed_start(Server(run))
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert status == 2 and len(errors) == 1 and damaged in errors[0] and "Traceback" not in stderr, stderr


@pytest.mark.parametrize("option, value, message", [("--engine", "tpu", "--engine 'tpu'"), ("--model", "coach", "--model 'coach'"),
                                                    ("--provider", "rocm", "--provider 'rocm'"),
                                                    ("--body-timeout-s", "0", "--body-timeout-s 0.0: must be positive")])
def test_bad_options_are_refused_before_the_port_is_bound(exported_run, tmp_path, option, value, message):
    from conftest import run_cli

    port = free_port()
    done = run_cli("serve", exported_run, "--port", port, option, value, cwd=tmp_path, timeout=60)
    assert done.returncode == 2 and done.stderr.startswith(f"error: {message}") and "serving" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_surrogates_deep_json_half_bodies_and_idle_connections_are_bounded(exported_run):
    server = Server(exported_run, "--body-timeout-s", "1", "--keep-alive-s", "1")
    try:
        server.wait()
        lone = server.predict(None, content=b'[["\\ud800", "b"]]', headers={"content-type": "application/json"})
        assert lone.status_code == 422 and "lone surrogate" in lone.json()["error"]
        deep = b"[" * 5000 + b"]" * 5000
        nested = server.predict(None, content=deep, headers={"content-type": "application/json"})
        assert nested.status_code == 400 and "nested too deeply" in nested.json()["error"]
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as half:
            half.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n[")
            start = time.monotonic()
            reply = b""
            while chunk := half.recv(4096):  # the server answers, then closes the connection
                reply += chunk
            assert reply.startswith(b"HTTP/1.1 408") and b"did not arrive within 1 s" in reply
            assert time.monotonic() - start < 8
        for stalled in (b"", b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n"):  # idle; headers that stop half-way
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as idle:
                idle.sendall(stalled)
                start = time.monotonic()
                assert idle.recv(4096) == b"" and time.monotonic() - start < 5  # closed by the server
        assert server.predict([["still", "serving"]]).status_code == 200
    finally:
        server.stop()


def test_serve_refuses_a_run_that_was_not_exported(tmp_path, tiny_model_dir):
    from conftest import make_student_run, run_cli

    from kdqat import QuantConfig

    run = make_student_run(tmp_path / "run", tiny_model_dir, QuantConfig())
    done = run_cli("serve", run, "--port", "1", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip() == f"error: {run / 'onnx' / 'export.json'}: missing; run kdqat export {run} first"


def test_answers_are_labels_with_probabilities_or_scores():
    from kdqat.objectives import get_objective
    from kdqat.runtime.served_model import ServedModel

    classify = ServedModel("rte", ["entailment", "not_entailment"], True, 32, None, None, "", get_objective("classification"))
    (answer,) = classify.answers(classify.finish(np.array([[0.0, np.log(3.0)]], dtype=np.float32)))
    assert answer["label"] == "not_entailment"
    assert answer["probabilities"] == pytest.approx({"entailment": 0.25, "not_entailment": 0.75})
    regress = ServedModel("stsb", None, True, 32, None, None, "", get_objective("regression"))
    assert regress.answers(regress.finish(np.array([[3.25]], dtype=np.float32))) == [{"score": 3.25}]


def test_another_method_on_a_post_route_gets_405_naming_it(servers):
    batched, _ = servers
    answer = httpx.get(f"{batched.url}/v1/predict", timeout=30)
    assert answer.status_code == 405 and answer.headers["allow"] == "POST"
    assert answer.json() == {"error": "GET /v1/predict: this route takes POST", "error_type": "method"}
