"""Export-time stand-ins for kdqat's fake-quant modules: the same numbers in PyTorch, explicit Q/DQ in ONNX.

`to_qdq(student)` returns a copy of a trained student in which every fake quantizer is replaced by a
module that computes exactly what the student computes in static mode, and whose autograd Function
has a `symbolic` that tells the TorchScript ONNX exporter which nodes to write:

- an activation quantizer -> QuantizeLinear -> DequantizeLinear (int8, zero point 0, scale amax/127);
- a quantized Linear -> MatMul(DQ(Q(x)), DequantizeLinear(int8 codes [in, out], scale)) + bias, the scale
  per tensor or, for per-channel students, per output channel (DequantizeLinear axis 1);
  PyTorch still runs F.linear on the same weight values, so a stand-in is bit-identical to the student;
- the quantized word embeddings -> Gather(DequantizeLinear(int8 codes [V, H], per-row scale, axis 0)).

Weights are stored as their integer codes ({-1, 0, 1} for ternary), so no float weight of a quantized
layer reaches the graph. kdqat itself knows nothing about ONNX; this module reads its quantizers.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from kdqat.errors import KdqatError
from kdqat.modules import QuantEmbedding, QuantLinear
from kdqat.student import act_quantizers, quant_config_of
from kdqat.quantizers import ActQuantizer, WeightQuantizer

INT8_MIN, INT8_MAX = -128, 127


class _QuantDequant(torch.autograd.Function):
    """x -> clamp(round(x / step), -128, 127) * step; exported as QuantizeLinear + DequantizeLinear."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, step: float) -> torch.Tensor:
        return torch.round(x / step).clamp(INT8_MIN, INT8_MAX) * step

    @staticmethod
    def symbolic(g, x, step: float):
        scale = g.op("Constant", value_t=torch.tensor(step, dtype=torch.float32))
        zero = g.op("Constant", value_t=torch.tensor(0, dtype=torch.int8))
        return g.op("DequantizeLinear", g.op("QuantizeLinear", x, scale, zero), scale, zero)


class _Dequantize(torch.autograd.Function):
    """Integer codes times their scale (per tensor, or per slice along `axis`); exported as DequantizeLinear."""

    @staticmethod
    def forward(ctx, codes: torch.Tensor, scale: torch.Tensor, axis: int | None) -> torch.Tensor:
        if axis is not None:
            shape = [1] * codes.dim()
            shape[axis] = -1
            scale = scale.reshape(shape)
        return codes.to(scale.dtype) * scale

    @staticmethod
    def symbolic(g, codes, scale, axis: int | None):
        # no zero point: DequantizeLinear then treats it as 0, which is what TensorRT requires
        if axis is None:
            return g.op("DequantizeLinear", codes, scale)
        return g.op("DequantizeLinear", codes, scale, axis_i=axis)


class QDQActivation(nn.Module):
    """A calibrated static activation quantizer with its step frozen."""

    def __init__(self, quantizer: ActQuantizer) -> None:
        super().__init__()
        if quantizer.bits != 8:
            raise KdqatError(f"only 8-bit activations export to ONNX Q/DQ (this student uses {quantizer.bits} bits)")
        self.step = float(quantizer.step())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _QuantDequant.apply(x, self.step)

    def extra_repr(self) -> str:
        return f"step={self.step:.6g}"


def _activation(quantizer: ActQuantizer) -> nn.Module:
    return QDQActivation(quantizer) if quantizer.enabled else nn.Identity()


