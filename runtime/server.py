"""`kdqat serve`: an exported student behind HTTP (an ASGI app on uvicorn), with dynamic batching and metrics.

    POST /v1/predict   JSON list of texts (pair tasks: [text_a, text_b] pairs), or {"inputs": [...]}
                       -> {"predictions": [{"label", "probabilities"} | {"score"}], "model": ...}
    POST /v1/embeddings  (embedding models) OpenAI's request and response: {"input": str | [str], "model",
                       "encoding_format": "float" | "base64"} -> {"object": "list", "data": [{"object":
                       "embedding", "index", "embedding"}], "model", "usage": {"prompt_tokens", "total_tokens"}}
    POST /embed        (embedding models) text-embeddings-inference's: {"inputs": str | [str], "normalize",
                       "truncate"} -> [[float, ...], ...]
    GET  /health       200 {"status": "ready"} once the engine is loaded and warmed up, else 503
    GET  /metrics      Prometheus text: requests and errors, latency, batch sizes, queue depth, and where the time
                       goes (time queued per request, tokenizer and engine seconds per call)

Every bad request gets a 4xx with {"error": "<one line>"} and never reaches the engine.

The three POST routes are answered by plain ASGI code (the body read from uvicorn, JSON in and out with orjson):
at a few thousand requests a second on two cores, Starlette's Request, routing and response objects were a
measurable share of each request's CPU (docs/results/serving.md, "A leaner request path"). /health, /metrics and the app's
lifespan stay a Starlette app.
"""

from __future__ import annotations

import asyncio
import base64
import os
import gc
import json
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Callable

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from kdqat.errors import KdqatError, first_line
from kdqat.runtime.batcher import DynamicBatcher, EngineFailure, Timings
from kdqat.runtime.serve_options import ServeSettings
from kdqat.runtime.served_model import ServedModel
from kdqat.runtime.worker_board import WorkerBoard


class BadRequest(Exception):
    """A request refused with `status`; `reason` labels it in the metrics; `close` ends the connection."""

    def __init__(self, status: int, reason: str, message: str, close: bool = False) -> None:
        super().__init__(message)
        self.status, self.reason, self.close = status, reason, close


