"""The one interface every inference engine offers: a padded numpy batch in, logits out."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Engine(Protocol):
    """`run` takes int64 arrays named input_ids / attention_mask / token_type_ids, shape [batch, seq]."""

    name: str

    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray: ...