def _codes(quantizer: WeightQuantizer, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer codes and their scale. The scale of a slice whose codes are all 0 (e.g. a padding row: ternary gives
    it scale 0, uniform a vanishing one) becomes 1: the same zeros, a scale TensorRT accepts (it must be positive)
    and float16 holds."""
    codes, scale = quantizer.codes_and_scale(weight.detach())
    shared = [d for d in range(codes.dim()) if scale.dim() == codes.dim() and scale.shape[d] == 1] or list(range(codes.dim()))
    used = (codes != 0).any(dim=shared, keepdim=True) if scale.dim() == codes.dim() else (codes != 0).any()
    scale = torch.where(used, scale, torch.ones_like(scale)).to(torch.float32)
    return codes.to(torch.int8), scale


class _DequantizedLinear(torch.autograd.Function):
    """F.linear with a weight held as codes [in, out] and a scale (0-d, or [out] along axis 1); exported as
    MatMul(x, DQ(codes)) + bias.

    PyTorch computes exactly what the student's F.linear computes (same weight values, same kernel), so
    the stand-in is bit-identical to the student; the graph gets the MatMul layout integer kernels expect.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, codes_t: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None,
                axis: int | None):
        return F.linear(x, (codes_t.to(scale.dtype) * scale).t().contiguous(), bias)  # the student's layout

    @staticmethod
    def symbolic(g, x, codes_t, scale, bias, axis: int | None):
        weight = (g.op("DequantizeLinear", codes_t, scale) if axis is None
                  else g.op("DequantizeLinear", codes_t, scale, axis_i=axis))
        y = g.op("MatMul", x, weight)
        return y if bias is None or bias.node().mustBeNone() else g.op("Add", y, bias)  # no bias: ModernBERT


class QDQLinear(nn.Module):
    """x @ W^T + b with W kept as int8 codes stored [in, out] (a MatMul's layout) and one scale, or one per
    output channel (a column of the stored codes)."""

    def __init__(self, linear: QuantLinear) -> None:
        super().__init__()
        self.input_quantizer = _activation(linear.input_quantizer)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        if linear.weight_quantizer.enabled:
            codes, scale = _codes(linear.weight_quantizer, linear.weight)
            self.register_buffer("codes", codes.t().contiguous())
            self.axis = 1 if linear.weight_quantizer.per_row else None
            self.register_buffer("scale", scale.reshape(-1) if self.axis else scale.reshape(()))
            self.weight = None
        else:
            self.codes = None
            self.weight = nn.Parameter(linear.weight.detach().clone(), requires_grad=False)

    def effective_weight(self) -> torch.Tensor:
        """The [out, in] weight values, as QuantLinear.effective_weight gives them."""
        return self.weight if self.codes is None else (self.codes.to(self.scale.dtype) * self.scale).t()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_quantizer(x)
        if self.codes is None:
            return F.linear(x, self.weight, self.bias)
        return _DequantizedLinear.apply(x, self.codes, self.scale, self.bias, self.axis)


class QDQEmbedding(nn.Module):
    """Word embeddings as int8 codes with one scale per row (DequantizeLinear axis 0, then Gather)."""

    def __init__(self, embedding: QuantEmbedding) -> None:
        super().__init__()
        codes, scale = _codes(embedding.weight_quantizer, embedding.weight)
        self.register_buffer("codes", codes)
        self.register_buffer("scale", scale.reshape(-1))
        self.padding_idx = embedding.padding_idx

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, _Dequantize.apply(self.codes, self.scale, 0), self.padding_idx)


def check_exportable(student: nn.Module) -> None:
    """Refuse students that cannot become a static Q/DQ graph, saying how to fix it."""
    config = quant_config_of(student)
    if config.act_bits < 32 and config.act_scale != "static":
        raise KdqatError(
            "this student uses dynamic activation scales, which a Q/DQ graph cannot hold: "
            "train it with --act-scale static (the default)"
        )
    for name, q in act_quantizers(student).items():
        if q.enabled and not bool(q.calibrated):
            raise KdqatError(f"activation quantizer {name} has no learned scale (the student was never trained)")


def to_qdq(student: nn.Module) -> nn.Module:
    """A frozen eval-mode copy of `student` whose quantizers are Q/DQ stand-ins (same outputs, exportable)."""
    check_exportable(student)
    model = copy.deepcopy(student).eval()
    for q in act_quantizers(model).values():
        q.mode = "static"
    replacements: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if isinstance(module, QuantLinear):
            replacements[name] = QDQLinear(module)
        elif isinstance(module, QuantEmbedding):
            replacements[name] = QDQEmbedding(module)
        elif isinstance(module, ActQuantizer):  # the attention bmm quantizers
            replacements[name] = _activation(module)
    for name, new in replacements.items():
        if any(name.startswith(f"{outer}.") for outer in replacements):
            continue  # inside a module already replaced
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)
    model.kdqat_quant_config = None
    return model.requires_grad_(False)
