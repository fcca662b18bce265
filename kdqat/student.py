"""prepare(model, config): turn a float BERT-family classifier (or sentence embedder) into the fake-quant student, in place;
save_student / load_student: a Hugging Face folder plus the quantization config and learned scales."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel

from kdqat.attention import BMM_QUANTIZERS
from kdqat.config import QUANT_CONFIG_FILE, QuantConfig
from kdqat.errors import KdqatError
from kdqat.files import check_model_folder, check_safetensors
from kdqat.families import family_of
from kdqat.model_folder import load_model_folder
from kdqat.modules import QuantEmbedding, QuantLinear
from kdqat.quantizers import ActQuantizer

QUANT_STATE_FILE = "quant_scales.safetensors"


def prepare(model: PreTrainedModel, config: QuantConfig) -> PreTrainedModel:
    """Insert fake quantizers at the points REFERENCE.md section 1 lists; returns the same model.

    Quantized: every encoder Linear its family names and the pooler (weights ternary per tensor, inputs 8-bit), the
    word embeddings (ternary per row), Q and K before Q.K^T, probabilities and V before probs.V.
    Left in float: position/token-type embeddings, LayerNorm, biases, the classifier.
    """
    if getattr(model, "kdqat_quant_config", None) is not None:
        raise KdqatError("this model is already prepared for quantization")
    family = family_of(model)
    family.use_kdqat_attention(model)
    for layer in family.encoder_layers(model):
        for name in family.linears:
            family.replace(layer, name, QuantLinear.from_linear(layer.get_submodule(name), config))
        attn = family.self_attention_of(layer)
        device = next(attn.parameters()).device
        for name in BMM_QUANTIZERS:
            setattr(attn, name, ActQuantizer(config).to(device))
    pooler = family.pooler_dense(model)
    if pooler is not None:
        family.replace(family.base(model), family.pooler, QuantLinear.from_linear(pooler, config))
    if config.quantize_embeddings:
        table = QuantEmbedding.from_embedding(family.word_embedding_table(model), config)
        family.replace(family.base(model), family.word_embeddings, table)
    model.kdqat_quant_config = config
    return model


def quant_config_of(model: nn.Module) -> QuantConfig:
    config = getattr(model, "kdqat_quant_config", None)
    if config is None:
        raise KdqatError("this model is not a kdqat student (run kdqat.student first)")
    return config


def act_quantizers(model: nn.Module) -> dict[str, ActQuantizer]:
    """Every activation quantizer of a prepared model, by qualified name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, ActQuantizer)}


def set_act_scale_mode(model: nn.Module, mode: str) -> None:
    """Switch every activation quantizer between "static" (stored scales) and "dynamic" (per batch)."""
    if mode not in ("static", "dynamic"):
        raise KdqatError(f"scale mode {mode!r} is not one of 'static', 'dynamic'")
    for q in act_quantizers(model).values():
        q.mode = mode


def _quant_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The quantizers' buffers (learned static scales), which a plain Hugging Face folder does not hold."""
    names = set(act_quantizers(model))
    return {k: v for k, v in model.state_dict().items() if k.rpartition(".")[0] in names}


def float_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights a plain Hugging Face model of the same architecture loads (a student's quantizer buffers
    left out); for a float model, its whole state dict."""
    quant_state = _quant_state(model)
    return {k: v for k, v in model.state_dict().items() if k not in quant_state}


def save_student(model: PreTrainedModel, path: str | Path) -> None:
    """Write a Hugging Face folder (float weights) plus quant_config.json and the learned scales."""
    path = Path(path)
    config = quant_config_of(model)
    quant_state = _quant_state(model)
    hf_state = float_state(model)
    attn = model.config._attn_implementation
    model.config._attn_implementation = "eager"  # a plain transformers user can load the folder
    try:
        model.save_pretrained(path, state_dict=hf_state)
    finally:
        model.config._attn_implementation = attn
    save_file({k: v.contiguous() for k, v in quant_state.items()}, str(path / QUANT_STATE_FILE))
    (path / QUANT_CONFIG_FILE).write_text(config.to_json())


def load_student(path: str | Path, device: str | torch.device = "cpu") -> PreTrainedModel:
    """Load a folder written by save_student back into the same fake-quant model (eval mode)."""
    path = Path(path)
    if not path.is_dir():
        raise KdqatError(f"{path}: no such student folder")
    config_file = path / QUANT_CONFIG_FILE
    if not config_file.is_file():
        raise KdqatError(f"{path}: not a kdqat student ({QUANT_CONFIG_FILE} missing); pass the folder kdqat train wrote")
    try:
        config = QuantConfig.from_dict(json.loads(config_file.read_text()), source=str(config_file))
    except json.JSONDecodeError as e:
        raise KdqatError(f"{config_file}: not valid JSON ({e})") from None
    check_model_folder(path, "copy it again, or rerun kdqat train to write it")
    model = load_model_folder(path)  # a classifier, or a sentence embedder (sentence-transformers layout)
    prepare(model, config)
    state_file = path / QUANT_STATE_FILE
    if not state_file.is_file():
        raise KdqatError(f"{path}: {QUANT_STATE_FILE} missing (the learned activation scales)")
    check_safetensors(state_file, "copy it again, or rerun kdqat train to write it")
    state = load_file(str(state_file))
    expected = _quant_state(model)
    if set(state) != set(expected):
        raise KdqatError(f"{state_file}: quantizer entries do not match the model (corrupt or from another model)")
    model.load_state_dict(state, strict=False)
    return model.to(device).eval()
