"""How a fine-tuned teacher fits its training set against its dev set: the task metric on both, and for
classification how confident it is (mean top-class probability, mean entropy in nats, cross-entropy).

Issue 12: the RTE teacher at 3 epochs is nearly uniform, at 6 it fits the training set; the map+output students
distilled from the second are worse (docs/RESULTS.md). Prints one line per teacher and split.
Run: python benchmarks/teacher_fit.py --task rte TEACHER_DIR [TEACHER_DIR ...] [--data-dir ../shared/glue]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from kdqat.glue.data import encode, load_split
from kdqat.glue.metrics import glue_metrics
from kdqat.glue.tasks import GlueTask, get_task
from kdqat.models import load_tokenizer
from kdqat.options import DEFAULT_BATCH, TASK_BATCH
from kdqat.runtime.batching import predict
from kdqat.runtime.torch_engine import TorchEngine


def fit_summary(task: GlueTask, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The task metric, and for classification the confidence figures, of one split's logits."""
    out = {task.metric: glue_metrics(task, logits, labels)[task.metric]}
    if not task.is_regression:
        z = torch.from_numpy(logits)
        p = z.softmax(-1)
        out["max_prob"] = p.max(-1).values.mean().item()
        out["entropy"] = -(p * p.clamp_min(1e-12).log()).sum(-1).mean().item()
        out["cross_entropy"] = torch.nn.functional.cross_entropy(z, torch.from_numpy(labels).long()).item()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("teachers", nargs="+", help="fine-tuned teacher folders (kdqat train's OUTPUT_DIR/teacher)")
    parser.add_argument("--task", required=True)
    parser.add_argument("--data-dir", default=None, help="GLUE_DIR-layout folder (default: GLUE_DIR)")
    args = parser.parse_args()
    task = get_task(args.task)
    batch_size, max_length = TASK_BATCH.get(task.name, DEFAULT_BATCH)  # as the teachers were trained
    splits = {split: load_split(task, split, args.data_dir) for split in ("train", task.dev_splits[0])}
    for path in args.teachers:
        teacher, tokenizer = TorchEngine.teacher(path), load_tokenizer(path)
        for split, ds in splits.items():
            logits = predict(teacher.run, encode(ds, tokenizer, max_length), batch_size)
            figures = fit_summary(task, logits, np.asarray(ds["label"]))
            print(f"{path} {split}: " + ", ".join(f"{k} {v:.4g}" for k, v in figures.items()), flush=True)


if __name__ == "__main__":
    main()
