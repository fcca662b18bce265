"""kdqat: ternary-weight / 8-bit-activation QAT with knowledge distillation for BERT-style encoders."""

from kdqat.config import QuantConfig
from kdqat.errors import KdqatError
from kdqat.prepare import load_student, prepare, save_student

__all__ = ["KdqatError", "QuantConfig", "load_student", "prepare", "save_student"]
__version__ = "0.1.0"
