"""The exported graph run by the ONNX specification's own reference implementation."""

from __future__ import annotations

import numpy as np
import onnx


def reference_logits(model: onnx.ModelProto, batch: dict[str, np.ndarray]) -> np.ndarray:
    """The graph run by onnx.reference, the specification's own (slow, independent) implementation."""
    from onnx.reference import ReferenceEvaluator

    names = [i.name for i in model.graph.input]
    return ReferenceEvaluator(model).run(None, {k: batch[k] for k in names})[0]
