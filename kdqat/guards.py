"""Divergence guards: a run that goes non-finite stops with one line, and nothing non-finite is kept.

- a non-finite training loss stops the stage at once (both stages);
- at every evaluation the dev loss and the weights must be finite, and no weight may have exploded (|w| above
  EXPLODED), before that step's checkpoint is written: every checkpoint on disk is therefore known good, and
  resuming starts from the newest one;
- the message names the one supported way to lower the rate: remove the stage's checkpoints and rerun with a
  lower --learning-rate (--teacher-learning-rate); the stage starts over (options.check_resumable allows it);
- a model with a non-finite weight is never saved as teacher/ or student/, nor reused as a teacher.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import get_last_checkpoint

from kdqat.errors import KdqatError


# A trained BERT's weights stay within a few units (LayerNorm gains ~1, embeddings < 1); a weight beyond this
# has exploded even while it is still finite (a learning rate of 1e6 reaches 1e14 within a few steps).
EXPLODED = 1e4
RATE_OPTION = {"teacher": "--teacher-learning-rate", "student": "--learning-rate"}


def _resume_hint(checkpoints: str) -> str:
    last = get_last_checkpoint(checkpoints) if Path(checkpoints).is_dir() else None
    stage = Path(checkpoints).name
    option = RATE_OPTION.get(stage, "--learning-rate")
    over = f"start the {stage} stage over with a lower rate: remove {checkpoints} and rerun with a lower {option}"
    if last:
        return f"the last good checkpoint is {last}: rerun to resume from it, or {over}"
    return f"no checkpoint of this stage was kept: {over}"


def nonfinite_loss_error(loss: torch.Tensor, step: int, checkpoints: str, terms: dict[str, torch.Tensor] | None = None) -> KdqatError:
    detail = f" ({', '.join(f'{k}={v.item():.4g}' for k, v in terms.items())})" if terms else ""
    return KdqatError(f"the training loss became {loss.item()} at step {step}{detail}; {_resume_hint(checkpoints)}")


def first_nonfinite(model: nn.Module) -> str | None:
    """The name of the first parameter or buffer holding a NaN or infinity, else None."""
    for name, t in (*model.named_parameters(), *model.named_buffers()):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name
    return None


def first_exploded(model: nn.Module) -> str | None:
    """The name and size of the first parameter with a weight beyond EXPLODED, else None."""
    for name, t in model.named_parameters():
        if t.is_floating_point() and t.numel() and (size := float(t.detach().abs().max())) > EXPLODED:
            return f"{name} reaches {size:.3g}"
    return None


def require_finite(model: nn.Module, what: str) -> None:
    """Refuse to save or reuse a model with non-finite weights."""
    bad = first_nonfinite(model)
    if bad is not None:
        raise KdqatError(f"{what} has non-finite weights ({bad}); it was not saved or used")


class FiniteLossTrainer(Trainer):
    """A Trainer that stops with a KdqatError as soon as its training loss is not finite."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        loss = result[0] if return_outputs else result
        if model.training and not torch.isfinite(loss):
            raise nonfinite_loss_error(loss, self.state.global_step + 1, self.args.output_dir)
        return result


class DivergenceGuard(TrainerCallback):
    """At each evaluation, before its checkpoint is saved: a non-finite dev loss or weight stops the stage."""

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        losses = {k: v for k, v in (metrics or {}).items() if k.endswith("_loss")}
        bad = next((f"{k} = {v}" for k, v in losses.items() if not math.isfinite(v)), None)
        if bad is None and model is not None and (name := first_nonfinite(model)) is not None:
            bad = f"weight {name} is not finite"
        if bad is None and model is not None and (exploded := first_exploded(model)) is not None:
            bad = f"weight {exploded}"
        if bad is not None:
            raise KdqatError(f"training diverged at step {state.global_step} ({bad}); {_resume_hint(args.output_dir)}")
