"""Runtime: batching, the engines behind one interface, clear errors for what is not installed."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest

from kdqat import KdqatError
from kdqat.runtime.batching import Bucket, batches, groups, pad_batch, predict



def features():
    return {"input_ids": [[101, 7, 102], [101, 5, 6, 7, 8, 102], [101, 102]],
            "token_type_ids": [[0, 0, 0], [0, 0, 0, 1, 1, 1], [0, 0]],
            "attention_mask": [[1, 1, 1], [1] * 6, [1, 1]]}


def test_pad_batch_pads_to_the_longest_with_zeros():
    b = pad_batch(features(), [0, 2])
    np.testing.assert_array_equal(b["input_ids"], [[101, 7, 102], [101, 102, 0]])
    np.testing.assert_array_equal(b["attention_mask"], [[1, 1, 1], [1, 1, 0]])
    assert all(v.dtype == np.int64 for v in b.values())


def test_missing_mask_and_token_types_are_filled():
    b = pad_batch({"input_ids": [[1, 2], [3]]}, [0, 1])
    np.testing.assert_array_equal(b["attention_mask"], [[1, 1], [1, 0]])
    np.testing.assert_array_equal(b["token_type_ids"], [[0, 0], [0, 0]])


def test_batches_go_longest_first_and_predict_restores_the_order():
    assert [list(rows) for rows, _ in batches(features(), 2)] == [[1, 0], [2]]
    # a fake engine whose logit is the number of real tokens: the output must follow the input order
    logits = predict(lambda b: b["attention_mask"].sum(1, keepdims=True).astype(np.float32), features(), 2)
    np.testing.assert_array_equal(logits[:, 0], [3, 6, 2])


def test_length_buckets_never_pad_an_input_far_below_its_batch_longest():
    lengths = [10, 100, 80, 20, 76, 9, 30]
    # plain: longest first, three at a time, whatever the lengths
    assert [list(g) for g in groups(lengths, 3)] == [[1, 2, 4], [6, 3, 0], [5]]
    # bucketed: 80 and 76 are within a quarter of 100; 20 is more than 8 tokens and a quarter below 30
    assert [list(g) for g in groups(lengths, 3, Bucket())] == [[1, 2, 4], [6], [3], [0, 5]]
    assert Bucket().fits(100, 75) and not Bucket().fits(100, 74)  # 25% of the longest
    assert Bucket().fits(12, 4) and not Bucket().fits(12, 3)  # or 8 tokens, whichever is more
    logits = predict(lambda b: b["attention_mask"].sum(1, keepdims=True).astype(np.float32), features(), 2, bucket=Bucket(0.0, 0))
    np.testing.assert_array_equal(logits[:, 0], [3, 6, 2])  # every length its own batch, the order restored


def test_ort_engine_errors_are_one_clear_line(tmp_path):
    from kdqat.runtime.ort_engine import OrtEngine

    with pytest.raises(KdqatError, match="no such ONNX file"):
        OrtEngine(tmp_path / "missing.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"\x00not a model")
    with pytest.raises(KdqatError, match="not a readable ONNX model"):
        OrtEngine(tmp_path / "bad.onnx")
    with pytest.raises(KdqatError, match="--provider 'tpu'"):
        OrtEngine(tmp_path / "bad.onnx", provider="tpu")
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(KdqatError, match="CUDAExecutionProvider is not available here"):
            OrtEngine(tmp_path / "bad.onnx", provider="cuda")


def test_torch_engine_refuses_cuda_without_a_gpu():
    import torch

    from kdqat.runtime.torch_engine import TorchEngine

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(KdqatError, match="no CUDA device"):
        TorchEngine(torch.nn.Linear(2, 2), device="cuda")
