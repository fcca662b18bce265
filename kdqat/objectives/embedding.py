"""Sentence embeddings: a sentence-transformers model distilled on unlabelled text, the float model itself as
the teacher; its dev texts carry the float model's vectors as the reference (mean cosine selects); export
ends the graph with the pooled vectors and gates on each text's cosine; served on /v1/embeddings and /embed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdqat.data.task import TaskSpec
from kdqat.errors import KdqatError
from kdqat.glue.tasks import get_task
from kdqat.objectives.base import Objective
from kdqat.parity import EmbeddingParity, compare_embeddings, cosines

class Embedding(Objective):
    name = "embedding"
    problem_type = "embedding"
    metrics = ("cosine",)  # mean cosine similarity of the student's embeddings to the float model's
    labelled = False
    prediction_term = "emb"
    onnx_output = "sentence_embedding"  # pooled (and normalised) vectors
    triton_output = "EMBEDDING"
    routes = ("/v1/embeddings", "/embed")
    serves = "serves embeddings"
    gate_option = "min_cosine"

    @property
    def described(self) -> str:
        return "an embedding run"

    def check_train_options(self, opts) -> None:
        """An embedding student distils --model itself on unlabelled text: no labels, no teacher fine-tuning."""
        for name, why in (("teacher", "the teacher is --model itself (the float embedding model)"),
                          ("init_student", "the student starts from --model"),
                          ("label_column", "embedding text has no labels"), ("text_pair_column", "sentences are embedded one by one"),
                          ("problem", "the objective is the embedding"), ("metric", f"selection is by {self.metrics[0]} to the float model"),
                          ("test_file", "quality is measured by kdqat eval (STS-B, kNN), not a test split"),
                          ("test_split", "quality is measured by kdqat eval (STS-B, kNN), not a test split")):
            if getattr(opts, name) is not None:
                raise KdqatError(f"--{name.replace('_', '-')} does not apply to --objective embedding: {why}")
        from kdqat.losses import EMBEDDING_LOSSES

        if opts.teacher_only:
            raise KdqatError("--teacher-only does not apply to --objective embedding: the float model is the teacher")
        if opts.embedding_loss not in EMBEDDING_LOSSES:
            raise KdqatError(f"--embedding-loss {opts.embedding_loss!r} is not one of {', '.join(EMBEDDING_LOSSES)}")
        if not opts.uses_files:
            if opts.task is None:
                raise KdqatError("give the text to distil on: --train-file (one sentence per line, or a column of a "
                                 "CSV/JSON Lines/Parquet file), --dataset, or --task (a GLUE task's train sentences)")
            get_task(opts.task)

    def check_eval_options(self, opts, run: Path) -> None:
        if opts.test_file:
            raise KdqatError("--test-file scores labelled runs; an embedding run is scored on STS-B and --knn-train/--knn-test")

    def scores(self, task: TaskSpec, outputs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """`labels`: the float model's embeddings of the same texts."""
        return {"cosine": 100.0 * float(cosines(outputs, labels).mean())}

    def prediction_loss(self, student, teacher, embedding_loss: str = "cosine"):
        from kdqat.losses import emb_loss

        return emb_loss(student, teacher, embedding_loss)

    def start_model(self, model: str, task: TaskSpec):
        """The float sentence-embedding model --model names, pooled as its files say, with finite weights: the
        teacher itself (nothing is fine-tuned)."""
        from kdqat.embedding import SentenceEmbedder
        from kdqat.guards import require_finite
        from kdqat.models import resolve_model

        teacher = SentenceEmbedder.from_pretrained(resolve_model(model))
        require_finite(teacher, f"--model {model}")
        return teacher

    def given_teacher(self, opts, task: TaskSpec):
        """The float model itself is the teacher."""
        return self.start_model(opts.model, task)

    def teacher_location(self, opts, out: Path) -> Path:
        from kdqat.models import resolve_model

        return Path(resolve_model(opts.model))

    def with_reference(self, dev: dict, teacher, batch_size: int) -> dict:
        """Tokenized texts plus `labels`: the float model's embedding of each, the reference a student is scored by."""
        from kdqat.embedding import embed_tokenized

        return {split: ds.add_column("labels", embed_tokenized(teacher, ds, max(64, batch_size))) for split, ds in dev.items()}

    def configure_student(self, student, opts) -> None:
        student.max_seq_length = opts.max_seq_length  # written into the student's sentence-transformers files

    def training_text(self, task: TaskSpec, opts) -> str:
        return f"{task.name} text, embedding loss {opts.embedding_loss}"

    def reference_record(self, teacher, folder: Path, task: TaskSpec, dev: dict, opts) -> dict | None:
        """The float model scores itself 100 by definition: its folder and pooling."""
        reference = {f"{split}_{task.metric}": 100.0 for split in dev}
        return {"dev": reference, "folder": str(folder), "model": opts.model, "pooling": teacher.pooling.to_dict()}

    def teacher_folder(self, root: Path, options: dict) -> Path | None:
        """The float model the run distilled (--model), where it can still be found."""
        from kdqat.models import resolve_model

        try:
            folder = Path(resolve_model(options.get("model", "default")))
        except KdqatError:
            return None
        return folder if (folder / "config.json").is_file() else None

    def compare(self, reference: np.ndarray, candidate: np.ndarray, fp16: bool = False) -> EmbeddingParity:
        return compare_embeddings(reference, candidate)

    def parity_failure(self, parity: EmbeddingParity, minimum: float) -> str | None:
        if parity.min_cosine >= minimum:
            return None
        return (f"an embedding's cosine similarity to the PyTorch student's is {parity.min_cosine:.4f} (mean "
                f"{parity.mean_cosine:.4f} over {parity.examples} texts); required {minimum} for every text")

    def gate_value(self, option: float, reference: bool) -> float:
        return option  # every text's cosine, against any implementation

    def parity_columns(self) -> tuple[str, ...]:
        return ("check", "texts", "min cosine", "mean cosine", "max |diff|")

    def parity_row(self, record: dict) -> list[str]:
        return [str(record["examples"]), f"{record['min_cosine']:.6f}", f"{record['mean_cosine']:.6f}",
                f"{record['max_abs_diff']:.2e}"]

    def export_fields(self, model) -> dict:
        return {"dimension": model.dimension, "pooling": model.pooling.to_dict()}

    def answers(self, rows: np.ndarray, labels: list[str] | None) -> list[dict]:
        raise KdqatError("an embedding model answers on /v1/embeddings and /embed, not /v1/predict")
