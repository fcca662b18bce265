"""Two data-parallel CPU processes (gloo) train the same student as one process with the same global batch."""

import os
import subprocess
import sys
from pathlib import Path

import torch
from conftest import tiny_config
from safetensors.torch import load_file
from transformers import AutoTokenizer, BertForSequenceClassification

SCRIPT = Path(__file__).with_name("ddp_train.py")


def run(cmd, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def test_two_gloo_processes_match_one(tmp_path, tiny_model_dir, glue_dir):
    # No dropout, so both runs see exactly the same computation; 8 rows = one global batch per step.
    teacher = tmp_path / "teacher"
    torch.manual_seed(0)
    cfg = tiny_config(vocab_size=30522, max_position_embeddings=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    BertForSequenceClassification(cfg).save_pretrained(teacher)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(teacher)
    args = [str(tiny_model_dir), str(teacher), str(glue_dir)]
    run([sys.executable, str(SCRIPT), *args, str(tmp_path / "one")], tmp_path)
    run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
         str(SCRIPT), *args, str(tmp_path / "two")], tmp_path)
    one = load_file(str(tmp_path / "one" / "student" / "model.safetensors"))
    two = load_file(str(tmp_path / "two" / "student" / "model.safetensors"))
    start = load_file(str(teacher / "model.safetensors"))
    assert any(not torch.equal(one[k], start[k]) for k in one)  # training moved the weights
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-6, msg=key)
    scales_one = load_file(str(tmp_path / "one" / "student" / "quant_scales.safetensors"))
    scales_two = load_file(str(tmp_path / "two" / "student" / "quant_scales.safetensors"))
    for key in scales_one:
        torch.testing.assert_close(scales_two[key], scales_one[key], msg=key)
