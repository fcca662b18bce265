"""Sentence-embedding encoders: a transformers encoder, pooled and (optionally) normalised as its
sentence-transformers files say, as one module whose output (`.logits`, [B, D]) is the sentence embedding.

The pooling is read from the model folder (modules.json, 1_Pooling/config.json, a Normalize module), never
assumed; a student folder is written back in the same layout, so sentence-transformers loads it too (as float).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers.utils import ModelOutput

from kdqat.errors import KdqatError, first_line
from kdqat.losses import emb_loss

POOLING_MODES = ("mean", "cls", "max")
MODULES_FILE = "modules.json"
_ST = "sentence_transformers.models."
# sentence-transformers' pooling config key -> our mode; the keys it has that kdqat does not pool by
_MODE_KEYS = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max"}
_UNSUPPORTED_KEYS = ("pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken")


@dataclass(frozen=True)
class Pooling:
    """How token states become one sentence vector: mean over real tokens, the first ([CLS]) token, or the
    element-wise max over real tokens; then L2-normalised when `normalize`."""

    mode: str = "mean"
    normalize: bool = True

    def __post_init__(self) -> None:
        if self.mode not in POOLING_MODES:
            raise KdqatError(f"pooling {self.mode!r} is not one of {', '.join(POOLING_MODES)}")

    def to_dict(self) -> dict:
        return asdict(self)


def _model_file(model: str, name: str) -> Path | None:
    """`name` inside a model folder or hub repository (None when it has no such file)."""
    folder = Path(model)
    if folder.is_dir():
        return folder / name if (folder / name).is_file() else None
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(model, name))
    except Exception:  # not on the hub, no such file, no network: the caller says what is missing
        return None


def read_pooling(model: str | Path) -> Pooling:
    """The pooling of a sentence-transformers model (folder or hub id), from its modules.json and pooling config."""
    modules_file = _model_file(str(model), MODULES_FILE)
    if modules_file is None:
        raise KdqatError(f"{model}: not a sentence-transformers model (no {MODULES_FILE}); --objective embedding needs "
                         "the pooling its files declare")
    try:
        modules = json.loads(modules_file.read_text())
        types = [(m["type"], m.get("path", "")) for m in modules]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise KdqatError(f"{modules_file}: unreadable (a list of {{'type', 'path'}} modules expected)") from None
    kinds = [t.removeprefix(_ST) for t, _ in types]
    unknown = [k for k in kinds if k not in ("Transformer", "Pooling", "Normalize")]
    if unknown or kinds.count("Pooling") != 1 or kinds[0] != "Transformer":
        raise KdqatError(f"{modules_file}: modules {', '.join(kinds)}; kdqat distils Transformer -> Pooling "
                         f"[-> Normalize] models{' (not ' + ', '.join(unknown) + ')' if unknown else ''}")
    pooling_dir = types[kinds.index("Pooling")][1]
    config_file = _model_file(str(model), f"{pooling_dir}/config.json")
    if config_file is None:
        raise KdqatError(f"{model}: {pooling_dir}/config.json missing (the pooling configuration)")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError:
        raise KdqatError(f"{config_file}: not valid JSON") from None
    chosen = [mode for key, mode in _MODE_KEYS.items() if config.get(key)]
    other = [key for key in _UNSUPPORTED_KEYS if config.get(key)]
    if other or len(chosen) != 1:
        raise KdqatError(f"{config_file}: pooling {', '.join(chosen + other) or 'none'}; kdqat pools by exactly one of "
                         f"{', '.join(_MODE_KEYS)}")
    return Pooling(chosen[0], normalize="Normalize" in kinds)


def write_pooling(folder: Path, pooling: Pooling, dimension: int, max_seq_length: int) -> None:
    """sentence-transformers' files for `pooling` in a model folder (the weights are saved beside them)."""
    modules = [{"idx": 0, "name": "0", "path": "", "type": _ST + "Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": _ST + "Pooling"}]
    if pooling.normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": _ST + "Normalize"})
        (folder / "2_Normalize").mkdir(exist_ok=True)
    (folder / MODULES_FILE).write_text(json.dumps(modules, indent=2))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    config = {"word_embedding_dimension": dimension, **{key: mode == pooling.mode for key, mode in _MODE_KEYS.items()},
              **{key: False for key in _UNSUPPORTED_KEYS}}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False}))


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """[B, S, D] token states and [B, S] mask (1 = token) -> [B, D] sentence vectors."""
    if pooling.mode == "cls":
        vectors = hidden[:, 0]
    else:
        m = mask.unsqueeze(-1).to(hidden.dtype)
        if pooling.mode == "mean":
            vectors = (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)
        else:  # max over real tokens; padding can never win
            vectors = (hidden + (m - 1.0) * 1e9).max(1).values
    return F.normalize(vectors, p=2.0, dim=-1) if pooling.normalize else vectors


