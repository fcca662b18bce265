"""kdqat isa-mask: a command run with CPUID masked sees only the level's instruction-set extensions, in
every thread; real faults still crash; a bad level is refused; kdqat's cpu_info says the mask was on."""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, run_cli
from kdqat.runtime.cpu_info import cpu_info, describe, masked, openvino_caution
from kdqat.runtime.isa_mask import MaskError, build_library, can_fault_on_cpuid, masked_environment, run_masked

sys.path.insert(0, str(REPO / "benchmarks"))

needs_cpuid_faulting = pytest.mark.skipif(
    not can_fault_on_cpuid() or not (shutil.which("cc") or shutil.which("gcc")),
    reason="needs x86-64 Linux with CPUID faulting (cpuid_fault in /proc/cpuinfo) and a C compiler")

# CPUID leaf 7 bits, read in the main thread and in a second one: AVX2, AVX512F, AVX512_VNNI, AMX-INT8, AVX-VNNI
PROBE = r"""
#include <cpuid.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
static void *probe(void *name) {
    unsigned a, b, c, d, a1, b1, c1, d1;
    __cpuid_count(7, 0, a, b, c, d);
    __cpuid_count(7, 1, a1, b1, c1, d1);
    printf("%s %u %u %u %u %u\n", (char *)name, (b >> 5) & 1, (b >> 16) & 1, (c >> 11) & 1, (d >> 25) & 1, (a1 >> 4) & 1);
    return 0;
}
int main(int argc, char **argv) {
    pthread_t t;
    fflush(stdout);
    pthread_create(&t, 0, probe, "thread");
    pthread_join(t, 0);
    probe("main");
    fflush(stdout);
    if (argc > 1) *(volatile int *)0 = 1;  /* a real segmentation fault */
    return 0;
}
"""


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("probe")
    (folder / "probe.c").write_text(PROBE)
    compiler = shutil.which("cc") or shutil.which("gcc")
    subprocess.run([compiler, "-pthread", "-o", str(folder / "probe"), str(folder / "probe.c")], check=True)
    return folder / "probe"


def bits(probe: Path, env: dict | None = None, *args: str) -> dict[str, list[int]]:
    out = subprocess.run([str(probe), *args], env=env, capture_output=True, text=True)
    return {line.split()[0]: [int(x) for x in line.split()[1:]] for line in out.stdout.splitlines()}


@needs_cpuid_faulting
def test_the_avx2_level_hides_avx512_vnni_and_amx_in_every_thread(probe, tmp_path):
    library = build_library(tmp_path)
    real = bits(probe)["main"]
    seen = bits(probe, masked_environment("avx2", library))
    assert seen == {"main": [real[0], 0, 0, 0, 0], "thread": [real[0], 0, 0, 0, 0]}  # AVX2 as it is, the rest hidden


@needs_cpuid_faulting
def test_the_avx512_vnni_level_keeps_avx512_and_hides_amx_and_avx_vnni(probe, tmp_path):
    real = bits(probe)["main"]
    seen = bits(probe, masked_environment("avx512_vnni", build_library(tmp_path)))
    assert seen["main"] == seen["thread"] == [real[0], real[1], real[2], 0, 0]


@needs_cpuid_faulting
def test_the_avx2_vnni_level_keeps_only_avx2_and_avx_vnni(probe, tmp_path):
    real = bits(probe)["main"]
    seen = bits(probe, masked_environment("avx2_vnni", build_library(tmp_path)))
    assert seen["main"] == seen["thread"] == [real[0], 0, 0, 0, real[4]]


