"""The settings of `kdqat bench`: one declaration of each option, its default and its check (the command line
reads its defaults from here). Light to import."""

from __future__ import annotations

from dataclasses import dataclass, field

from kdqat.errors import KdqatError
from kdqat.runtime.registry import ENGINES, PROVIDERS, check_static_shapes


@dataclass(frozen=True)
class BenchOptions:
    run_dir: str
    engines: tuple[str, ...] = ("ort",)
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    seq_lengths: tuple[int, ...] = (128,)
    warmup: int = 3  # untimed calls before each grid point
    iterations: int = 20  # timed calls per grid point
    provider: str = "cpu"  # onnxruntime execution provider
    device: str = "cpu"  # PyTorch device
    onnx: str | None = None  # default RUN_DIR/onnx/model.onnx
    output_dir: str | None = None  # default RUN_DIR/bench
    plot: bool = True
    progress: bool = True
    static_shapes: tuple[tuple[int, int], ...] = ()  # (batch, seq) shapes OpenVINO compiles ahead
    seed: int = 0
    vocab_low: int = field(default=1000, repr=False)  # random ids above the special tokens

    def __post_init__(self) -> None:
        unknown = [e for e in self.engines if e not in ENGINES]
        if unknown or not self.engines:
            raise KdqatError(f"--engine {', '.join(unknown) or '(none)'}: use one or more of {', '.join(ENGINES)}")
        if self.provider not in PROVIDERS:
            raise KdqatError(f"--provider {self.provider!r} is not one of {', '.join(PROVIDERS)}")
        if min(self.batch_sizes, default=0) <= 0 or min(self.seq_lengths, default=0) <= 0:
            raise KdqatError("--batch-sizes and --seq-lengths must be positive integers")
        if self.iterations <= 0 or self.warmup < 0:
            raise KdqatError("--iterations must be positive and --warmup not negative")
        check_static_shapes(self.engines, self.static_shapes)
