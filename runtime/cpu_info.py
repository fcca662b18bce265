"""What decides CPU inference speed of an INT8 graph: the processor and its integer dot-product features.

onnxruntime's integer GEMMs run on AVX2 everywhere, faster with AVX-512 VNNI (or AVX-VNNI) and fastest
with AMX; a speed-up measured on one of these says little about another, so every benchmark records them.
Under kdqat isa-mask (its CPUID mask loaded in the process) the libraries are shown fewer features than
/proc/cpuinfo lists; the record then names the mask and lists only the features left.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

# /proc/cpuinfo flag -> the name people know; in the order of increasing integer throughput
DOT_PRODUCT_FEATURES = {"avx2": "AVX2", "avx_vnni": "AVX-VNNI", "avx512_vnni": "AVX-512 VNNI", "amx_int8": "AMX-INT8"}
# kdqat isa-mask's levels -> the features its CPUID mask leaves visible
MASKED_FEATURES = {"avx2": ("AVX2",), "avx2_vnni": ("AVX2", "AVX-VNNI"), "avx512_vnni": ("AVX2", "AVX-512 VNNI")}


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
    cpuinfo = Path("/proc/cpuinfo")
    info = parse_cpuinfo(cpuinfo.read_text()) if cpuinfo.is_file() else {"model": None, "features": []}
    out = {"model": info["model"] or platform.processor() or "unknown", "arch": platform.machine(),
           "logical_cores": os.cpu_count(), "features": info["features"]}
    return masked(out, active_mask())


def active_mask() -> str | None:
    """kdqat isa-mask's level where its library is loaded in this process (it ends the process when it cannot
    mask, so loaded means masked); None otherwise, whatever KDQAT_CPUID_MASK says."""
    level, maps = os.environ.get("KDQAT_CPUID_MASK"), Path("/proc/self/maps")
    if not level or not maps.is_file():
        return None
    return level if "/cpuid_mask-" in maps.read_text() else None


def masked(info: dict, level: str | None) -> dict:
    """`info` as the libraries see it under kdqat isa-mask's CPUID mask `level` (None: unmasked)."""
    if not level:
        return info
    visible = MASKED_FEATURES.get(level, ())
    return {**info, "features": [f for f in info["features"] if f in visible], "cpuid_mask": level,
            "features_unmasked": info["features"]}


def openvino_caution(info: dict) -> str | None:
    """Why the OpenVINO engine is the slower choice for the student on this CPU (no VNNI of either width, no AMX:
    its INT8 layers run oneDNN's AVX2 GEMM, measured at half the peer's speed where onnxruntime's student matches
    it), or None. On x86 only: elsewhere nothing was measured."""
    if info.get("arch") not in ("x86_64", "AMD64") or "AVX2" not in info["features"]:
        return None
    if any(f in info["features"] for f in ("AVX-VNNI", "AVX-512 VNNI", "AMX-INT8")):
        return None
    return ("this CPU has AVX2 but no VNNI or AMX; with those kernels the student ran at 0.45-0.61x the speed of "
            "onnxruntime's int8 peer on OpenVINO and 0.98-1.16x on onnxruntime: use --engine ort (docs/results/cpu-speed.md, "
            "\"Without AMX\")")


def describe(info: dict) -> str:
    """One line, e.g. 'AMD EPYC (x86_64, 2 cores): AVX2, AVX-512 VNNI; no AMX-INT8'."""
    have = info["features"]
    missing = [name for name in DOT_PRODUCT_FEATURES.values() if name not in have and name != "AVX-VNNI"]
    text = f"{info['model']} ({info['arch']}, {info['logical_cores']} cores): {', '.join(have) or 'no AVX2'}"
    text += f"; no {', '.join(missing)}" if missing else ""
    if info.get("cpuid_mask"):
        text += f" (CPUID masked to {info['cpuid_mask']} by kdqat isa-mask; the CPU has {', '.join(info['features_unmasked'])})"
    return text
