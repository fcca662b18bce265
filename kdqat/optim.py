"""BertAdam: the optimizer of the BERT reference code, which the paper's official training code uses.

It is not torch's AdamW (REFERENCE.md, "Schedule"): the moments carry no bias correction, each
parameter's gradient is clipped to norm `max_grad_norm` on its own (not one global norm), eps is 1e-6,
and weight decay is added to the update (decoupled), so it is scaled by the learning rate with it.
The warm-up-linear schedule comes from the Trainer's scheduler, which sets each group's `lr`.
"""

from __future__ import annotations

from typing import Iterable

import torch

from kdqat.errors import KdqatError

from kdqat.options import OPTIMIZERS


class BertAdam(torch.optim.Optimizer):
    """update = m / (sqrt(v) + eps) + weight_decay * p;  p -= lr * update.

    m and v are plain exponential moving averages of the (per-parameter clipped) gradient and its square.
    """

    def __init__(self, params: Iterable, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0, max_grad_norm: float = 1.0) -> None:
        if not lr >= 0.0:
            raise KdqatError(f"BertAdam: learning rate {lr} must be >= 0")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise KdqatError(f"BertAdam: betas {betas} must be in [0, 1)")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, max_grad_norm=max_grad_norm)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if group["max_grad_norm"] > 0:  # torch.nn.utils.clip_grad_norm_ on this one tensor
                    torch.nn.utils.clip_grad_norm_(p, group["max_grad_norm"])
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                update = m / (v.sqrt() + group["eps"])
                if group["weight_decay"] > 0.0:
                    update.add_(p, alpha=group["weight_decay"])
                p.add_(update, alpha=-group["lr"])
        return loss


def optimizer_cls_and_kwargs(name: str, lr: float, max_grad_norm: float = 1.0
                             ) -> tuple[type[torch.optim.Optimizer], dict] | None:
    """What `Trainer(optimizer_cls_and_kwargs=...)` takes for `name`; None leaves the Trainer's AdamW.

    The Trainer still builds the parameter groups (weight decay off for biases and LayerNorm) and the
    learning-rate schedule; BertAdam clips per parameter, so the Trainer's global clip must be off.
    """
    if name == "adamw":
        return None
    if name == "bertadam":
        return BertAdam, {"lr": lr, "max_grad_norm": max_grad_norm}
    raise KdqatError(f"--optimizer {name!r} is not one of {', '.join(OPTIMIZERS)}")
