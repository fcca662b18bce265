"""The benchmarks' timing block (runtime.timing): the first call after the pause is timed apart and the warm-up
calls stay out of the steady figure; random inputs are seeded and full-length."""

from __future__ import annotations

import time

import numpy as np
import pytest

from kdqat.runtime.timing import random_batch, timed_block


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


def test_random_inputs_are_seeded_full_length_and_framed_by_the_special_ids():
    a, b = random_batch(2, 16, 5000, seed=3, special=(101, 102)), random_batch(2, 16, 5000, seed=3, special=(101, 102))
    np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
    assert a["input_ids"].shape == (2, 16) and (a["input_ids"][:, 0] == 101).all() and (a["input_ids"][:, -1] == 102).all()
    body = a["input_ids"][:, 1:-1]
    assert body.min() >= 1000 and body.max() < 5000  # above the special tokens, inside the vocabulary
    assert not np.array_equal(random_batch(2, 16, 5000, seed=4)["input_ids"], random_batch(2, 16, 5000, seed=3)["input_ids"])
    assert a["attention_mask"].all() and not a["token_type_ids"].any()
