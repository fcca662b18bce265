"""kdqat bench: the grid, the percentiles, the baseline in the same run, JSON and plot, clear errors."""

from __future__ import annotations

import json

import pytest

from kdqat import KdqatError
from kdqat.runtime.bench import BASELINE, BenchOptions, bench
from kdqat.runtime.timing import measure


def test_measure_reports_percentiles_of_the_timed_calls_only(monkeypatch):
    """Five timed calls of 1, 2, 3, 4 and 10 ms after two untimed ones: numpy's linear percentiles of those."""
    import kdqat.runtime.timing as timing

    ticks = iter([0.0, 0.001, 1.0, 1.002, 2.0, 2.003, 3.0, 3.004, 4.0, 4.010])
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(ticks))
    calls = []
    stats = measure(lambda b: calls.append(1), {"input_ids": [[1, 2]] * 4}, warmup=2, iterations=5)
    assert len(calls) == 7
    assert stats["p50_ms"] == pytest.approx(3.0)
    assert stats["p90_ms"] == pytest.approx(4 + 0.6 * 6)  # between the 4th (4 ms) and 5th (10 ms) call
    assert stats["p99_ms"] == pytest.approx(4 + 0.96 * 6)
    assert stats["mean_ms"] == pytest.approx(4.0)
    assert stats["sequences_per_s"] == pytest.approx(4 / 0.004)


def test_bench_grid_with_baseline_json_and_plot(exported_run):
    record = bench(BenchOptions(str(exported_run), engines=("ort", "torch"), batch_sizes=(1, 2), seq_lengths=(8, 16),
                                warmup=1, iterations=2, progress=False))
    engines = {r["engine"] for r in record["results"]}
    assert engines == {BASELINE, "student (ort)", "student (torch)"}
    assert len(record["results"]) == 3 * 2 * 2
    for r in record["results"]:  # each row against the teacher at the same shape
        base = next(x for x in record["results"] if x["engine"] == BASELINE and (x["batch"], x["seq"]) == (r["batch"], r["seq"]))
        assert r["speedup_vs_teacher"] == pytest.approx(base["p50_ms"] / r["p50_ms"])
    out = exported_run / "bench"
    assert record["files"] == [str(out / "bench.json"), str(out / "latency.png")]
    assert json.loads((out / "bench.json").read_text()) == {k: v for k, v in record.items() if k != "files"}
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("opts, message", [
    (dict(engines=("tvm",)), "--engine tvm"),
    (dict(batch_sizes=(0,)), "must be positive"),
    (dict(iterations=0), "--iterations"),
    (dict(seq_lengths=(4096,)), "exceeds the model's 128 positions"),
    (dict(engines=("ort",), static_shapes=((1, 8),)), "--static-shapes: only --engine openvino"),
    (dict(engines=("trt",)), "needs a CUDA GPU and TensorRT: .*(no CUDA GPU is visible|TensorRT is not installed)"),
])
def test_bench_bad_options_are_refused(exported_run, opts, message):
    with pytest.raises(KdqatError, match=message):
        bench(BenchOptions(str(exported_run), progress=False, **opts))