@needs_cpuid_faulting
def test_a_real_segmentation_fault_still_crashes_under_the_mask(probe, tmp_path):
    run = subprocess.run([str(probe), "crash"], env=masked_environment("avx2", build_library(tmp_path)),
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == -11  # SIGSEGV, not a hang in the handler
    assert [line.split()[2:] for line in run.stdout.splitlines()] == [["0", "0", "0", "0"]] * 2  # masked until then


@needs_cpuid_faulting
def test_the_library_refuses_a_level_it_does_not_know(probe, tmp_path):
    env = {**masked_environment("avx2", build_library(tmp_path)), "KDQAT_CPUID_MASK": "sse2"}
    run = subprocess.run([str(probe)], env=env, capture_output=True, text=True)
    assert run.returncode == 2 and "KDQAT_CPUID_MASK must be avx2, avx2_vnni or avx512_vnni" in run.stderr
    assert run.stdout == ""  # nothing ran unmasked


@needs_cpuid_faulting
def test_kdqat_cpu_info_names_the_mask_in_a_masked_process(tmp_path):
    code = "from kdqat.runtime.cpu_info import cpu_info; i = cpu_info(); print(i['cpuid_mask'], i['features'])"
    run = subprocess.run([sys.executable, "-c", code], env=masked_environment("avx2", build_library(tmp_path)),
                         capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "avx2 ['AVX2']"


def test_the_mask_variable_alone_claims_no_mask(monkeypatch):
    monkeypatch.setenv("KDQAT_CPUID_MASK", "avx2")  # without the library loaded, nothing is masked
    assert "cpuid_mask" not in cpu_info()


def test_masked_cpu_info_lists_only_what_the_level_leaves():
    info = {"model": "Xeon", "arch": "x86_64", "logical_cores": 2,
            "features": ["AVX2", "AVX-VNNI", "AVX-512 VNNI", "AMX-INT8"]}
    assert masked(info, None) is info
    avx2 = masked(info, "avx2")
    assert avx2["features"] == ["AVX2"] and avx2["features_unmasked"] == info["features"]
    assert masked(info, "avx2_vnni")["features"] == ["AVX2", "AVX-VNNI"]
    assert masked(info, "avx512_vnni")["features"] == ["AVX2", "AVX-512 VNNI"]
    assert describe(avx2) == ("Xeon (x86_64, 2 cores): AVX2; no AVX-512 VNNI, AMX-INT8 (CPUID masked to avx2 by "
                              "kdqat isa-mask; the CPU has AVX2, AVX-VNNI, AVX-512 VNNI, AMX-INT8)")


@pytest.mark.parametrize("features, arch, cautioned", [
    (["AVX2"], "x86_64", True),  # measured: OpenVINO's INT8 at 0.45-0.61x the peer
    (["AVX2", "AVX-VNNI"], "x86_64", False),  # measured: 0.96-1.29x
    (["AVX2", "AVX-512 VNNI"], "x86_64", False),
    (["AVX2", "AVX-VNNI", "AVX-512 VNNI", "AMX-INT8"], "x86_64", False),
    ([], "x86_64", False),  # no AVX2: not measured
    ([], "aarch64", False),
])
def test_openvino_is_cautioned_against_only_where_it_was_measured_slower(features, arch, cautioned):
    caution = openvino_caution({"model": "cpu", "arch": arch, "logical_cores": 2, "features": features})
    assert (caution is not None) == cautioned
    if cautioned:
        assert "--engine ort" in caution and "0.45-0.61x" in caution


def test_a_machine_without_cpuid_faulting_is_refused_in_one_line(monkeypatch, capsys):
    assert not can_fault_on_cpuid("processor : 0\nflags : fpu sse2 avx2\n")
    x86_linux = platform.machine() == "x86_64" and platform.system() == "Linux"
    assert can_fault_on_cpuid("processor : 0\nflags : fpu avx2 cpuid_fault\n") == x86_linux
    monkeypatch.setattr("kdqat.runtime.isa_mask.can_fault_on_cpuid", lambda: False)
    with pytest.raises(MaskError) as e:
        run_masked("avx2", ["true"])
    assert str(e.value) == "this machine cannot mask CPUID: it needs x86-64 Linux with cpuid_fault in /proc/cpuinfo"


@needs_cpuid_faulting
def test_the_command_runs_masked_and_its_exit_status_comes_back(tmp_path):
    done = run_cli("isa-mask", "avx2", "--", sys.executable, "-c", "import sys; from kdqat.runtime.cpu_info import cpu_info; "
                   "sys.exit(3 if cpu_info().get('cpuid_mask') == 'avx2' else 1)", cwd=tmp_path)
    assert done.returncode == 3
    missing = run_cli("isa-mask", "avx2", "--", "no-such-command-kdqat", cwd=tmp_path)
    assert missing.returncode == 127 and missing.stderr.strip() == "error: no-such-command-kdqat: no such command"


def test_the_masked_environment_keeps_python_s_faulthandler_off():
    env = masked_environment("avx2", Path("/cache/cpuid_mask.so"), {"PYTHONFAULTHANDLER": "1", "LD_PRELOAD": "other.so"})
    assert env == {"LD_PRELOAD": "/cache/cpuid_mask.so other.so", "KDQAT_CPUID_MASK": "avx2"}


def test_an_unknown_level_is_refused():
    with pytest.raises(MaskError, match="level 'sse2' is not one of avx2, avx2_vnni, avx512_vnni"):
        masked_environment("sse2", Path("mask.so"))
    with pytest.raises(MaskError, match="give the command after --, or --check"):
        run_masked("avx2", [])


def test_isa_levels_names_each_record_by_its_level_and_gives_ranges_over_runs():
    from isa_levels import collect, level_of, table

    def record(cpu: str, ratio: float, accuracy: float) -> dict:
        return {"cpu": cpu, "latency_ms": [{"batch": 1, "seq": 32, "student_vs_peer": ratio}],
                "dev": {"scores": {"kdqat W2/A8 student (onnxruntime)": {"accuracy": accuracy}}}}

    masked_cpu = "Xeon (x86_64, 2 cores): AVX2; no AVX-512 VNNI, AMX-INT8 (CPUID masked to avx2 by kdqat isa-mask; ...)"
    amx_cpu = "Xeon (x86_64, 2 cores): AVX2, AVX-VNNI, AVX-512 VNNI, AMX-INT8"
    vnni_cpu = "EPYC (x86_64, 2 cores): AVX2, AVX-512 VNNI; no AMX-INT8"  # the missing AMX is not the CPU's
    assert [level_of({"cpu": c}) for c in (masked_cpu, amx_cpu, vnni_cpu)] == ["avx2", "AMX-INT8", "avx512_vnni"]
    levels = collect([record(amx_cpu, 1.2, 94.4), record(masked_cpu, 0.98, 94.4), record(masked_cpu, 1.06, 94.5)])
    assert list(levels) == ["avx2", "AMX-INT8"]  # in the order of increasing throughput
    text = table(levels, ["1x32"])
    assert "| AVX2 (no VNNI) (2) | onnxruntime student vs peer | 0.98-1.06x |" in text
    assert "| AMX-INT8 (unmasked) (1) | onnxruntime student vs peer | 1.20x |" in text
    assert "| AVX2 (no VNNI) |  | 94.40-94.50 |  |" in text  # the peer and OpenVINO not in these records