@dataclass
class EmbeddingOutput(ModelOutput):
    """`logits` holds the sentence embeddings [B, D] (the name every kdqat engine reads); `loss` is 1 - cosine
    to `labels` (reference embeddings) when they are given."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


class SentenceEmbedder(nn.Module):
    """An encoder (transformers AutoModel, no pooler) plus pooling: input ids -> sentence embeddings.

    `base_model` and `config` are the encoder's, so kdqat's quantization, capture and attention code see the
    same BERT-family layout as in a classifier.
    """

    def __init__(self, encoder: PreTrainedModel, pooling: Pooling, max_seq_length: int = 128) -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        self.max_seq_length = max_seq_length  # what its sentence-transformers files declare

    @property
    def config(self):
        return self.encoder.config

    @property
    def base_model(self) -> PreTrainedModel:
        return self.encoder

    @property
    def dimension(self) -> int:
        return int(self.encoder.config.hidden_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, output_hidden_states: bool = False, **_) -> EmbeddingOutput:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                           output_hidden_states=output_hidden_states)
        vectors = pool(out.last_hidden_state, attention_mask, self.pooling)
        loss = emb_loss(vectors, labels, "cosine") if labels is not None else None
        return EmbeddingOutput(loss=loss, logits=vectors, hidden_states=out.hidden_states)

    @classmethod
    def from_pretrained(cls, model: str | Path, pooling: Pooling | None = None) -> SentenceEmbedder:
        """The encoder of a model folder or hub id with the pooling its sentence-transformers files declare."""
        from transformers.utils import logging as hf_logging

        pooling = pooling or read_pooling(model)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # its load report would list the pooler weights left out, every time
        try:
            try:  # embeddings come from the token states: no pooler (BERT-family models take this switch)
                encoder = AutoModel.from_pretrained(str(model), add_pooling_layer=False)
            except TypeError:  # an architecture without a pooler switch
                encoder = AutoModel.from_pretrained(str(model))
        except (OSError, ValueError) as e:
            raise KdqatError(f"cannot load encoder {model}: {first_line(e)}") from None
        finally:
            hf_logging.set_verbosity(verbosity)
        if getattr(encoder, "pooler", None) is not None:
            encoder.pooler = None
        return cls(encoder, pooling, _declared_length(model))

    def save_pretrained(self, path: str | Path, state_dict: dict[str, torch.Tensor] | None = None, **kwargs) -> None:
        """A sentence-transformers folder: the encoder's weights (`state_dict` keys as this module's) and pooling."""
        path = Path(path)
        encoder_state = None
        if state_dict is not None:
            encoder_state = {k.removeprefix("encoder."): v for k, v in state_dict.items() if k.startswith("encoder.")}
        self.encoder.save_pretrained(path, state_dict=encoder_state, **kwargs)
        write_pooling(path, self.pooling, self.dimension, self.max_seq_length)


@torch.inference_mode()
def embed_tokenized(model: SentenceEmbedder, ds, batch_size: int) -> list[list[float]]:
    """The embeddings of a tokenized Dataset's rows (input_ids, attention_mask[, token_type_ids]), in row order."""
    from torch.nn.utils.rnn import pad_sequence

    model.eval()
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in ds.column_names]
    out: list[list[float]] = []
    for start in range(0, len(ds), batch_size):
        rows = ds[start:start + batch_size]
        batch = {k: pad_sequence([torch.tensor(x) for x in rows[k]], batch_first=True) for k in keys}
        out.extend(model(**batch).logits.float().tolist())
    return out


def _declared_length(model: str | Path) -> int:
    """max_seq_length of a sentence-transformers folder's sentence_bert_config.json (128 when it has none)."""
    config = _model_file(str(model), "sentence_bert_config.json")
    try:
        return int(json.loads(config.read_text())["max_seq_length"]) if config else 128
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return 128


def is_embedding_folder(path: str | Path) -> bool:
    """A model folder of a sentence-embedding model (sentence-transformers layout)."""
    return (Path(path) / MODULES_FILE).is_file()
