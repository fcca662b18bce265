"""Bad input and interrupted work (issue 13): each case ends in one clear line, nothing is lost or half-written."""

from __future__ import annotations

import json
import os
import re
import stat

import pytest
import torch
from conftest import make_student_run, run_cli, train_options
from transformers import TrainerCallback

from kdqat.glue.data import load_split
from kdqat.glue.tasks import get_task
from kdqat import KdqatError, QuantConfig
from kdqat.train import train

RTE_HEADER = "index\tsentence1\tsentence2\tlabel\n"


def write(path, data: bytes | str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def options(tmp_path, tiny_model_dir, glue_dir, name="run", **overrides):
    """Shorter still than the training tests' runs: evaluation (and a checkpoint) after every step."""
    return train_options(tmp_path, tiny_model_dir, glue_dir, name, **{"max_train_samples": 16, "max_eval_samples": 8,
                                                                      "max_steps": 2, "eval_steps": 1, **overrides})


# -- 2. byte-order marks and encodings ------------------------------------------------------------------------

def test_a_byte_order_mark_before_the_header_is_accepted(tmp_path):
    write(tmp_path / "SST-2" / "train.tsv", "\ufeffsentence\tlabel\ngood film\t1\n".encode("utf-8"))
    assert load_split(get_task("sst2"), "train", tmp_path)[0] == {"text_a": "good film", "label": 1}
    write(tmp_path / "CoLA" / "train.tsv", "\ufeffsrc\t1\t\tA sentence.\n".encode("utf-8"))  # header-less
    assert load_split(get_task("cola"), "train", tmp_path)[0]["label"] == 1


def test_invalid_utf8_names_file_and_line(tmp_path):
    write(tmp_path / "RTE" / "dev.tsv", RTE_HEADER.encode() + b"0\ta\tb\tentailment\n1\tcaf\xe9\tb\tentailment\n")
    with pytest.raises(KdqatError, match=r"RTE/dev.tsv:3: not valid UTF-8 \(byte 0xe9\)"):
        load_split(get_task("rte"), "dev", tmp_path)


# -- 3. labels that are not finite or out of range; non-finite training ---------------------------------------

@pytest.mark.parametrize("score, message", [("nan", "is not a finite number"), ("inf", "is not a finite number"),
                                            ("5.5", "is outside 0-5"), ("-0.1", "is outside 0-5")])
def test_stsb_scores_must_be_finite_and_in_range(tmp_path, score, message):
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    write(tmp_path / "STS-B" / "dev.tsv", header + f"0\tg\tf\ty\t0\ts\ts\ta\tb\t1.0\n1\tg\tf\ty\t0\ts\ts\ta\tb\t{score}\n")
    with pytest.raises(KdqatError, match=rf"STS-B/dev.tsv:3: score '{score}' {message}"):
        load_split(get_task("stsb"), "dev", tmp_path)


def test_teacher_stage_stops_on_a_nonfinite_loss_and_saves_nothing(tmp_path, tiny_model_dir, glue_dir, monkeypatch):
    from transformers import Trainer

    real = Trainer.compute_loss
    calls = {"n": 0}

    def flaky(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = real(self, model, inputs, return_outputs, num_items_in_batch)
        if model.training:
            calls["n"] += 1
            if calls["n"] == 2:
                return result * float("nan")
        return result

    monkeypatch.setattr(Trainer, "compute_loss", flaky)
    with pytest.raises(KdqatError, match=r"training loss became nan at step 2; the last good checkpoint is .*checkpoint-1"):
        train(options(tmp_path, tiny_model_dir, glue_dir))
    assert not (tmp_path / "run" / "teacher").exists()


def test_a_teacher_with_nonfinite_weights_is_never_reused(tmp_path, tiny_model_dir, glue_dir):
    from transformers import BertForSequenceClassification

    teacher = BertForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2)
    with torch.no_grad():
        teacher.classifier.weight[0, 0] = float("nan")
    teacher.save_pretrained(tmp_path / "nan-teacher")
    with pytest.raises(KdqatError, match=r"teacher .*nan-teacher .*non-finite weights \(classifier.weight\)"):
        train(options(tmp_path, tiny_model_dir, glue_dir, teacher=str(tmp_path / "nan-teacher")))
    assert not (tmp_path / "run").exists()


def test_divergence_stops_before_its_checkpoint_is_written(tmp_path, tiny_model_dir, glue_dir):
    """11: the newest checkpoint after a divergence stop is one whose weights and dev loss were finite."""

    class Diverge(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step == 3:
                with torch.no_grad():
                    next(model.parameters()).fill_(float("inf"))

    with pytest.raises(KdqatError, match=r"diverged at step 3 .*the last good checkpoint is .*checkpoint-2"):
        train(options(tmp_path, tiny_model_dir, glue_dir, max_steps=4), callbacks=[Diverge()])
    checkpoints = sorted((tmp_path / "run" / "checkpoints" / "student").glob("checkpoint-*"))
    assert [c.name for c in checkpoints] == ["checkpoint-1", "checkpoint-2"]
    assert not (tmp_path / "run" / "student").exists()


# -- 4. a failed start writes nothing -------------------------------------------------------------------------

def test_a_failed_start_leaves_nothing_and_the_fix_runs(tmp_path, tiny_model_dir, glue_dir):
    with pytest.raises(KdqatError, match="--data-dir .*no such folder"):
        train(options(tmp_path, tiny_model_dir, tmp_path / "wrong"))
    assert not (tmp_path / "run").exists()
    train(options(tmp_path, tiny_model_dir, glue_dir, max_steps=1))  # not refused as "other settings"


# -- 5. every option checked up front ------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, message", [
    (dict(batch_size=0), "--batch-size 0: must be positive"),
    (dict(max_seq_length=1), "--max-seq-length 1: must be at least 8"),
    (dict(max_seq_length=4096), "--max-seq-length 4096: the model has 128 positions"),
    (dict(learning_rate=-1.0), "--learning-rate -1.0: must be a positive number"),
    (dict(teacher_learning_rate=float("nan")), "--teacher-learning-rate nan: must be a positive number"),
    (dict(max_steps=-1, epochs=0.0), "--epochs 0.0: must be positive"),
    (dict(eval_steps=0), "--eval-steps 0: must be positive"),
    (dict(max_train_samples=0), "--max-train-samples 0: must be positive"),
    (dict(seed=-3), "--seed -3: must be in"),
    (dict(model="/nonexistent"), "--model /nonexistent: no such folder"),
    (dict(teacher="/nonexistent"), "--teacher /nonexistent: no such folder"),
    (dict(init_student="missing"), "--init-student missing: no such folder"),
    (dict(optimizer="sgd"), "--optimizer 'sgd' is not one of bertadam, adamw"),
    (dict(keep="first"), "--keep 'first' is not one of best, last"),
])
def test_bad_options_name_the_option(tmp_path, tiny_model_dir, glue_dir, overrides, message):
    with pytest.raises(KdqatError, match=message.replace("(", r"\(").replace("+", r"\+")):
        train(options(tmp_path, tiny_model_dir, glue_dir, **overrides))
    assert not (tmp_path / "run").exists()


