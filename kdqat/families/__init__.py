"""The encoder families kdqat quantizes, looked up by transformers' `config.model_type`.

`family_of(model)` is how quantization, capture and export find a model's parts; `check_model_type` refuses an
encoder kdqat does not know, in one line naming the known ones, before any work is done.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

from kdqat.errors import KdqatError
from kdqat.families.base import EncoderFamily
from kdqat.families.bert import BERT
from kdqat.families.deberta import DEBERTA
from kdqat.families.distilbert import DISTILBERT
from kdqat.families.modernbert import MODERNBERT
from kdqat.families.mpnet import MPNET

FAMILIES: tuple[EncoderFamily, ...] = (BERT, DISTILBERT, MPNET, DEBERTA, MODERNBERT)
REGISTRY: dict[str, EncoderFamily] = {model_type: f for f in FAMILIES for model_type in f.model_types}


def family_for(model_type: str | None, where: str = "the model") -> EncoderFamily:
    """The family of a `config.model_type`, or a one-line refusal naming the known ones."""
    try:
        return REGISTRY[model_type]
    except KeyError:
        raise KdqatError(f"{where} is a {model_type!r} encoder; kdqat knows {', '.join(sorted(REGISTRY))}") from None


def family_of(model: nn.Module) -> EncoderFamily:
    return family_for(getattr(model.config, "model_type", None), type(model).__name__)
