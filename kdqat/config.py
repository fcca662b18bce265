"""Quantization configuration: what is quantized, to how many bits, and how activation scales are found."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Literal

from kdqat.errors import KdqatError

WeightScheme = Literal["ternary", "uniform", "none"]
ActScale = Literal["static", "dynamic"]
WeightScale = Literal["tensor", "channel"]

# weight bits -> scheme; 2 bits is TWN ternary (one of three levels), never a 2-bit uniform grid.
SCHEME_FOR_BITS: dict[int, WeightScheme] = {2: "ternary", 4: "uniform", 8: "uniform", 32: "none"}


QUANT_CONFIG_FILE = "quant_config.json"  # a student folder's QuantConfig, beside its weights

@dataclass(frozen=True)
class QuantConfig:
    """How a student is quantized (Kim et al. 2022 / TernaryBERT settings by default).

    weight_scheme: "ternary" (TWN, 2 bits), "uniform" (symmetric, 4 or 8 bits) or "none" (float).
    act_bits: 8 (symmetric) or 32 (activations in float).
    act_scale: "static" learns a running max during QAT and freezes it for evaluation and export,
        which is what a deployed graph needs; "dynamic" recomputes the max per batch as the paper's code.
    weight_scale: one weight scale per Linear ("tensor", the paper's) or per output channel ("channel";
        TWN's threshold and scale are then taken over each output row). The word embeddings always have
        one per row.
    clip: weights and activations are clipped to [-clip, clip] before quantization.
    quantize_embeddings: ternarize the word-embedding matrix with one scale per row.
    ema_momentum: weight of the previous value in the running max (static scales).
    """

    weight_bits: int = 2
    weight_scheme: WeightScheme = "ternary"
    act_bits: int = 8
    act_scale: ActScale = "static"
    weight_scale: WeightScale = "tensor"
    clip: float = 2.5
    quantize_embeddings: bool = True
    ema_momentum: float = 0.9

    def __post_init__(self) -> None:
        expected = SCHEME_FOR_BITS.get(self.weight_bits)
        if expected is None:
            raise KdqatError(f"weight_bits={self.weight_bits} is not supported; use one of 2, 4, 8, 32")
        if self.weight_scheme != expected:
            raise KdqatError(
                f"weight_scheme={self.weight_scheme!r} does not fit weight_bits={self.weight_bits}; "
                f"use {expected!r} (or QuantConfig.for_bits({self.weight_bits}))"
            )
        if self.act_bits not in (8, 32):
            raise KdqatError(f"act_bits={self.act_bits} is not supported; use 8 or 32 (off)")
        if self.act_scale not in ("static", "dynamic"):
            raise KdqatError(f"act_scale={self.act_scale!r} is not supported; use 'static' or 'dynamic'")
        if self.weight_scale not in ("tensor", "channel"):
            raise KdqatError(f"weight_scale={self.weight_scale!r} is not supported; use 'tensor' or 'channel'")
        if not self.clip > 0:
            raise KdqatError(f"clip={self.clip} must be positive")
        if not 0.0 <= self.ema_momentum < 1.0:
            raise KdqatError(f"ema_momentum={self.ema_momentum} must be in [0, 1)")

    @classmethod
    def for_bits(cls, weight_bits: int = 2, act_bits: int = 8, **kwargs) -> QuantConfig:
        """Build a config from bit widths, picking the weight scheme that goes with them."""
        if weight_bits not in SCHEME_FOR_BITS:
            raise KdqatError(f"--weight-bits {weight_bits} is not supported; use one of 2, 4, 8, 32")
        return cls(weight_bits=weight_bits, weight_scheme=SCHEME_FOR_BITS[weight_bits], act_bits=act_bits, **kwargs)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "quantization config") -> QuantConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise KdqatError(f"{source}: unknown field(s) {', '.join(unknown)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)