def test_a_read_only_output_folder_is_refused_up_front(tmp_path, tiny_model_dir, glue_dir, monkeypatch):
    (tmp_path / "ro").mkdir()
    os.chmod(tmp_path / "ro", 0o555)
    if os.geteuid() == 0:  # root may write anyway; what a read-only mount or another user would see:
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(tmp_path / "ro") else real(p, mode))
    with pytest.raises(KdqatError, match=r"--output-dir .*ro/run: .*ro is not writable"):
        train(options(tmp_path, tiny_model_dir, glue_dir, name="ro/run"))


@pytest.fixture
def read_only_mount(tmp_path):
    """An empty read-only mount point (a bind mount remounted read-only), as a container's volume can be."""
    import shutil
    import subprocess

    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) to make a read-only mount point")
    source, point = tmp_path / "src", tmp_path / "ro"
    source.mkdir()
    point.mkdir()
    if subprocess.run(["mount", "--bind", source, point], capture_output=True).returncode:
        pytest.skip("this machine does not allow bind mounts (no CAP_SYS_ADMIN)")
    try:
        if subprocess.run(["mount", "-o", "remount,ro,bind", point], capture_output=True).returncode:
            pytest.skip("this machine does not allow a read-only remount")
        yield point
    finally:
        subprocess.run(["umount", point], capture_output=True)


@pytest.mark.parametrize("option", ["--output-dir", "--triton"])
def test_a_read_only_mount_point_is_refused_before_the_export_works(exported_run, read_only_mount, option):
    """The mount point itself (not only a folder under it) is checked before the export does any work."""
    args = ["--output-dir", read_only_mount] if option == "--output-dir" else ["--no-onnx", "--triton", read_only_mount]
    done = run_cli("export", exported_run, *args, "--no-progress", cwd=read_only_mount.parent)
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {option} {read_only_mount}: {read_only_mount} is not writable; choose " \
                                  "another place or fix its permissions"
    assert done.stdout == ""  # refused before any work: no export table, no progress


# -- 8. one train per folder ---------------------------------------------------------------------------------

