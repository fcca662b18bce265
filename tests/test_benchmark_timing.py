"""The benchmarks' timing block (benchmarks/peers.py): the first call after the pause is timed apart and the
warm-up calls stay out of the steady figure."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from peers import timed_block  # noqa: E402


def test_a_block_times_its_first_call_apart_and_leaves_the_warm_up_out():
    calls = []

    def run(inputs):  # a cold first call, then 2 ms calls
        calls.append(inputs)
        time.sleep(0.1 if len(calls) == 1 else 0.002)

    block = timed_block(run, {"x": 1}, iterations=4, warmup=3)
    assert len(calls) == 7  # 3 warm-up calls (the first among them) + 4 timed
    assert block.first_ms >= 30
    assert 2 <= block.steady_ms < 15  # the cold call among the 4 timed ones would make the mean over 26 ms


def test_a_block_refuses_no_warm_up():
    with pytest.raises(ValueError, match="warmup"):
        timed_block(lambda inputs: None, {}, iterations=1, warmup=0)
