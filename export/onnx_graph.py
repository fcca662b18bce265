"""PyTorch classifier or sentence embedder -> ONNX ModelProto (TorchScript exporter), with dynamic batch and sequence axes."""

from __future__ import annotations

import io
import warnings

import onnx
import torch
from torch import nn

from kdqat.runtime.batching import INPUT_NAMES
from kdqat.objectives.classification import Classification

DEPLOY_OPSET = 19  # LayerNormalization is one op (17+); onnx.reference runs Q/DQ from 19; TensorRT 10 and onnxruntime load it
OUTPUT_NAME = Classification.onnx_output  # a task's own output name comes from its objective (kdqat.objectives)


class _Logits(nn.Module):
    """Positional (input_ids, attention_mask, token_type_ids) -> logits, the signature the graph gets."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits


def example_inputs(batch: int = 2, length: int = 16, vocab: int = 1000) -> tuple[torch.Tensor, ...]:
    """Tracing inputs; the second sentence padded, so that the mask path is traced as used."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[-1, length // 2:] = 0
    return ids, mask, torch.zeros(batch, length, dtype=torch.long)


def to_onnx(model: nn.Module, opset: int = DEPLOY_OPSET, output_name: str = OUTPUT_NAME) -> onnx.ModelProto:
    """Trace `model` (eval mode) into an ONNX model with inputs named as runtime.batching.INPUT_NAMES and one
    output, `output_name` ([batch, labels] logits, or [batch, dimension] embeddings)."""
    model.eval()
    vocab = getattr(getattr(model, "config", None), "vocab_size", 1000)
    buffer = io.BytesIO()
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES} | {output_name: {0: "batch"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes
        torch.onnx.export(_Logits(model), example_inputs(vocab=min(vocab, 1000)), buffer, dynamo=False,
                          opset_version=opset, input_names=list(INPUT_NAMES), output_names=[output_name],
                          dynamic_axes=axes, do_constant_folding=True)
    return onnx.load_from_string(buffer.getvalue())
