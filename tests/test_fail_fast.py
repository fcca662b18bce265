"""Settings that say what they do, outputs checked before the work, one run per folder across train and export
(issue 30 items 6-8 and 10): each refusal is one line, before anything is written."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from conftest import make_student_run, run_cli, train_options

from kdqat import KdqatError, QuantConfig


def test_init_student_must_be_a_student_of_the_teachers_shape(tmp_path, tiny_model_dir, glue_dir):
    from transformers import BertConfig, BertForSequenceClassification

    from kdqat.train import train

    wide = tmp_path / "wide"
    BertForSequenceClassification(BertConfig(vocab_size=30522, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                                             intermediate_size=64, max_position_embeddings=128)).save_pretrained(wide)
    opts = train_options(tmp_path, tiny_model_dir, glue_dir, init_student=str(wide))
    with pytest.raises(KdqatError, match=r"--init-student .*wide: not a kdqat student \(no quant_config.json\)"):
        train(opts)
    student = make_student_run(tmp_path / "w-run", wide, QuantConfig()) / "student"
    opts = train_options(tmp_path, tiny_model_dir, glue_dir, init_student=str(student))
    with pytest.raises(KdqatError, match=r"is 2 layers x 48 wide.*--model .* is 2 layers x 32 wide.*teacher's shape"):
        train(opts)
    assert not (tmp_path / "run").exists()  # nothing written: the corrected rerun is not refused
    ok = make_student_run(tmp_path / "ok-run", tiny_model_dir, QuantConfig()) / "student"
    train(train_options(tmp_path, tiny_model_dir, glue_dir, init_student=str(ok), max_steps=1))


def test_max_steps_zero_is_refused(tmp_path, tiny_model_dir, glue_dir):
    from kdqat.train import train

    with pytest.raises(KdqatError, match=r"--max-steps 0: must be positive \(or -1"):
        train(train_options(tmp_path, tiny_model_dir, glue_dir, max_steps=0))


def test_a_finished_run_is_not_trained_again_and_a_moved_one_is_its_own(tmp_path, tiny_model_dir, glue_dir):
    from kdqat.train import train

    first = train(train_options(tmp_path, tiny_model_dir, glue_dir, max_steps=2))
    weights = (tmp_path / "run" / "student" / "model.safetensors").stat().st_mtime_ns
    again = train(train_options(tmp_path, tiny_model_dir, glue_dir, max_steps=2))
    assert again == json.loads(json.dumps(first)) and (tmp_path / "run" / "student" / "model.safetensors").stat().st_mtime_ns == weights
    shutil.move(tmp_path / "run", tmp_path / "moved")
    moved = train(train_options(tmp_path, tiny_model_dir, glue_dir, name="moved", max_steps=2))
    assert moved["student"]["last"] == first["student"]["last"]  # found complete, not refused as other settings


def test_config_from_an_unknown_kdqat_version_is_refused(tmp_path, tiny_model_dir, glue_dir):
    from kdqat.train import train

    opts = train_options(tmp_path, tiny_model_dir, glue_dir, max_steps=1)
    train(opts)
    config = tmp_path / "run" / "config.json"
    saved = json.loads(config.read_text())
    saved["options"]["quantum_mode"] = True
    config.write_text(json.dumps(saved))
    with pytest.raises(KdqatError, match=r"config.json: settings this kdqat \(0.1.0\) does not know \(options.quantum_mode\), written by kdqat 0.1.0"):
        train(opts)


def test_train_outputs_of_the_wrong_kind_are_refused_first(tmp_path, tiny_model_dir, glue_dir):
    from kdqat.train import train

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "logs").write_text("a file where the logs folder goes")
    run = tmp_path / "run"
    with pytest.raises(KdqatError, match=rf"^--output-dir {run}: {run / 'logs'} is a file where kdqat writes a folder; "
                                         "remove or rename it$"):
        train(train_options(tmp_path, tiny_model_dir, glue_dir))
    (tmp_path / "run" / "logs").unlink()
    (tmp_path / "run" / "metrics.json").mkdir()
    with pytest.raises(KdqatError, match=rf"^--output-dir {run}: {run / 'metrics.json'} is a folder where kdqat writes a "
                                         "file; remove or rename it$"):
        train(train_options(tmp_path, tiny_model_dir, glue_dir))
    assert sorted(os.listdir(tmp_path / "run")) == ["metrics.json"]


def test_bench_eval_and_report_outputs_that_are_files_or_folders(exported_run, tmp_path, glue_dir):
    (tmp_path / "file").write_text("x")
    done = run_cli("bench", exported_run, "--output-dir", tmp_path / "file", "--batch-sizes", "1", "--seq-lengths", "8",
                   "--iterations", "1", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.startswith(f"error: --output-dir {tmp_path / 'file'}: is a file")
    run = tmp_path / "run"
    shutil.copytree(exported_run, run)
    (run / "eval").write_text("a file where eval/ goes")
    done = run_cli("eval", run, "--max-samples", "4", "--data-dir", glue_dir, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.startswith(f"error: eval output {run / 'eval'}: is a file")
    (tmp_path / "curves").mkdir()
    done = run_cli("report", run, "--curves", tmp_path / "curves", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.startswith(f"error: --curves {tmp_path / 'curves'}: is a folder")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.json").write_text("{}")
    done = run_cli("report", tmp_path / "empty", cwd=tmp_path)
    assert done.returncode == 2 and "not a kdqat train metrics.json (no task, metric, teacher, student)" in done.stderr


def test_sweep_checks_every_task_first_and_an_empty_table_is_an_error(tmp_path):
    done = run_cli("sweep", "--output-dir", tmp_path / "s", "--tasks", "rte,foo", cwd=tmp_path)
    assert done.returncode == 2 and "--task 'foo' is not a GLUE task" in done.stderr and not (tmp_path / "s").exists()
    done = run_cli("sweep", "--output-dir", tmp_path / "s", "--tasks", "rte", "--table-only", cwd=tmp_path)
    assert done.returncode == 2 and "--table-only: no finished cell" in done.stderr


def test_export_is_refused_while_a_train_holds_the_run_lock(tmp_path, tiny_model_dir):
    from kdqat.export.pipeline import ExportOptions, export_student
    from kdqat.preflight import run_lock

    run = make_student_run(tmp_path / "run", tiny_model_dir, QuantConfig())
    with run_lock(run):  # what kdqat train holds while it runs
        with pytest.raises(KdqatError, match="in use by another kdqat train or export"):
            export_student(ExportOptions(str(run), samples=8, progress=False))
    assert not (run / "onnx").exists()


def test_exploding_weights_are_divergence_and_the_advice_works(tmp_path, tiny_model_dir, glue_dir):
    """A rate of 1e6 blows the weights up while they are still finite: the guard stops at the first evaluation
    after it (no exploded checkpoint is kept), and the message's way out - remove the stage's checkpoints, lower the
    rate - is accepted by the rerun."""
    from kdqat.train import train

    opts = train_options(tmp_path, tiny_model_dir, glue_dir, learning_rate=1e6, eval_steps=1, max_steps=3)
    with pytest.raises(KdqatError) as e:
        train(opts)
    message = str(e.value)
    checkpoints = tmp_path / "run" / "checkpoints" / "student"
    assert "reaches" in message or "became" in message
    assert f"remove {checkpoints} and rerun with a lower --learning-rate" in message
    from safetensors.torch import load_file

    from kdqat.guards import EXPLODED

    kept_checkpoints = list(checkpoints.glob("checkpoint-*"))
    assert kept_checkpoints  # the evaluations before the explosion were checkpointed
    for kept in kept_checkpoints:  # what is on disk is known good: nothing exploded is kept
        weights = [t for t in load_file(kept / "model.safetensors").values() if t.is_floating_point()]
        assert max(float(t.abs().max()) for t in weights) < EXPLODED
    shutil.rmtree(checkpoints)
    result = train(train_options(tmp_path, tiny_model_dir, glue_dir, learning_rate=1e-4, eval_steps=1, max_steps=3))
    assert result["student"]["last_step"] == 3


@pytest.mark.parametrize("change, message", [
    (lambda saved: saved.update(kdqat_version="9.9.9"),
     r"written by kdqat 9.9.9, which this kdqat \(0.1.0\) cannot vouch for"),
    (lambda saved: saved.update(calibration={"method": "percentile"}),
     r"settings this kdqat \(0.1.0\) does not know \(calibration\), written by "),
    (lambda saved: saved["options"].update(quantum_mode=True),
     r"settings this kdqat \(0.1.0\) does not know \(options.quantum_mode\)"),
])
def test_every_command_refuses_a_run_another_kdqat_wrote(exported_run, tmp_path, glue_dir, change, message):
    """One rule in train, export, eval, bench, serve and report: a newer kdqat's run, or keys this kdqat does not
    know, are refused in one line naming the version and the keys (before, train called such a run complete and
    export read it without a word)."""
    import re
    import shutil

    run = tmp_path / "run"
    shutil.copytree(exported_run, run)
    config = run / "config.json"
    saved = json.loads(config.read_text())
    change(saved)
    config.write_text(json.dumps(saved))
    options = saved["options"]
    commands = {"train": ["train", "--task", options["task"], "--output-dir", run, "--data-dir", glue_dir],
                "export": ["export", run, "--output-dir", tmp_path / "exp"], "eval": ["eval", run, "--max-samples", "4"],
                "bench": ["bench", run, "--iterations", "1"], "serve": ["serve", run, "--port", "1"],
                "report": ["report", run]}
    for name, args in commands.items():
        done = run_cli(*args, cwd=tmp_path)
        assert done.returncode == 2, (name, done.stderr)
        assert re.match(rf"error: {re.escape(str(config))}: .*{message}", done.stderr.strip()), (name, done.stderr)
        assert done.stderr.count("\n") == 1, name
    assert not (tmp_path / "exp").exists()
