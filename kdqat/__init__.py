"""kdqat: ternary-weight / 8-bit-activation QAT with knowledge distillation for BERT-style encoders.

The model functions are imported on first use, so that `import kdqat` (and `kdqat --help`) does not
pay for torch and transformers.
"""

from importlib import import_module

from kdqat.config import QuantConfig
from kdqat.errors import KdqatError

_LAZY = {"load_student": "kdqat.student", "prepare": "kdqat.student", "save_student": "kdqat.student"}

__all__ = ["KdqatError", "QuantConfig", "load_student", "prepare", "save_student"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kdqat' has no attribute {name!r}")
