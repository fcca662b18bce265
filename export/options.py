"""The settings of `kdqat export`: one declaration of each option, its default and its check (the command line
reads its defaults from here). Light to import: no torch, no onnx."""

from __future__ import annotations

from dataclasses import dataclass

from kdqat.errors import KdqatError
from kdqat.parity import MIN_COSINE

TRITON_DEVICES = ("cpu", "gpu")


@dataclass(frozen=True)
class ExportOptions:
    run_dir: str
    output_dir: str | None = None  # default RUN_DIR/onnx
    data_dir: str | None = None  # default: the run's data dir, else GLUE_DIR, else random token ids
    samples: int = 256  # dev examples compared between onnxruntime and PyTorch
    reference_examples: int = 4  # of those, run through onnx.reference too
    batch_size: int = 32
    min_agreement: float = 0.99  # export fails below this fraction of equal decided predictions (kdqat.parity)
    min_cosine: float = MIN_COSINE  # embeddings: export fails if any example's cosine to PyTorch's is lower
    seed: int = 0
    progress: bool = True
    ort_cpu_graph: bool = False  # also write model.ort_cpu.onnx (kdqat's own runtime rewrites in memory instead)

    def __post_init__(self) -> None:
        if self.samples <= 0 or self.batch_size <= 0:
            raise KdqatError("--samples and --batch-size must be positive")
        if not 0.0 <= self.min_agreement <= 1.0:
            raise KdqatError("--min-agreement must be between 0 and 1")
        if not -1.0 <= self.min_cosine <= 1.0:
            raise KdqatError("--min-cosine must be between -1 and 1")


@dataclass(frozen=True)
class TritonOptions:
    """A Triton Inference Server model repository written from an export (`kdqat export --triton OUT`)."""

    max_batch_size: int = 32  # of every model: dynamic batching up to it
    device: str = "cpu"  # where Triton runs the onnxruntime model
    max_queue_delay_us: int = 5000  # dynamic batching: how long a request may wait for others

    def __post_init__(self) -> None:
        if self.max_batch_size <= 0:
            raise KdqatError(f"--triton-max-batch-size {self.max_batch_size}: must be positive")
        if self.device not in TRITON_DEVICES:
            raise KdqatError(f"--triton-device {self.device!r} is not one of {', '.join(TRITON_DEVICES)}")
