"""The peer: what a user would do instead of kdqat. Export the float model to ONNX (eager attention, the pattern
onnxruntime's fusions recognise), apply onnxruntime's BERT fusions (EmbedLayerNormalization, Attention, BiasGelu,
SkipLayerNormalization where they match) and `quantize_dynamic` to int8 (weights int8 per tensor, activations
quantized per batch at run time): the baseline benchmarks/peers.py (classifiers) and benchmarks/embeddings.py
measure the student against."""

from __future__ import annotations

import copy
from pathlib import Path

from torch import nn

from kdqat.export.onnx_graph import OUTPUT_NAME, to_onnx


def peer_graph(model: nn.Module, folder: Path, output_name: str = OUTPUT_NAME) -> tuple[Path, dict]:
    """The float `model` -> ONNX -> fusions -> dynamic int8, written into `folder`; (path, what was fused)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    float_path, fused_path, int8_path = folder / "float.onnx", folder / "fused.onnx", folder / "peer_int8.onnx"
    # a copy: switching a transformers classifier's attention back and forth left it 2x slower in PyTorch
    # (measured), and the caller times `model` next to the peer
    model = copy.deepcopy(model)
    model.config._attn_implementation = "eager"
    onnx.save(to_onnx(model, output_name=output_name), str(float_path))
    config = model.config
    fused = optimize_model(str(float_path), model_type="bert", num_heads=config.num_attention_heads,
                           hidden_size=config.hidden_size)
    fused.save_model_to_file(str(fused_path))
    # the fused graph's contrib ops defeat shape inference; their outputs are float
    quantize_dynamic(str(fused_path), str(int8_path), weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    fused_ops = {k: v for k, v in fused.get_fused_operator_statistics().items() if v}
    return int8_path, {"fused_ops": fused_ops, "bytes": int8_path.stat().st_size,
                       "float_graph_bytes": float_path.stat().st_size}
