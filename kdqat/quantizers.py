"""Fake quantizers with straight-through gradients.

Weights: TWN ternary (2 bits) or symmetric uniform (4/8 bits), one scale per tensor or per row.
Activations: 8-bit symmetric with a clip, the scale found per batch ("dynamic") or from a running
max kept during QAT ("static"). Definitions follow REFERENCE.md section 1 (Kim et al. 2022).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from kdqat.config import QuantConfig
from kdqat.errors import KdqatError

TWN_THRESHOLD = 0.7  # delta = 0.7 * mean|W| (Li et al., Ternary Weight Networks)


def _reduce_dims(w: torch.Tensor, per_row: bool) -> tuple[int, ...]:
    """Dimensions a scale is shared over: all (per tensor) or all but the first (per row)."""
    return tuple(range(1, w.dim())) if per_row else tuple(range(w.dim()))


def ternary_codes_and_scale(w: torch.Tensor, per_row: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """TWN ternarization of an already clipped tensor: codes in {-1, 0, 1} and the scale alpha.

    delta = 0.7 * mean|w|; codes = sign(w) * [|w| > delta]; alpha = mean(|w| where |w| > delta).
    With per_row the statistics are taken over each row (dim 0 indexes rows) and alpha has shape [rows, 1].
    """
    dims = _reduce_dims(w, per_row)
    absw = w.abs()
    delta = TWN_THRESHOLD * absw.mean(dim=dims, keepdim=True)
    kept = (absw > delta).to(w.dtype)
    alpha = (absw * kept).sum(dim=dims, keepdim=True) / kept.sum(dim=dims, keepdim=True).clamp_min(1.0)
    return torch.sign(w) * kept, alpha


def uniform_codes_and_scale(w: torch.Tensor, bits: int, per_row: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric uniform quantization: integer codes in [-(2^(b-1)-1), 2^(b-1)-1] and the step size."""
    qmax = 2 ** (bits - 1) - 1
    amax = w.abs().amax(dim=_reduce_dims(w, per_row), keepdim=True).clamp_min(1e-8)
    step = amax / qmax
    return torch.round(w / step), step


class _ClippedSTE(torch.autograd.Function):
    """Forward: the quantized value. Backward: identity inside [-clip, clip], zero outside (straight-through).

    `clip` may be a 0-d tensor (a learned range), so no device-to-host copy is needed. The forward keeps
    the one-byte inside-mask rather than `x`: the backward is then a single multiply.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, clip: float | torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x.abs() <= clip)
        return quantized

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None


def straight_through(x: torch.Tensor, clip: float | torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
    """Return `quantized` in the forward pass with the clipped straight-through gradient w.r.t. `x`."""
    return _ClippedSTE.apply(x, clip, quantized.detach())


class WeightQuantizer(nn.Module):
    """Fake-quantizes a weight tensor on every call; per_row gives one scale per row (embeddings)."""

    def __init__(self, config: QuantConfig, per_row: bool = False) -> None:
        super().__init__()
        self.scheme = config.weight_scheme
        self.bits = config.weight_bits
        self.clip = config.clip
        self.per_row = per_row

    @property
    def enabled(self) -> bool:
        return self.scheme != "none"

    def codes_and_scale(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Integer codes and scale of `w` (what an exporter stores); codes * scale is the forward value."""
        wc = w.detach().clamp(-self.clip, self.clip)
        if self.scheme == "ternary":
            return ternary_codes_and_scale(wc, self.per_row)
        if self.scheme == "uniform":
            return uniform_codes_and_scale(wc, self.bits, self.per_row)
        raise KdqatError("codes_and_scale() called on a weight quantizer that is off (weight_bits=32)")

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return w
        codes, scale = self.codes_and_scale(w)
        return straight_through(w, self.clip, codes * scale)

    def extra_repr(self) -> str:
        return f"scheme={self.scheme}, bits={self.bits}, clip={self.clip}, per_row={self.per_row}"


class ActQuantizer(nn.Module):
    """8-bit symmetric activation fake quantizer.

    dynamic (the paper's code): x_q = round(clip(x) * s) / s with s = 127 / max|clip(x)| of the batch.
    static (deployment): amax is an exponential moving average of max|clip(x)| while training
    (synchronised across data-parallel ranks, so every rank keeps the same scale), frozen in eval mode,
    and the forward pass is exactly ONNX QuantizeLinear -> DequantizeLinear with step = amax / 127 and
    zero point 0: x_q = clamp(round(x / step), -128, 127) * step. The running max is capped at `clip`, so
    saturation does the clipping; what TensorRT and onnxruntime compute is what QAT simulated.
    """

    def __init__(self, config: QuantConfig) -> None:
        super().__init__()
        self.bits = config.act_bits
        self.clip = config.clip
        self.mode = config.act_scale
        self.momentum = config.ema_momentum
        self.register_buffer("amax", torch.zeros(()))
        self.register_buffer("calibrated", torch.zeros((), dtype=torch.bool))
        self._checked_calibrated = False  # host-side cache of `calibrated`, to read the buffer once

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._checked_calibrated = False
        super()._load_from_state_dict(*args, **kwargs)

    @property
    def enabled(self) -> bool:
        return self.bits < 32

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1

    def _observe(self, x: torch.Tensor) -> None:
        """Update the running max with max|clip(x)| = min(max|x|, clip), read in one pass over x."""
        low, high = torch.aminmax(x.detach())
        batch_max = torch.maximum(-low, high).clamp_max(self.clip).float()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_max, op=dist.ReduceOp.MAX)
        ema = self.amax * self.momentum + batch_max * (1.0 - self.momentum)
        self.amax.copy_(torch.where(self.calibrated, ema, batch_max))  # the first batch initialises
        self.calibrated.fill_(True)
        self._checked_calibrated = True

    def step(self) -> torch.Tensor:
        """The static quantization step amax / qmax (ONNX QuantizeLinear's y_scale), as float32."""
        if self.mode != "static":
            raise KdqatError("a dynamic activation quantizer has no fixed scale; train with act_scale='static'")
        if not self._checked_calibrated:
            if not bool(self.calibrated):
                raise KdqatError(
                    "static activation scales are not calibrated yet: run QAT (or a few training batches) first"
                )
            self._checked_calibrated = True
        return self.amax.clamp_min(1e-8).to(torch.float32) / self.qmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        if self.mode == "dynamic":
            xc = x.clamp(-self.clip, self.clip)
            s = self.qmax / xc.detach().abs().amax().clamp_min(1e-8)
            return straight_through(x, self.clip, torch.round(xc * s) / s)
        if self.training:
            self._observe(x)
        step = self.step().to(x.dtype)
        q = (x.detach() / step).round_().clamp_(-self.qmax - 1, self.qmax).mul_(step)  # one buffer, in place
        # gradients pass where the value is representable (|x| <= amax <= clip); the mask is taken now,
        # before the running max moves on
        return straight_through(x, self.amax, q)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, mode={self.mode}, clip={self.clip}"
