"""PyTorch as an engine: the fake-quant student (static scales) or the float teacher."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from kdqat.errors import KdqatError


class TorchEngine:
    def __init__(self, model: nn.Module, device: str = "cpu", name: str = "torch") -> None:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise KdqatError(f"--device {device}: PyTorch sees no CUDA device here")
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.name = name

    @classmethod
    def student(cls, path: str | Path, device: str = "cpu") -> TorchEngine:
        """A kdqat student in static-scale mode, the numbers the exported graph must reproduce."""
        from kdqat.student import load_student, set_act_scale_mode

        model = load_student(path, device)
        set_act_scale_mode(model, "static")
        return cls(model, device, "torch")

    @classmethod
    def teacher(cls, path: str | Path, device: str = "cpu") -> TorchEngine:
        """A float model: a classifier, or a sentence embedder (a sentence-transformers folder)."""
        from kdqat.model_folder import load_model_folder

        return cls(load_model_folder(path, "the teacher"), device, "torch-fp32")

    @torch.inference_mode()
    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        inputs = {k: torch.from_numpy(v).to(self.device) for k, v in batch.items()}
        return self.model(**inputs).logits.float().cpu().numpy()
