"""What decides CPU inference speed of an INT8 graph: the processor and its integer dot-product features.

onnxruntime's integer GEMMs run on AVX2 everywhere, faster with AVX-512 VNNI (or AVX-VNNI) and fastest
with AMX; a speed-up measured on one of these says little about another, so every benchmark records them.
"""

from __future__ import annotations

import platform
from pathlib import Path

# /proc/cpuinfo flag -> the name people know; in the order of increasing integer throughput
DOT_PRODUCT_FEATURES = {"avx2": "AVX2", "avx_vnni": "AVX-VNNI", "avx512_vnni": "AVX-512 VNNI", "amx_int8": "AMX-INT8"}


def parse_cpuinfo(text: str) -> dict:
    """The model name and the integer dot-product features listed in a /proc/cpuinfo text."""
    model, flags = None, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return {"model": model, "features": [name for flag, name in DOT_PRODUCT_FEATURES.items() if flag in flags]}


def cpu_info() -> dict:
    """This machine's processor (model, architecture, logical cores) and its dot-product features."""
    import os

    cpuinfo = Path("/proc/cpuinfo")
    info = parse_cpuinfo(cpuinfo.read_text()) if cpuinfo.is_file() else {"model": None, "features": []}
    return {"model": info["model"] or platform.processor() or "unknown", "arch": platform.machine(),
            "logical_cores": os.cpu_count(), "features": info["features"]}


def describe(info: dict) -> str:
    """One line, e.g. 'AMD EPYC (x86_64, 2 cores): AVX2, AVX-512 VNNI; no AMX-INT8'."""
    have = info["features"]
    missing = [name for name in DOT_PRODUCT_FEATURES.values() if name not in have and name != "AVX-VNNI"]
    text = f"{info['model']} ({info['arch']}, {info['logical_cores']} cores): {', '.join(have) or 'no AVX2'}"
    return text + (f"; no {', '.join(missing)}" if missing else "")
