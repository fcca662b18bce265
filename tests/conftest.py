"""Shared fixtures: a tiny BERT with the default model's real tokenizer, and the real GLUE folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
)

REPO = Path(__file__).resolve().parents[1]
GLUE_DIR = Path(os.environ.get("GLUE_DIR", REPO.parent / "shared" / "glue"))


def tiny_config(**overrides) -> BertConfig:
    cfg = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
               intermediate_size=64, max_position_embeddings=64, num_labels=2)
    cfg.update(overrides)
    return BertConfig(**cfg)


def tiny_classifier(seed: int = 0, **overrides) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(tiny_config(**overrides)).eval()


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    if not (GLUE_DIR / "RTE" / "train.tsv").is_file():
        pytest.skip(f"GLUE data not found at {GLUE_DIR} (set GLUE_DIR)")
    return GLUE_DIR


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT saved as a Hugging Face folder with the default model's tokenizer."""
    from kdqat.models import resolve_model

    path = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("default"))
    torch.manual_seed(0)
    BertModel(tiny_config(vocab_size=tokenizer.vocab_size, max_position_embeddings=128)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def exported_run(tmp_path_factory, tiny_model_dir) -> Path:
    """A tiny RTE student run, exported (random-token parity sample): what export's consumers read."""
    from kdqat.export.pipeline import ExportOptions, export_student
    from kdqat import QuantConfig

    run = make_student_run(tmp_path_factory.mktemp("exported") / "run", tiny_model_dir, QuantConfig())
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("GLUE_DIR", raising=False)
        export_student(ExportOptions(str(run), samples=64, progress=False))
    return run


def train_options(tmp_path: Path, model_dir: Path, glue_dir: Path, name: str = "run", **overrides):
    """TrainOptions for a seconds-long run of the tiny model on a few real RTE rows."""
    from kdqat.train import TrainOptions

    base = dict(task="rte", output_dir=str(tmp_path / name), model=str(model_dir), data_dir=str(glue_dir),
                max_train_samples=32, max_eval_samples=16, batch_size=8, max_steps=4, eval_steps=2,
                logging_steps=1, progress=False)
    return TrainOptions(**{**base, **overrides})


def run_cli(*args: str, cwd: Path, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """`kdqat ARGS` in a fresh interpreter, as a user runs it: exit status, stdout and stderr."""
    return subprocess.run([sys.executable, "-m", "kdqat.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, **kwargs)


def batch(seed: int = 0, batch_size: int = 3, length: int = 9, vocab: int = 120, pad_last: int = 4):
    """Random ids with the last sentence padded by `pad_last` tokens."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (batch_size, length), generator=g)
    mask = torch.ones(batch_size, length, dtype=torch.long)
    if pad_last:
        mask[-1, -pad_last:] = 0
        ids[-1, -pad_last:] = 0
    return ids, mask


def make_student_run(path: Path, model_dir: Path, config, task: str = "rte", max_seq_length: int = 32,
                     calibrate: bool = True, seed: int = 0) -> Path:
    """A `kdqat train`-shaped output folder holding a tiny student whose static scales were calibrated on
    a few random batches (no distillation: export and eval only need a consistent student)."""
    import json

    from kdqat import prepare, save_student

    torch.manual_seed(seed)
    num_labels = {"stsb": 1, "mnli": 3}.get(task, 2)
    model = BertForSequenceClassification.from_pretrained(model_dir, num_labels=num_labels)
    prepare(model, config)
    if calibrate:
        model.train()
        with torch.no_grad():
            for i in range(4):
                ids, mask = batch(seed=i, batch_size=8, length=max_seq_length, vocab=model.config.vocab_size)
                model(input_ids=ids, attention_mask=mask)
    model.eval()
    save_student(model, path / "student")
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(path / "student")
    options = {"task": task, "max_seq_length": max_seq_length, "data_dir": None, "teacher": None}
    (path / "config.json").write_text(json.dumps({"options": options}))
    return path
