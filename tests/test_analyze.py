"""kdqat analyze: the per-position ranges against a direct computation, distances, the plot and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_student_run, tiny_classifier

from kdqat.eval.analyze import attention_ranges, distance
from kdqat import QuantConfig
from kdqat.attention import use_kdqat_attention
from kdqat.capture import capture

FEATURES = {"input_ids": [[2, 5, 9, 3], [2, 7, 3]]}


def test_ranges_match_a_direct_computation():
    model = tiny_classifier()
    r = attention_ranges(model, FEATURES, layer=1)
    use_kdqat_attention(model)
    with torch.no_grad(), capture(model) as internals:  # the second example alone: no padding at all
        model(input_ids=torch.tensor([FEATURES["input_ids"][1]]))
    probs, out = internals.probs[1][0], internals.attn_outputs[1][0]
    single = attention_ranges(tiny_classifier(), {"input_ids": [FEATURES["input_ids"][1]]}, layer=1)
    np.testing.assert_allclose(single["map_min"], probs.amin(dim=(0, 2)).numpy(), rtol=1e-5)
    np.testing.assert_allclose(single["output_max"], out.amax(-1).numpy(), rtol=1e-5)
    assert r["count"].tolist() == [2, 2, 2, 1]  # position 3 exists in one example only
    first = attention_ranges(tiny_classifier(), {"input_ids": [FEATURES["input_ids"][0]]}, layer=1)  # alone too
    # per position, the mean over the examples that have it (padding left out): position 3 is the first example's only
    for key in ("map_min", "map_max", "output_min", "output_max"):
        np.testing.assert_allclose(r[key][:3], (first[key][:3] + single[key][:3]) / 2, rtol=1e-5, err_msg=key)
        np.testing.assert_allclose(r[key][3], first[key][3], rtol=1e-5, err_msg=key)


def test_distance_to_itself_is_zero_and_wider_ranges_show():
    r = attention_ranges(tiny_classifier(), FEATURES, layer=0)
    same = distance(r, r, min_count=1)
    assert same["map_range_gap"] == 0 and same["output_width_ratio"] == pytest.approx(1.0)
    wider = {k: (v * 2 if k.startswith("output") else v) for k, v in r.items()}
    d = distance(wider, r, min_count=1)
    assert d["output_width_ratio"] == pytest.approx(2.0) and d["output_range_gap"] > 0 and d["map_range_gap"] == 0


def test_bad_layer_is_refused():
    from kdqat import KdqatError

    with pytest.raises(KdqatError, match="--layer 7: the model has layers 0..1"):
        attention_ranges(tiny_classifier(), FEATURES, layer=7)


def test_analyze_command_writes_plot_and_summary(tmp_path, tiny_model_dir, glue_dir):
    import json

    from conftest import run_cli
    from transformers import BertForSequenceClassification

    run = make_student_run(tmp_path / "run", tiny_model_dir, QuantConfig())
    BertForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2).save_pretrained(run / "teacher")
    done = run_cli("analyze", run, "--layer", "1", "--samples", "12", "--data-dir", glue_dir,
                   "--output-dir", tmp_path / "a", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "a" / "sa_prop_layer1.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((tmp_path / "a" / "analysis_layer1.json").read_text())["summary"]
    assert list(summary) == ["run"] and summary["run"]["map_range_gap"] > 0  # the quantized student's ranges differ from the teacher's
