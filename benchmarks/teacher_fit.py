"""How a fine-tuned teacher fits its training set against its dev set: the task metric on both, and for
classification how confident it is (mean top-class probability, mean entropy in nats, cross-entropy).

Issue 12: the RTE teacher at 3 epochs is nearly uniform, at 6 it fits the training set; the students distilled
from the second are worse (docs/RESULTS.md). Prints one line per teacher and split.
Run: python benchmarks/teacher_fit.py --task rte TEACHER_DIR [TEACHER_DIR ...] [--data-dir ../shared/glue]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from kdqat.glue.data import load_split
from kdqat.glue.metrics import glue_metrics
from kdqat.glue.tasks import GlueTask, get_task
from kdqat.models import load_teacher, load_tokenizer


def split_logits(model: torch.nn.Module, tokenizer, task: GlueTask, split: str, data_dir: str | None,
                 batch_size: int = 32, max_length: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """The model's logits and the labels over one split of `task`."""
    ds = load_split(task, split, data_dir)
    pair = "text_b" in ds.column_names
    chunks = []
    with torch.no_grad():
        for i in range(0, len(ds), batch_size):
            rows = ds[i:i + batch_size]
            enc = tokenizer(rows["text_a"], rows["text_b"] if pair else None, truncation=True,
                            max_length=max_length, padding=True, return_tensors="pt")
            chunks.append(model(**enc).logits)
    return torch.cat(chunks).numpy(), np.asarray(ds["label"])


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
    for path in args.teachers:
        model, tokenizer = load_teacher(path, task).eval(), load_tokenizer(path)
        for split in ("train", task.dev_splits[0]):
            figures = fit_summary(task, *split_logits(model, tokenizer, task, split, args.data_dir))
            print(f"{path} {split}: " + ", ".join(f"{k} {v:.4g}" for k, v in figures.items()), flush=True)


if __name__ == "__main__":
    main()
