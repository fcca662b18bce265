"""The settings of `kdqat eval`: one declaration of each option, its default and its check (the command line reads
its defaults from here). Light to import."""

from __future__ import annotations

from dataclasses import dataclass

from kdqat.errors import KdqatError
from kdqat.runtime.registry import PROVIDERS, check_engine, check_static_shapes

KNN_K = 10  # neighbours that vote in kNN classification, weighted by cosine similarity; fixed before any model was scored


@dataclass(frozen=True)
class EvalOptions:
    run_dir: str
    engine: str = "ort"
    onnx: str | None = None  # default RUN_DIR/onnx/model.onnx
    provider: str = "cpu"
    data_dir: str | None = None
    batch_size: int = 32
    max_samples: int | None = None
    progress: bool = True
    test_file: str | None = None  # your own data: score this file as the test split (the run's columns and labels)
    knn_train: str | None = None  # embedding runs: a labelled file to index (kNN classification of knn_test)
    knn_test: str | None = None
    knn_k: int = KNN_K
    static_shapes: tuple[tuple[int, int], ...] = ()  # --engine openvino: fixed shapes compiled ahead, calls padded to them

    def __post_init__(self) -> None:
        check_engine(self.engine)
        if self.provider not in PROVIDERS:
            raise KdqatError(f"--provider {self.provider!r} is not one of {', '.join(PROVIDERS)}")
        if self.batch_size <= 0 or (self.max_samples is not None and self.max_samples <= 0) or self.knn_k <= 0:
            raise KdqatError("--batch-size, --max-samples and --knn-k must be positive")
        if (self.knn_train is None) != (self.knn_test is None):
            raise KdqatError("--knn-train and --knn-test go together (index the first, classify the second)")
        check_static_shapes((self.engine,), self.static_shapes)