class Metrics:
    """The server's Prometheus metrics, in a registry of its own. With several worker processes, prometheus_client's
    multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by runtime.workers) keeps each worker's values in a file and
    `exposition()` sums them; `depth()` gives the requests waiting for the engine, all workers together."""

    def __init__(self, depth: Callable[[], int], multiprocess: bool = False) -> None:
        self.multiprocess = multiprocess
        self.depth = depth
        self.registry = CollectorRegistry()
        self.requests = Counter("kdqat_requests", "Prediction requests by outcome.", ["status"], registry=self.registry)
        self.errors = Counter("kdqat_request_errors", "Refused or failed prediction requests by reason.", ["reason"],
                              registry=self.registry)
        self.latency = Histogram("kdqat_request_latency_seconds", "Prediction request latency.", registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.batch_size = Histogram("kdqat_batch_size", "Inputs per engine call.", registry=self.registry,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.inputs = Counter("kdqat_inputs", "Inputs predicted.", registry=self.registry)
        self.in_progress = Gauge("kdqat_requests_in_progress", "Requests received and not yet answered.",
                                 registry=self.registry, multiprocess_mode="livesum")
        fast = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
        self.queued = Histogram("kdqat_queue_seconds", "Time a request waits before its engine call starts.",
                                registry=self.registry, buckets=fast)
        self.tokenize = Histogram("kdqat_tokenize_seconds", "Tokenizer time per call (one call per gathered group).",
                                  registry=self.registry, buckets=fast)
        self.engine = Histogram("kdqat_engine_seconds", "Engine time per call.", registry=self.registry, buckets=fast)
        if not multiprocess:
            self.registry.register(self)

    def collect(self):
        """The queue depth, read when scraped."""
        yield GaugeMetricFamily("kdqat_queue_depth", "Requests waiting for the engine.", value=self.depth())

    def exposition(self) -> bytes:
        """The Prometheus text of every metric (summed over the workers in multiprocess mode)."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        summed = CollectorRegistry()
        multiprocess.MultiProcessCollector(summed)
        summed.register(self)
        return generate_latest(summed)

    def timings(self) -> Timings:
        def engine(inputs: int, seconds: float) -> None:
            self.batch_size.observe(inputs)
            self.engine.observe(seconds)

        return Timings(queue=self.queued.observe, tokenize=self.tokenize.observe, engine=engine)


def parse_inputs(body: bytes, content_type: str, pair: bool, settings: ServeSettings) -> list:
    """The validated list of inputs of a request body, or BadRequest naming what is wrong."""
    data = _json(body, content_type)
    if isinstance(data, dict) and set(data) == {"inputs"}:
        data = data["inputs"]
    want = "[text_a, text_b] pairs" if pair else "texts"
    if not isinstance(data, list):
        raise BadRequest(422, "shape", f"expected a JSON list of {want} (or {{\"inputs\": [...]}})")
    if not data:
        raise BadRequest(422, "empty", "the list of inputs is empty")
    if len(data) > settings.max_inputs:
        raise BadRequest(413, "too_many_inputs", f"{len(data)} inputs in one request; at most {settings.max_inputs}")
    for i, item in enumerate(data):
        texts = item if pair else [item]
        if pair and not (isinstance(item, list) and len(item) == 2):
            raise BadRequest(422, "shape", f"input {i}: this task takes [text_a, text_b] pairs, got {type(item).__name__}"
                             + (f" of {len(item)}" if isinstance(item, list) else ""))
        for text in texts:
            if not isinstance(text, str):
                raise BadRequest(422, "shape", f"input {i}: expected {'strings in a pair' if pair else 'a string'}, "
                                 f"got {type(text).__name__}")
            _check_size(text, f"input {i}", settings)
    return data


def _json(body: bytes, content_type: str):
    """The parsed JSON body of a request that says it is JSON."""
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise BadRequest(415, "content_type", f"Content-Type must be application/json, not {content_type or 'none'!r}")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:  # also lone surrogates and deep nesting: the standard parser says which
        pass
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(400, "malformed_json", f"the body is not valid JSON ({e.msg if hasattr(e, 'msg') else e})") from None
    except RecursionError:
        raise BadRequest(400, "malformed_json", "the body's JSON is nested too deeply") from None


def _check_size(text: str, where: str, settings: ServeSettings) -> None:
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:  # JSON may escape a lone surrogate (\ud800), which no text holds
        raise BadRequest(422, "encoding", f"{where}: not valid Unicode (a lone surrogate escape)") from None
    if size > settings.max_text_bytes:
        raise BadRequest(413, "text_too_long", f"{where}: a text of {size} bytes; at most {settings.max_text_bytes}")


def check_texts(data, settings: ServeSettings, field: str, allow_empty: bool = True) -> list[str]:
    """A string or a non-empty list of strings (the embedding routes' input), within the server's limits; an empty
    string is refused unless `allow_empty` (OpenAI and TEI refuse it: it has no content to embed)."""
    if isinstance(data, str):
        data = [data]
    if not isinstance(data, list) or not data:
        raise BadRequest(422, "shape", f"{field!r} must be a string or a non-empty list of strings")
    if len(data) > settings.max_inputs:
        raise BadRequest(413, "too_many_inputs", f"{len(data)} inputs in one request; at most {settings.max_inputs}")
    for i, text in enumerate(data):
        if not isinstance(text, str):
            what = "token ids (send the text itself)" if isinstance(text, (int, list)) else type(text).__name__
            raise BadRequest(422, "shape", f"{field}[{i}]: expected a string, got {what}")
        if not allow_empty and not text:
            raise BadRequest(422, "empty_input", f"{field}[{i}]: an empty string; send text to embed")
        _check_size(text, f"{field}[{i}]", settings)
    return data


def _json_object(body: bytes, content_type: str) -> dict:
    data = _json(body, content_type)
    if not isinstance(data, dict):
        raise BadRequest(422, "shape", "expected a JSON object")
    return data


ENCODINGS = ("float", "base64")


def _truncate_flag(data: dict) -> bool:
    if "truncate" in data and not isinstance(data["truncate"], bool):
        raise BadRequest(422, "shape", "'truncate' must be true or false")
    return data.get("truncate", False)


def parse_openai(body: bytes, content_type: str, settings: ServeSettings, dimension: int,
                 names: tuple[str, ...]) -> tuple[list[str], str, bool]:
    """OpenAI's embeddings request -> (texts, encoding_format, truncate). "model", where given, must be one of
    `names` (404, as OpenAI answers a model it does not have); "truncate": true (a kdqat extension, TEI's name)
    cuts texts longer than the model's length, which are otherwise refused (400, as OpenAI does)."""
    data = _json_object(body, content_type)
    if "input" not in data:
        raise BadRequest(422, "shape", "missing 'input' (a string or a list of strings)")
    model = data.get("model")
    if model is not None and model not in names:
        raise BadRequest(404, "model_not_found", f"the model {model!r} does not exist here; this server serves "
                         f"{', '.join(map(repr, names))} (GET /v1/models)")
    encoding = data.get("encoding_format") or "float"
    if encoding not in ENCODINGS:
        raise BadRequest(422, "encoding_format", f"encoding_format {encoding!r} is not one of {', '.join(ENCODINGS)}")
    dims = data.get("dimensions")
    if dims is not None and dims != dimension:
        raise BadRequest(422, "dimensions", f"dimensions {dims!r}: this model's embeddings have {dimension} (it cannot "
                         "shorten them)")
    return check_texts(data["input"], settings, "input", allow_empty=False), encoding, _truncate_flag(data)


def parse_tei(body: bytes, content_type: str, settings: ServeSettings, normalized: bool) -> tuple[list[str], bool]:
    """text-embeddings-inference's /embed request -> (texts, truncate). As in TEI, a text longer than the model's
    length is refused (413) unless "truncate": true."""
    data = _json_object(body, content_type)
    if "inputs" not in data:
        raise BadRequest(422, "shape", "missing 'inputs' (a string or a list of strings)")
    if "normalize" in data and not isinstance(data["normalize"], bool):
        raise BadRequest(422, "shape", "'normalize' must be true or false")
    if data.get("normalize", True) != normalized:
        raise BadRequest(422, "normalize", f"this model's embeddings are {'' if normalized else 'not '}normalised in its "
                         f"graph: normalize={str(not normalized).lower()} is not available")
    return check_texts(data["inputs"], settings, "inputs", allow_empty=False), _truncate_flag(data)


def _vector(row, encoding: str):
    """One embedding as JSON: a list of floats, or base64 of little-endian float32 (OpenAI's base64 format)."""
    if encoding == "base64":
        return base64.b64encode(np.asarray(row, dtype="<f4").tobytes()).decode("ascii")
    return [float(x) for x in row]


def create_app(load: Callable[[], ServedModel], settings: ServeSettings = ServeSettings(),
               on_failure: Callable[[str], None] | None = None, board: WorkerBoard | None = None) -> ASGIApp:
    """The ASGI app. `load` opens the engine; it runs in the background so /health can say 'loading'. If it
    fails, /health says why and `on_failure` gets the one-line reason (`kdqat serve` then stops the server).
    `board`: this app is one of several worker processes (runtime.workers); /health says ready once all are."""
    state: dict = {"model": None, "batcher": None, "error": None}
    metrics = Metrics(board.waiting if board else lambda: state["batcher"].depth if state["batcher"] else 0,
                      multiprocess=board is not None)

    def open_and_warm() -> ServedModel:
        model = load()
        warm = model.engine.run(_pad(model.encode([["warm up", "warm up"]] if model.pair else ["warm up"])))
        state["width"] = int(warm.shape[-1])  # labels, or the embedding's dimension
        # The loaded libraries leave long-lived objects that every full garbage collection would walk again; frozen,
        # collections see only the requests' objects (a no-op-engine server under load: latency standard deviation
        # 30 ms -> 0.4 ms, docs/results/serving.md).
        gc.collect()
        gc.freeze()
        return model

    async def start() -> None:
        try:
            model = await asyncio.get_running_loop().run_in_executor(None, open_and_warm)
        except Exception as e:  # reported by /health, and to on_failure
            state["error"] = first_line(e) if isinstance(e, KdqatError) else f"{type(e).__name__}: {first_line(e)}"
            if on_failure is not None:
                on_failure(state["error"])
            return
        batcher = DynamicBatcher(model.engine.run, model.encode, settings.max_batch_size, settings.max_wait_ms,
                                 settings.batching, timings=metrics.timings(), calls=settings.engine_calls,
                                 run_alone=model.alone.run if model.alone is not None else None, finish=model.finish,
                                 board=board)
        batcher.start()
        state["model"], state["batcher"] = model, batcher
        if board is not None:
            board.mark_ready()

    @asynccontextmanager
    async def lifespan(app: Starlette):
        loading = asyncio.create_task(start())
        yield
        loading.cancel()
        if state["batcher"] is not None:
            await state["batcher"].stop()

    def error(status: int, reason: str, message: str, openai: bool = False, close: bool = False) -> Answer:
        """A counted error answer: {"error": message, "error_type": reason}, or in OpenAI's shape {"error":
        {"message", "type", "param", "code"}}; `close` ends the connection."""
        metrics.errors.labels(reason).inc()
        metrics.requests.labels("client_error" if status < 500 else "server_error").inc()
        body = ({"error": {"message": message, "type": "invalid_request_error" if status < 500 else "server_error",
                           "param": None, "code": reason}} if openai else {"error": message, "error_type": reason})
        return Answer(status, body, close)

    async def health(request: Request) -> JSONResponse:
        workers = {"worker": board.index, "workers": board.workers, "workers_ready": board.ready()} if board else {}
        if state["error"] is not None:
            return JSONResponse({"status": "failed", "error": state["error"], **workers}, status_code=503)
        if state["model"] is not None and (board is None or board.ready() == board.workers):
            return JSONResponse({"status": "ready", "model": state["model"].description, **workers})
        return JSONResponse({"status": "loading", **workers}, status_code=503)

    async def prometheus(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def body_of(scope: Scope, receive: Receive, model: ServedModel | None, route: str) -> bytes | None:
        """The request's body (None: the client went away), or BadRequest when the model, the route or the body
        is wrong."""
        if model is None:
            raise BadRequest(503, "not_ready", "the model is still loading; retry when GET /health says ready")
        if route not in model.objective.routes:
            raise BadRequest(404, "wrong_route", f"this model {model.objective.serves}: POST {' or '.join(model.objective.routes)}")
        limit = settings.max_inputs * (2 * settings.max_text_bytes + 16) + 1024
        if int(_header(scope, b"content-length") or 0) > limit:
            raise BadRequest(413, "body_too_large", f"the body is over {limit} bytes")
        try:
            return await _within(_read_body(receive), settings.body_timeout_s)
        except asyncio.TimeoutError:
            raise BadRequest(408, "body_timeout", f"the body did not arrive within {settings.body_timeout_s:g} s",
                             close=True) from None

    async def handle(scope: Scope, receive: Receive, parse: Callable, respond: Callable,
                     openai: bool = False) -> Answer | None:
        """One request, counted in progress from its head to its answer (what a SIGTERM drains)."""
        with metrics.in_progress.track_inprogress():
            return await answer(scope, receive, parse, respond, openai)

    async def answer(scope: Scope, receive: Receive, parse: Callable, respond: Callable, openai: bool) -> Answer | None:
        """The body received within its deadline, `parse(body, content_type, model)` -> (inputs, options), the
        engine's rows and the inputs' token counts through the batcher (which tokenizes), `respond(model, tokens,
        rows, options)`; any refusal as a counted error answer (in OpenAI's shape for `openai`)."""
        start = time.perf_counter()
        model = state["model"]
        try:
            body = await body_of(scope, receive, model, scope["path"])
            if body is None:
                return None
            inputs, options = parse(body, _header(scope, b"content-type"), model)
            rows, tokens = await state["batcher"].submit(inputs)
        except BadRequest as e:
            return error(e.status, e.reason, str(e), openai, e.close)
        except EngineFailure as e:
            return error(500, "engine", str(e), openai)
        metrics.requests.labels("ok").inc()
        metrics.inputs.inc(len(inputs))
        metrics.latency.observe(time.perf_counter() - start)
        return Answer(200, respond(model, tokens, rows, options))

    async def predict(scope: Scope, receive: Receive) -> Answer | None:
        return await handle(scope, receive,
                            lambda body, kind, model: (parse_inputs(body, kind, model.pair, settings), None),
                            lambda model, tokens, rows, _: {"model": model.description,
                                                              "predictions": model.answers(rows)})

    def openai_answer(model: ServedModel, tokens: list[int], vectors, encoding: str) -> dict:
        used = sum(tokens)
        return {"object": "list", "model": model.task,
                "data": [{"object": "embedding", "index": i, "embedding": _vector(v, encoding)} for i, v in enumerate(vectors)],
                "usage": {"prompt_tokens": used, "total_tokens": used}}

    def names(model: ServedModel) -> tuple[str, ...]:
        """What clients may call the model: its task's name and the --served-model-name aliases."""
        return (model.task, *(n for n in settings.served_model_names if n != model.task))

    def within_length(model: ServedModel, texts: list[str], truncate: bool, status: int) -> None:
        """Refuse a text over the model's length unless the request asked to truncate (OpenAI: 400, TEI: 413)."""
        if not truncate:
            longest = max(model.token_counts(texts))
            if longest > model.max_length:
                raise BadRequest(status, "context_length_exceeded", f"an input has {longest} tokens; this model takes "
                                 f"at most {model.max_length} (send \"truncate\": true to cut it)")

    def openai_inputs(body: bytes, kind: str, model: ServedModel) -> tuple[list[str], str]:
        texts, encoding, truncate = parse_openai(body, kind, settings, state["width"], names(model))
        within_length(model, texts, truncate, 400)
        return texts, encoding

    async def openai_embeddings(scope: Scope, receive: Receive) -> Answer | None:
        return await handle(scope, receive, openai_inputs, openai_answer, openai=True)

    def tei_inputs(body: bytes, kind: str, model: ServedModel) -> tuple[list[str], None]:
        texts, truncate = parse_tei(body, kind, settings, model.normalized)
        within_length(model, texts, truncate, 413)
        return texts, None

    async def models(request: Request) -> JSONResponse:
        """OpenAI's model list: the names this server answers to (empty while the model loads)."""
        model = state["model"]
        listed = [] if model is None else [{"id": name, "object": "model", "created": started, "owned_by": "kdqat"}
                                           for name in names(model)]
        return JSONResponse({"object": "list", "data": listed})

    async def tei_embed(scope: Scope, receive: Receive) -> Answer | None:
        return await handle(scope, receive, tei_inputs, lambda model, tokens, vectors, _: [_vector(v, "float") for v in vectors])

    def wrong_method(scope: Scope) -> Answer:
        return error(405, "method", f"{scope['method']} {scope['path']}: this route takes POST")

    started = int(time.time())
    rest = Starlette(lifespan=lifespan, routes=[Route("/health", health, methods=["GET"]),
                                                Route("/metrics", prometheus, methods=["GET"]),
                                                Route("/v1/models", models, methods=["GET"])])
    return PostRoutes(rest, {"/v1/predict": predict, "/v1/embeddings": openai_embeddings, "/embed": tei_embed},
                      wrong_method)


@dataclass(frozen=True)
class Answer:
    """An HTTP answer of a POST route: status, JSON content, and whether the connection closes after it."""

    status: int
    content: object
    close: bool = False


class PostRoutes:
    """ASGI: the POST routes answered directly (`handlers[path](scope, receive)` -> Answer, or None when the client
    went away), another method on them by `wrong_method` (405), everything else (lifespan included) by `rest`."""

    def __init__(self, rest: ASGIApp, handlers: dict[str, Callable], wrong_method: Callable[[Scope], Answer]) -> None:
        self.rest, self.handlers, self.wrong_method = rest, handlers, wrong_method
        self.worker = str(os.getpid()).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.handlers.get(scope["path"]) if scope["type"] == "http" else None
        if handler is None:
            await self.rest(scope, receive, send)
            return
        post = scope["method"] == "POST"
        answer = await handler(scope, receive) if post else self.wrong_method(scope)
        if answer is None:
            return
        content = orjson.dumps(answer.content)  # an answer of 150 label probabilities per input is the largest JSON work
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode()),
                   (b"x-kdqat-worker", self.worker)]  # which server process answered (one per --workers)
        if not post:
            headers.append((b"allow", b"POST"))
        if answer.close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": content})


def _header(scope: Scope, name: bytes) -> str:
    """A request header's value ("" when absent); `name` in lower case, as ASGI servers give them."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return ""


async def _read_body(receive: Receive) -> bytes | None:
    """The whole body, or None when the client disconnects first."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _within(awaitable, seconds: float):
    """`awaitable`'s result, or asyncio.TimeoutError after `seconds` (Python 3.11's asyncio.timeout: no task per
    request, as asyncio.wait_for makes)."""
    if hasattr(asyncio, "timeout"):
        async with asyncio.timeout(seconds):
            return await awaitable
    return await asyncio.wait_for(awaitable, seconds)


def _pad(features):
    from kdqat.runtime.batching import pad_batch

    return pad_batch(features, list(range(len(features["input_ids"]))))
