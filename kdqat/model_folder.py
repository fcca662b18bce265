"""A float model folder as kdqat and transformers save it, loaded as what it is."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from kdqat.errors import KdqatError, first_line


def load_model_folder(path: str | Path, what: str = "the model weights") -> nn.Module:
    """A float model folder as it was saved: a sentence embedder (sentence-transformers layout: modules.json) or a
    sequence classifier; a folder that does not load is refused naming `what`."""
    from transformers import AutoModelForSequenceClassification

    from kdqat.embedding import SentenceEmbedder, is_embedding_folder

    if is_embedding_folder(path):
        return SentenceEmbedder.from_pretrained(path)
    try:
        return AutoModelForSequenceClassification.from_pretrained(str(path))
    except (OSError, ValueError) as e:
        raise KdqatError(f"{path}: cannot load {what} ({first_line(e)})") from None
