"""Run a command as if this CPU had only an older instruction set: the libraries in it dispatch AVX2 kernels (or
AVX-VNNI or AVX-512 VNNI ones, without AMX) on this machine's cores, so that one machine can show what the dot-product features
are worth.

    kdqat isa-mask avx2 -- python benchmarks/peers.py RUN_DIR --output peers-avx2.json
    kdqat isa-mask avx2 --check     # what the libraries see, masked

The command runs with cpuid_mask.c (beside this module) preloaded (compiled here with the system's C compiler, into a cache
folder): every CPUID instruction the process runs (onnxruntime's MLAS, OpenVINO's and PyTorch's oneDNN and
cpuinfo) sees the extensions of the level cleared. It needs an x86-64 Linux with CPUID faulting (`cpuid_fault` in
/proc/cpuinfo; most Intel CPUs since Ivy Bridge, also under KVM); elsewhere it refuses in one line.

A process that takes SIGSEGV for itself takes the traps from the mask and dies at its next CPUID (Python's
faulthandler: a "Segmentation fault" traceback); PYTHONFAULTHANDLER is removed from the command's environment, and
`python -X faulthandler` must not be used under it.

What it is not: an older machine. Clocks, caches, memory and the core's other instructions are this machine's,
and glibc chose its string functions before the mask took effect. The figures measure kernel dispatch, and say
so: kdqat's cpu_info records the level (`cpuid_mask`) and the features the libraries were shown.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from kdqat.errors import KdqatError
from kdqat.runtime.cpu_info import MASKED_FEATURES

LEVELS = tuple(MASKED_FEATURES)  # the levels cpuid_mask.c knows, and the features each leaves
SOURCE = Path(__file__).with_name("cpuid_mask.c")
CHECK = """
from kdqat.runtime.cpu_info import cpu_info, describe
print("kdqat cpu_info:", describe(cpu_info()))
try:
    import torch
    print("PyTorch CPU capability:", torch.backends.cpu.get_cpu_capability())
except ImportError:
    print("PyTorch: not installed")
try:
    import openvino
    print("OpenVINO CPU optimization capabilities:", openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
except ImportError:
    print("OpenVINO: not installed")
"""


class MaskError(KdqatError):
    """The mask cannot be applied on this machine (one line)."""


class CommandNotFound(MaskError):
    """The command to run is not there (exit status 127, as a shell gives)."""


def can_fault_on_cpuid(cpuinfo: str | None = None) -> bool:
    """Whether this is x86-64 Linux whose kernel offers CPUID faulting."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return False
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.is_file() else ""
    return any(line.startswith("flags") and "cpuid_fault" in line.split() for line in cpuinfo.splitlines())


def build_library(cache: Path | None = None) -> Path:
    """The compiled mask library, rebuilt when cpuid_mask.c changes."""
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        raise MaskError(f"no C compiler (cc or gcc) to build {SOURCE}")
    source = SOURCE.read_bytes()
    cache = cache or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kdqat"
    library = cache / f"cpuid_mask-{hashlib.sha256(source).hexdigest()[:12]}.so"
    if library.is_file():
        return library
    cache.mkdir(parents=True, exist_ok=True)
    partial = library.with_suffix(f".{os.getpid()}.tmp")
    built = subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-o", str(partial), str(SOURCE)],
                           capture_output=True, text=True)
    if built.returncode != 0:
        partial.unlink(missing_ok=True)
        raise MaskError(f"{SOURCE.name} did not compile: {(built.stderr.strip().splitlines() or ['?'])[0]}")
    partial.replace(library)
    return library


def masked_environment(level: str, library: Path, env: dict | None = None) -> dict:
    """`env` (default: this process's) with the mask preloaded at `level`."""
    if level not in LEVELS:
        raise MaskError(f"level {level!r} is not one of {', '.join(LEVELS)}")
    out = dict(os.environ if env is None else env)
    out["LD_PRELOAD"] = " ".join(filter(None, [str(library), out.get("LD_PRELOAD", "")]))
    out["KDQAT_CPUID_MASK"] = level
    out.pop("PYTHONFAULTHANDLER", None)  # its SIGSEGV handler would take the CPUID traps
    return out


def run_masked(level: str, command: list[str], check: bool = False) -> int:
    """Run `command` (or, with `check`, a probe printing what the libraries see) under the mask at `level`; its exit
    status (a signal as a shell reports it, 128 + N), or 2 with one line when the mask cannot be applied here."""
    if not command and not check:
        raise MaskError("give the command after --, or --check")
    if not can_fault_on_cpuid():
        raise MaskError("this machine cannot mask CPUID: it needs x86-64 Linux with cpuid_fault in /proc/cpuinfo")
    env = masked_environment(level, build_library())
    if check:
        command = [sys.executable, "-c", CHECK]
    try:
        code = subprocess.run(command, env=env).returncode
    except FileNotFoundError:
        raise CommandNotFound(f"{command[0]}: no such command") from None
    return 128 - code if code < 0 else code  # a signal, as a shell reports it
