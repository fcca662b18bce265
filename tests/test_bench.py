"""kdqat bench: the grid, the percentiles, the baseline in the same run, JSON and plot, clear errors."""

from __future__ import annotations

import json

import pytest
from conftest import make_student_run

from export.pipeline import ExportOptions, export_student
from kdqat import KdqatError, QuantConfig
from runtime.bench import BASELINE, BenchOptions, bench, measure

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def exported_run(tmp_path_factory, tiny_model_dir):
    run = make_student_run(tmp_path_factory.mktemp("run"), tiny_model_dir, QuantConfig())
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("GLUE_DIR", raising=False)
        export_student(ExportOptions(str(run), samples=8, progress=False))
    return run


def test_measure_reports_ordered_percentiles():
    calls = []
    stats = measure(lambda b: calls.append(1), {"input_ids": [[1, 2]] * 4}, warmup=2, iterations=5)
    assert len(calls) == 7
    assert stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"]
    assert stats["sequences_per_s"] > 0


def test_bench_grid_with_baseline_json_and_plot(exported_run):
    record = bench(BenchOptions(str(exported_run), engines=("ort", "torch"), batch_sizes=(1, 2), seq_lengths=(8, 16),
                                warmup=1, iterations=2, progress=False))
    engines = {r["engine"] for r in record["results"]}
    assert engines == {BASELINE, "student (ort)", "student (torch, fake-quant)"}
    assert len(record["results"]) == 3 * 2 * 2
    assert all(r["speedup_vs_teacher"] == 1.0 for r in record["results"] if r["engine"] == BASELINE)
    out = exported_run / "bench"
    assert record["files"] == [str(out / "bench.json"), str(out / "latency.png")]
    assert json.loads((out / "bench.json").read_text()) == {k: v for k, v in record.items() if k != "files"}
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("opts, message", [
    (dict(engines=("tvm",)), "--engine tvm"),
    (dict(batch_sizes=(0,)), "must be positive"),
    (dict(iterations=0), "--iterations"),
    (dict(seq_lengths=(4096,)), "exceeds the model's 128 positions"),
    (dict(engines=("trt",)), "needs a CUDA GPU and TensorRT: .*(no CUDA GPU is visible|TensorRT is not installed)"),
])
def test_bench_bad_options_are_refused(exported_run, opts, message):
    with pytest.raises(KdqatError, match=message):
        bench(BenchOptions(str(exported_run), progress=False, **opts))
