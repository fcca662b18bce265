"""Several server processes on one port: each worker is a whole `kdqat serve` (its own event loop, batcher and
engine session), listening on its own SO_REUSEPORT socket, so the kernel spreads connections over them.

On a 2-core CPU one process running two engine calls at once loses time to its own interpreter lock: the event
loop and the engine threads take turns at it. Two processes, each one call at a time on one core, answer 12-token
requests faster (docs/results/serving.md, "Two server processes"). What the workers share is a `WorkerBoard` (shared
memory): whether each has loaded its model (GET /health says ready only when all have), and how many inputs each
has outstanding (a lone client's call runs on every core only when no other worker is busy). Their Prometheus
metrics are summed through prometheus_client's multiprocess mode. The parent process binds the sockets, starts
the workers, forwards SIGTERM / SIGINT to them, and stops them all, with the reason in one line, when any of them
fails (a model that does not load, a worker that dies).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import socket
import tempfile
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Callable

from kdqat.errors import KdqatError
from kdqat.runtime.serve_options import ServeOptions
from kdqat.runtime.worker_board import WorkerBoard


@dataclass(frozen=True)
class ServeSpec:
    """What each worker opens and serves: the command's options (their settings resolved for the layout) and the
    onnxruntime or OpenVINO threads of each engine call."""

    options: ServeOptions
    threads: int | None = None
    setup: Callable[[], None] | None = None  # run first in each worker (a module-level function: it is pickled)

    def load(self):
        from kdqat.runtime.served_model import open_served

        o = self.options
        return open_served(o.run_dir, o.engine, o.provider, o.model, o.onnx, self.threads)


def uvicorn_server(app, keep_alive_s: float, host: str = "127.0.0.1", port: int = 0):
    """The uvicorn server every `kdqat serve` process runs: httptools with a deadline on a connection's first
    request head, no access log or proxy headers (nothing reads them), 30 s to drain on shutdown."""
    import uvicorn

    from kdqat.runtime.http_protocol import FirstRequestDeadline

    return uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                         proxy_headers=False, http=FirstRequestDeadline, timeout_graceful_shutdown=30,
                                         timeout_keep_alive=keep_alive_s))


def run_server(spec: ServeSpec, board: WorkerBoard | None = None, sockets: list[socket.socket] | None = None,
               host: str = "127.0.0.1", port: int = 0) -> str | None:
    """Serve `spec` in this process (on `sockets`, else host:port) until shutdown. Returns the one-line reason when
    its model failed to load (the server then stops by itself), else None."""
    from kdqat.runtime.server import create_app

    failures: list[str] = []
    server: list = []

    def failed(message: str) -> None:
        failures.append(message)
        server[0].should_exit = True

    app = create_app(spec.load, spec.options.settings, on_failure=failed, board=board)
    server.append(uvicorn_server(app, spec.options.keep_alive_s, host, port))
    server[0].run(sockets=sockets)
    return failures[0] if failures else None


def load_failed(reason: str) -> KdqatError:
    return KdqatError(f"the model failed to load, the server stopped: {reason}")


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` sockets listening on host:port with SO_REUSEPORT. Refused in one line when anything already holds
    the port, a server with SO_REUSEPORT sockets of its own included (the probe binds without it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as e:
            raise KdqatError(f"--host {host} --port {port}: cannot listen there ({e.strerror or e})") from None
    sockets = []
    for _ in range(count):
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind((host, port))
        s.listen(2048)
        sockets.append(s)
    return sockets


def serve_workers(spec: ServeSpec, sockets: list[socket.socket]) -> None:
    """Serve with a worker process on each of `sockets` (from `listening_sockets`) until SIGTERM / SIGINT (then each
    drains its requests in flight), or raise KdqatError naming the first failure."""
    workers = len(sockets)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter each: no forked onnxruntime state
    board = WorkerBoard(workers, context)
    failures = context.SimpleQueue()
    with tempfile.TemporaryDirectory(prefix="kdqat-metrics-") as metrics:
        previous = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics  # read by prometheus_client as each worker imports it
        processes = [context.Process(target=_worker, args=(spec, board.at(i), sockets[i], failures, os.getpid()),
                                     name=f"kdqat-serve-{i}", daemon=False) for i in range(workers)]
        stopping: list[int] = []

        def stop(signum: int = signal.SIGTERM, frame=None) -> None:
            if not stopping:
                stopping.append(signum)
                for p in processes:
                    if p.is_alive():  # False for one not started yet
                        os.kill(p.pid, signal.SIGTERM)

        handlers = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            try:
                for p in processes:
                    if not stopping:
                        p.start()
            finally:
                if previous is None:
                    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
                else:
                    os.environ["PROMETHEUS_MULTIPROC_DIR"] = previous
            started = [p for p in processes if p.pid is not None]
            first = wait([p.sentinel for p in started])[0] if started else None
            ended = next((p for p in started if p.sentinel == first), None)
            requested = bool(stopping)
            stop()
            for p in started:
                p.join(45)
                if p.is_alive():
                    p.kill()
                    p.join()
        finally:
            for s, handler in handlers.items():
                signal.signal(s, handler)
            for s in sockets:
                s.close()
        if not failures.empty():
            raise load_failed(failures.get())
        if not requested:
            how = (f"was killed by {signal.Signals(-ended.exitcode).name}" if ended.exitcode is not None and ended.exitcode < 0
                   else f"ended with status {ended.exitcode}")
            raise KdqatError(f"server process {ended.name} (pid {ended.pid}) {how}; the server stopped (the other "
                             "processes answered the requests they held)")


def _worker(spec: ServeSpec, board: WorkerBoard, listening: socket.socket, failures, parent: int) -> None:
    """One worker process: the app on its socket until SIGTERM; a model that fails to load is reported and ends it."""
    os.setpgrp()  # a terminal's Ctrl-C reaches the parent only, which sends each worker exactly one SIGTERM
    _end_with_parent(parent)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if spec.setup is not None:
        spec.setup()
    failure = run_server(spec, board, [listening])
    if failure is not None:  # read by the parent once this process has ended
        failures.put(failure)


def _end_with_parent(parent: int) -> None:
    """SIGTERM this process when its parent dies (Linux), so that no worker keeps serving the port alone."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before the call above
        os.kill(os.getpid(), signal.SIGTERM)

