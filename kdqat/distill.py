"""Knowledge distillation from a frozen full-precision teacher, as a transformers Trainer.

The teacher is held beside the student (eval mode, no grad, outside the state dict and checkpoints).
Each step runs both models under `capture`, computes the weighted losses, and logs every term.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from transformers import Trainer

from kdqat.capture import Internals, capture
from kdqat.families import family_of
from kdqat.guards import nonfinite_loss_error
from kdqat.losses import att_loss, map_loss, output_loss, pred_loss, rep_loss


@dataclass
class ForwardView:
    """What one model computed on a batch."""

    logits: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...]
    internals: Internals


def run_captured(model: nn.Module, inputs: dict, unwrapped: nn.Module | None = None) -> ForwardView:
    with capture(unwrapped if unwrapped is not None else model) as internals:
        out = model(**inputs, output_hidden_states=True)
    return ForwardView(out.logits, out.hidden_states, internals)


def distillation_losses(
    student: ForwardView, teacher: ForwardView, mask: torch.Tensor, weights: dict[str, float],
    prediction: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = pred_loss,
) -> dict[str, torch.Tensor]:
    """The unweighted value of every loss with a non-zero weight, by name. The term on the models' outputs
    (`logits`: class logits, a score, or sentence embeddings) is the objective's `prediction`, under the name
    the weights give it ("pred", or "emb" for embeddings)."""
    inner = {
        "rep": lambda: rep_loss(student.hidden_states, teacher.hidden_states, mask),
        "att": lambda: att_loss(student.internals.scores, teacher.internals.scores, mask),
        "map": lambda: map_loss(student.internals.probs, teacher.internals.probs, mask),
        "output": lambda: output_loss(student.internals.attn_outputs, teacher.internals.attn_outputs, mask),
    }
    return {name: inner[name]() if name in inner else prediction(student.logits, teacher.logits)
            for name, w in weights.items() if w != 0.0}


class DistillationTrainer(Trainer):
    """Trainer whose training loss is the weighted sum of distillation losses against `teacher`.

    Evaluation uses the student's own task loss, so dev metrics do not run the teacher.
    """

    def __init__(self, *args, teacher: nn.Module, loss_weights: dict[str, float],
                 prediction: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = pred_loss, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Our loss is a per-sentence mean that ignores num_items_in_batch: with this False, Trainer divides it
        # by the gradient-accumulation steps itself (it would not for a model that normalises by token count).
        self.model_accepts_loss_kwargs = False
        family_of(teacher).use_kdqat_attention(teacher)
        self.teacher = teacher.to(self.args.device).eval().requires_grad_(False)
        self.loss_weights = dict(loss_weights)
        self.prediction = prediction  # the objective's term on the outputs (kdqat.objectives)
        self._loss_sums: dict[str, torch.Tensor] = defaultdict(float)  # read once per logging step
        self._loss_count = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not model.training:
            outputs = model(**inputs)
            return (outputs.loss, outputs) if return_outputs else outputs.loss
        inputs = {k: v for k, v in inputs.items() if k != "labels"}  # labels: dev-only (classes, reference vectors)
        with torch.no_grad():
            teacher_view = run_captured(self.teacher, inputs)
        student_view = run_captured(model, inputs, unwrapped=self.accelerator.unwrap_model(model))
        terms = distillation_losses(student_view, teacher_view, inputs["attention_mask"], self.loss_weights,
                                    self.prediction)
        loss = sum(self.loss_weights[name] * value for name, value in terms.items())
        if not torch.isfinite(loss):
            raise nonfinite_loss_error(loss, self.state.global_step + 1, self.args.output_dir, terms)
        for name, value in terms.items():
            self._loss_sums[name] = self._loss_sums[name] + value.detach()
        self._loss_count += 1
        return (loss, student_view) if return_outputs else loss

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if self._loss_count and "loss" in logs:
            logs.update({f"loss_{k}": round(float(v) / self._loss_count, 6) for k, v in self._loss_sums.items()})
            self._loss_sums.clear()
            self._loss_count = 0
        super().log(logs, *args, **kwargs)
