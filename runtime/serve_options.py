"""The settings of `kdqat serve`: one declaration of each option, its default and its check (the command line
reads its defaults from here). `ServeSettings` is what each server process needs; `ServeOptions` adds what
chooses the model, the engine and the processes. Light to import."""

from __future__ import annotations

from dataclasses import dataclass, field

from kdqat.errors import KdqatError
from kdqat.runtime.registry import PROVIDERS, check_engine

MODELS = ("student", "teacher")  # what --model serves: the exported student, or the float teacher for A/B


@dataclass(frozen=True)
class ServeSettings:
    max_batch_size: int = 32  # inputs per engine call
    max_wait_ms: float = 2.0  # how long a call may wait for its share of the requests outstanding (0: only what is queued)
    batching: bool = True
    max_inputs: int = 256  # per request
    max_text_bytes: int = 16_384  # per text, UTF-8
    body_timeout_s: float = 10.0  # a body not fully received by then: 408, connection closed
    engine_calls: int = 1  # engine calls at once in this process (served_model.serving_layout)
    served_model_names: tuple[str, ...] = ()  # names the OpenAI route answers to besides the task's (vLLM's option)

    def __post_init__(self) -> None:
        for name, value in (("--max-batch-size", self.max_batch_size), ("--max-inputs", self.max_inputs),
                            ("--max-text-bytes", self.max_text_bytes)):
            if value <= 0:
                raise KdqatError(f"{name} {value}: out of range")
        if not self.max_wait_ms >= 0:
            raise KdqatError(f"--max-wait-ms {self.max_wait_ms}: must be >= 0")
        if not self.body_timeout_s > 0:
            raise KdqatError(f"--body-timeout-s {self.body_timeout_s}: must be positive")


@dataclass(frozen=True)
class ServeOptions:
    run_dir: str
    engine: str = "ort"
    provider: str = "cpu"  # onnxruntime execution provider for --engine ort
    model: str = "student"
    onnx: str | None = None  # default RUN_DIR/onnx/model.onnx (export.json beside it)
    host: str = "127.0.0.1"  # 0.0.0.0 for every interface
    port: int = 8000
    keep_alive_s: float = 5.0  # an idle connection, or one whose headers stop half-way, is closed after this
    workers: int = 0  # server processes (0: runtime.served_model.serving_layout chooses)
    engine_calls: int = 0  # engine calls at once in each process (0: chosen likewise)
    settings: ServeSettings = field(default_factory=ServeSettings)

    def __post_init__(self) -> None:
        if not 0 < self.port <= 65535:
            raise KdqatError(f"--port {self.port}: out of range")
        if not self.keep_alive_s > 0:
            raise KdqatError(f"--keep-alive-s {self.keep_alive_s}: must be positive")
        check_engine(self.engine)
        if self.model not in MODELS:
            raise KdqatError(f"--model {self.model!r} is not one of {', '.join(MODELS)}")
        if self.provider not in PROVIDERS:
            raise KdqatError(f"--provider {self.provider!r} is not one of {', '.join(PROVIDERS)}")
