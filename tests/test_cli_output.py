"""What a user sees: fast help, clean logs when redirected, which model is kept, where files went, the CPU."""

from __future__ import annotations

import subprocess
import sys

from conftest import make_student_run, run_cli

from kdqat import QuantConfig
from kdqat.runtime.cpu_info import describe, parse_cpuinfo

CPUINFO = """processor\t: 0
model name\t: AMD EPYC 9B14
flags\t\t: fpu sse2 avx avx2 avx512f avx512_vnni avx512_bf16
processor\t: 1
model name\t: AMD EPYC 9B14
flags\t\t: fpu sse2 avx avx2 avx512f avx512_vnni avx512_bf16
"""


def test_help_does_not_import_the_heavy_libraries(tmp_path):
    probe = "import sys, kdqat.cli; print(sorted(m for m in ('torch', 'transformers', 'onnx') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path)
    assert done.stdout.strip() == "[]", done.stderr
    help_text = run_cli("train", "--help", cwd=tmp_path).stdout
    assert "--optimizer" in help_text and "<bool>" not in help_text


def test_cpu_features_are_parsed_and_described():
    info = parse_cpuinfo(CPUINFO)
    assert info == {"model": "AMD EPYC 9B14", "features": ["AVX2", "AVX-512 VNNI"]}
    line = describe({**info, "arch": "x86_64", "logical_cores": 2})
    assert line == "AMD EPYC 9B14 (x86_64, 2 cores): AVX2, AVX-512 VNNI; no AMX-INT8"
    assert parse_cpuinfo("model name : Old\nflags : sse2 avx\n")["features"] == []


def test_train_log_names_stages_and_the_kept_student_without_escapes(tmp_path, tiny_model_dir, glue_dir):
    done = run_cli("train", "--task", "rte", "--output-dir", tmp_path / "run", "--model", tiny_model_dir,
                   "--data-dir", glue_dir, "--max-train-samples", "16", "--max-eval-samples", "8",
                   "--batch-size", "8", "--max-steps", "2", "--eval-steps", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "\x1b[" not in done.stderr and "\r" not in done.stderr  # redirected: no bars, no escape sequences
    lines = done.stderr.splitlines()
    assert any(line.startswith("teacher: fine-tuning") for line in lines)
    assert any(line.startswith(f"teacher: saved to {tmp_path / 'run' / 'teacher'} (the best dev evaluation, step")
               for line in lines)
    assert any(line.startswith("student: W2/A8 with map+output distillation on rte") for line in lines)
    assert any(line.startswith(f"student: saved to {tmp_path / 'run' / 'student'}") for line in lines)
    assert any(line.startswith("student step 2/2: ") for line in lines)  # plain log lines on stderr
    assert "(kept in student/)" in done.stdout and "{" not in done.stdout  # stdout: the result table only
    assert "accuracy" in done.stdout and "dev_accuracy" not in done.stdout  # named as kdqat eval names it
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_export_eval_and_bench_say_where_they_wrote(tmp_path, tiny_model_dir, glue_dir):
    run = make_student_run(tmp_path / "run", tiny_model_dir, QuantConfig())
    export = run_cli("export", run, "--samples", "8", "--data-dir", glue_dir, cwd=tmp_path)
    assert export.returncode == 0, export.stderr
    assert f"wrote {run / 'onnx'}/ (model.onnx, model.fp16.onnx, model.packed.onnx, model.float.onnx, export.json" in export.stdout
    evaluated = run_cli("eval", run, "--max-samples", "8", "--data-dir", glue_dir, cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"wrote {run / 'eval' / 'ort.json'}" in evaluated.stdout
    bench = run_cli("bench", run, "--batch-sizes", "1", "--seq-lengths", "8", "--iterations", "1", "--warmup", "0",
                    cwd=tmp_path)
    assert bench.returncode == 0, bench.stderr
    assert f"wrote {run / 'bench' / 'bench.json'}, {run / 'bench' / 'latency.png'}" in bench.stdout.replace("\n", "")
    cpu_lines = [line for line in bench.stdout.splitlines() if line.startswith("CPU: ")]
    assert len(cpu_lines) == 1 and cpu_lines[0].endswith("compare figures only between machines that share them.")


def test_redirected_stdout_gets_whole_lines_however_long(tmp_path):
    """A log or a pipe gets each line whole: no wrapping at any width, whatever the CPU's feature list adds."""
    from kdqat.runtime.cpu_info import DOT_PRODUCT_FEATURES

    info = {"model": "Intel(R) Xeon(R) Platinum 8480+ with a very long marketing name", "arch": "x86_64",
            "logical_cores": 224, "features": list(DOT_PRODUCT_FEATURES.values())}
    line = (f"CPU: {describe(info)}. " + "integer dot-product features " * 20).strip()
    probe = f"from kdqat.cli import stdout; stdout.print({line!r}); stdout.print('next')"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [line, "next"]