def test_a_second_train_into_a_busy_folder_is_refused(tmp_path, tiny_model_dir, glue_dir):
    from filelock import FileLock

    from kdqat.preflight import LOCK_FILE

    (tmp_path / "run").mkdir()
    with FileLock(str(tmp_path / "run" / LOCK_FILE)):  # another process's lock: flock is per open file
        with pytest.raises(KdqatError, match=r"run is in use by another kdqat train"):
            train(options(tmp_path, tiny_model_dir, glue_dir))
    assert not (tmp_path / "run" / "config.json").exists()


# -- 12. file modes and strict JSON --------------------------------------------------------------------------

def test_weights_follow_the_umask_and_logs_are_strict_json(tmp_path, tiny_model_dir, glue_dir, monkeypatch):
    old = os.umask(0o022)
    try:
        train(options(tmp_path, tiny_model_dir, glue_dir, max_steps=1, logging_steps=1))
    finally:
        os.umask(old)
    for folder in ("teacher", "student"):
        for f in (tmp_path / "run" / folder).iterdir():
            assert stat.S_IMODE(f.stat().st_mode) == 0o644, f
    from kdqat.stage_log import JsonlLog

    log = JsonlLog(tmp_path / "log.jsonl", "student")

    class State:
        is_world_process_zero, global_step, epoch = True, 3, 0.5

    log.on_log(None, State(), None, logs={"loss": float("nan"), "grad_norm": float("inf"), "lr": 1e-5})
    record = json.loads((tmp_path / "log.jsonl").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert record["loss"] is None and record["grad_norm"] is None and record["lr"] == 1e-5


# -- 6. damaged files ----------------------------------------------------------------------------------------

def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def interrupted_at_step_3(tmp_path, tiny_model_dir, glue_dir):
    """A run whose student stage was interrupted at step 3 (checkpoints 1 and 2 written); its options."""
    class Interrupt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3 and "student" in args.output_dir:
                raise KeyboardInterrupt

    opts = options(tmp_path, tiny_model_dir, glue_dir, max_steps=4, save_total_limit=3)
    with pytest.raises(KeyboardInterrupt):
        train(opts, callbacks=[Interrupt()])
    return opts


@pytest.mark.parametrize("damaged, message", [
    ("checkpoint-2/model.safetensors", r"checkpoint-2/model.safetensors: damaged or truncated .*delete .*checkpoint-2 to resume from .*checkpoint-1"),
    ("checkpoint-2/optimizer.pt", r"checkpoint-2/optimizer.pt: damaged or truncated .*delete .*checkpoint-2 to resume from .*checkpoint-1"),
])
def test_a_damaged_checkpoint_names_the_one_to_delete(tmp_path, tiny_model_dir, glue_dir, damaged, message):
    opts = interrupted_at_step_3(tmp_path, tiny_model_dir, glue_dir)
    truncate(tmp_path / "run" / "checkpoints" / "student" / damaged)
    with pytest.raises(KdqatError, match=message):
        train(opts)
    import shutil

    shutil.rmtree(tmp_path / "run" / "checkpoints" / "student" / "checkpoint-2")
    assert train(opts)["student"]["last"]["static"]["step"] == 4  # resumed from checkpoint-1


def test_a_checkpoint_cut_off_while_written_is_removed_and_the_run_resumes_from_the_last_whole_one(
        tmp_path, tiny_model_dir, glue_dir, caplog):
    """A kill -9 during a checkpoint write leaves a folder with no completion mark (and, here, a truncated
    optimizer.pt): the rerun removes it, says so, and resumes from the newest complete checkpoint by itself."""
    import shutil

    from kdqat.checkpoints import COMPLETE

    opts = interrupted_at_step_3(tmp_path, tiny_model_dir, glue_dir)
    stage = tmp_path / "run" / "checkpoints" / "student"
    assert all((stage / f"checkpoint-{n}" / COMPLETE).is_file() for n in (1, 2))
    shutil.copytree(stage / "checkpoint-2", stage / "checkpoint-3")  # checkpoint-3, as the kill left it
    (stage / "checkpoint-3" / COMPLETE).unlink()
    truncate(stage / "checkpoint-3" / "optimizer.pt")
    with caplog.at_level("WARNING", logger="kdqat.checkpoints"):
        assert train(opts)["student"]["last"]["static"]["step"] == 4
    assert f"{stage / 'checkpoint-3'} was cut off while it was written (no completion mark): removed it; resuming " \
           "from checkpoint-2" in caplog.text


def test_a_truncated_student_fails_export_with_one_line(tmp_path, tiny_model_dir):
    run = make_student_run(tmp_path / "run", tiny_model_dir, QuantConfig())
    truncate(run / "student" / "model.safetensors")
    done = run_cli("export", run, "--no-progress", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().startswith(f"error: {run / 'student' / 'model.safetensors'}: damaged or truncated")
    assert not (run / "onnx").exists()


# -- 7. user text printed literally; 9. an empty graph is no graph ------------------------------------------

def test_messages_are_not_parsed_as_markup(tmp_path):
    done = run_cli("train", "--task", "[/x]", "--output-dir", tmp_path / "out", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip() == "error: --task '[/x]' is not a GLUE task; use one of " \
        "cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli"
    done = run_cli("train", "--task", "rte", "--output-dir", tmp_path / "out", "--model", "/no/[bold]where", cwd=tmp_path)
    assert "--model /no/[bold]where: no such folder" in done.stderr


def test_check_refuses_an_empty_graph(tmp_path):
    (tmp_path / "empty.onnx").write_bytes(b"")
    done = run_cli("check", "empty.onnx", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip() == "error: empty.onnx: holds no graph nodes (empty or not an ONNX model)"


# -- 1. export never replaces what it did not write ------------------------------------------------------------

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_model_dir):
    run = make_student_run(tmp_path_factory.mktemp("finished") / "run", tiny_model_dir, QuantConfig())
    (run / "metrics.json").write_text("{}")
    return run


@pytest.mark.parametrize("target, message", [
    (".", "holds the run .* itself"),
    ("..", "holds the run .* itself"),
    ("student", "lies inside the run's .*student"),
    ("student/onnx", "lies inside the run's .*student"),
    ("config.json", "lies inside the run's .*config.json"),
    ("elsewhere", "exists and was not written by kdqat export"),
    ("link", "is a symbolic link"),
])
def test_export_refuses_targets_it_must_not_replace(finished_run, target, message):
    (finished_run / "elsewhere").mkdir(exist_ok=True)
    (finished_run / "elsewhere" / "notes.txt").write_text("mine")
    if not (finished_run / "link").is_symlink():
        (finished_run / "link").symlink_to(finished_run / "elsewhere")
    before = sorted(str(p.relative_to(finished_run)) for p in finished_run.rglob("*"))
    done = run_cli("export", finished_run, "--output-dir", finished_run / target, "--no-progress", cwd=finished_run)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: --output-dir") and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert re.search(message, done.stderr), done.stderr
    assert sorted(str(p.relative_to(finished_run)) for p in finished_run.rglob("*")) == before


def test_export_replaces_its_own_earlier_export(finished_run, tmp_path):
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("GLUE_DIR", raising=False)
        first = run_cli("export", finished_run, "--output-dir", tmp_path / "exp", "--samples", "8", "--no-progress", cwd=tmp_path)
        assert first.returncode == 0, first.stderr
        again = run_cli("export", finished_run, "--output-dir", tmp_path / "exp", "--samples", "8", "--no-progress", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "exp" / "export.json").is_file()


# -- 10. bench refuses shapes that do not fit in memory ------------------------------------------------------

def test_bench_estimates_memory_and_refuses_what_does_not_fit(tmp_path, tiny_model_dir):
    from transformers import BertConfig

    from kdqat.runtime.bench import BenchOptions, activation_bytes, check_memory

    config = BertConfig(hidden_size=384, num_attention_heads=12, intermediate_size=1536)
    # 4 maps of 32 x 12 x 128 x 128, 3 of 32 x 128 x 1536, 12 of 32 x 128 x 384 float32 values
    assert activation_bytes(config, 32, 128) == (4 * 32 * 12 * 128 * 128 + 3 * 32 * 128 * 1536 + 12 * 32 * 128 * 384) * 4
    check_memory(BenchOptions("run", batch_sizes=(1, 32)), config, available=8 * 2**30)
    with pytest.raises(KdqatError, match=r"--batch-sizes 100000 with --seq-lengths 128 needs about 732.4 GiB .* 8.0 GiB is available"):
        check_memory(BenchOptions("run", batch_sizes=(1, 100000)), config, available=8 * 2**30)
    run = make_student_run(tmp_path / "run", tiny_model_dir, QuantConfig())
    done = run_cli("bench", run, "--batch-sizes", "100000000", "--seq-lengths", "64", "--no-progress", cwd=tmp_path)
    assert done.returncode == 2 and "needs about" in done.stderr and "GiB is available" in done.stderr, done.stderr


def test_a_divergence_with_no_checkpoint_kept_says_what_to_do_in_one_sentence(tmp_path):
    from kdqat.guards import nonfinite_loss_error

    stage = tmp_path / "checkpoints" / "student"
    error = nonfinite_loss_error(torch.tensor(float("nan")), 1, str(stage))
    assert str(error) == (f"the training loss became nan at step 1; no checkpoint of this stage was kept: start the "
                          f"student stage over with a lower rate: remove {stage} and rerun with a lower --learning-rate")
