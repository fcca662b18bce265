"""End-to-end training on a tiny BERT and real GLUE rows: outputs, resume, NaN stop, bad teachers."""

import json

import pytest
import torch
from conftest import make_student_run, tiny_config, train_options
from safetensors.torch import load_file
from transformers import TrainerCallback

import kdqat.losses
from kdqat import KdqatError, QuantConfig, load_student
from kdqat.train import train


options = train_options


def weights(folder):
    return load_file(str(folder / "model.safetensors"))


def test_train_writes_teacher_student_metrics_config_and_log(tmp_path, tiny_model_dir, glue_dir):
    result = train(options(tmp_path, tiny_model_dir, glue_dir))
    out = tmp_path / "run"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(result))
    assert metrics["metric"] == "dev_accuracy"
    assert set(metrics["student"]["last"]) == {"static", "dynamic"}
    assert [r["step"] for r in metrics["student"]["history"]] == [2, 4]
    assert metrics["student"]["best"]["step"] in (2, 4)
    assert json.loads((out / "config.json").read_text())["options"]["loss_weights"] == {"pred": 1, "rep": 1, "map": 1, "output": 1}
    log = [json.loads(line) for line in (out / "logs" / "student.jsonl").read_text().splitlines()]
    assert {"loss_pred", "loss_rep", "loss_map", "loss_output"} <= set(log[0])
    student = load_student(out / "student")
    assert student.kdqat_quant_config.act_scale == "static"
    assert (out / "teacher" / "config.json").is_file()
    assert [p.name for p in out.glob(".*")] == [".kdqat.lock"]  # no temporary folders left


def test_resume_after_interruption_gives_the_same_student(tmp_path, tiny_model_dir, glue_dir):
    straight = options(tmp_path, tiny_model_dir, glue_dir, name="straight")
    train(straight)
    teacher = str(tmp_path / "straight" / "teacher")

    class Interrupt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt

    resumed = options(tmp_path, tiny_model_dir, glue_dir, name="resumed", teacher=teacher)
    with pytest.raises(KeyboardInterrupt):
        train(resumed, callbacks=[Interrupt()])
    assert not (tmp_path / "resumed" / "student").exists()  # nothing half-written
    train(resumed)
    a, b = weights(tmp_path / "straight" / "student"), weights(tmp_path / "resumed" / "student")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_nan_loss_stops_with_a_message_and_keeps_the_checkpoint(tmp_path, tiny_model_dir, glue_dir, monkeypatch):
    calls = {"n": 0}
    real = kdqat.losses.pred_loss

    def flaky(*args, **kwargs):
        calls["n"] += 1
        return torch.tensor(float("nan")) if calls["n"] == 3 else real(*args, **kwargs)

    monkeypatch.setattr(kdqat.losses, "pred_loss", flaky)  # what the classification objective calls each step
    with pytest.raises(KdqatError, match=r"became nan at step 3 .*last good checkpoint"):
        train(options(tmp_path, tiny_model_dir, glue_dir))
    assert (tmp_path / "run" / "checkpoints" / "student" / "checkpoint-2").is_dir()
    assert not (tmp_path / "run" / "student").exists()


def test_teacher_with_other_labels_is_refused(tmp_path, tiny_model_dir, glue_dir):
    from transformers import BertForSequenceClassification

    three = tmp_path / "mnli-teacher"
    BertForSequenceClassification(tiny_config(num_labels=3, vocab_size=30522, max_position_embeddings=128)).save_pretrained(three)
    with pytest.raises(KdqatError, match=r"has 3 labels .*task rte needs 2 labels \(entailment, not_entailment\)"):
        train(options(tmp_path, tiny_model_dir, glue_dir, teacher=str(three)))


def test_rerun_with_other_settings_is_refused(tmp_path, tiny_model_dir, glue_dir):
    train(options(tmp_path, tiny_model_dir, glue_dir, max_steps=2))
    with pytest.raises(KdqatError, match=r"other settings \(kd: 'map\+output' -> 'ternarybert'"):
        train(options(tmp_path, tiny_model_dir, glue_dir, max_steps=2, kd="ternarybert"))


def test_bad_options_are_refused(tmp_path, tiny_model_dir, glue_dir):
    with pytest.raises(KdqatError, match="--weight-bits 3"):
        train(options(tmp_path, tiny_model_dir, glue_dir, weight_bits=3))
    with pytest.raises(KdqatError, match="--batch-size -1: must be positive"):
        train(options(tmp_path, tiny_model_dir, glue_dir, batch_size=-1))


@pytest.mark.parametrize("task, metric", [("stsb", "dev_pearson"), ("cola", "dev_mcc")])
def test_regression_and_headerless_tasks_train(tmp_path, tiny_model_dir, glue_dir, task, metric):
    result = train(options(tmp_path, tiny_model_dir, glue_dir, task=task, max_steps=2, eval_steps=2))
    assert result["metric"] == metric
    assert metric in result["student"]["last"]["static"]["dev"]
    if task == "stsb":
        assert load_student(tmp_path / "run" / "student").config.problem_type == "regression"


def test_mnli_scores_both_dev_sets(tmp_path, tiny_model_dir):
    header = "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2\tgold_label\n"
    rows = "".join(f"{i}\t0\t0\tfiction\tpremise {i}\thypothesis {i}\t{lab}\n"
                   for i, lab in enumerate(["entailment", "neutral", "contradiction"] * 4))
    for split in ("train", "dev_matched", "dev_mismatched"):
        (tmp_path / "glue" / "MNLI").mkdir(parents=True, exist_ok=True)
        (tmp_path / "glue" / "MNLI" / f"{split}.tsv").write_text(header + rows)
    result = train(options(tmp_path, tiny_model_dir, tmp_path / "glue", task="mnli", max_steps=2, eval_steps=2))
    assert result["metric"] == "dev_matched_accuracy"
    assert {"dev_matched_accuracy", "dev_mismatched_accuracy"} <= set(result["student"]["last"]["static"]["dev"])


class Record(TrainerCallback):
    """Which optimizer and global clip each stage ran with."""

    def __init__(self):
        self.seen = []

    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        self.seen.append((type(getattr(optimizer, "optimizer", optimizer)).__name__, args.max_grad_norm))


def test_student_runs_bertadam_without_a_global_clip(tmp_path, tiny_model_dir, glue_dir):
    record = Record()
    train(options(tmp_path, tiny_model_dir, glue_dir, max_steps=2), callbacks=[record])
    assert record.seen == [("BertAdam", 0.0)]
    record = Record()
    train(options(tmp_path, tiny_model_dir, glue_dir, name="adamw", max_steps=2, optimizer="adamw",
                  teacher=str(tmp_path / "run" / "teacher")), callbacks=[record])
    assert record.seen == [("AdamW", 1.0)]


def test_best_evaluation_is_kept_and_checkpoints_removed(tmp_path, tiny_model_dir, glue_dir):
    """student/ holds the best evaluation's weights (not the last), metrics.json says so and keeps every
    evaluation; the completed stages' checkpoints are gone."""
    result = train(options(tmp_path, tiny_model_dir, glue_dir, max_steps=6, eval_steps=1, learning_rate=5e-3,
                           keep_checkpoints=True))
    out = tmp_path / "run"
    student = result["student"]
    history = student["history"]
    assert [r["step"] for r in history] == [1, 2, 3, 4, 5, 6]
    scores = [r["dev"]["dev_accuracy"] for r in history]
    best_step = history[scores.index(max(scores))]["step"]
    assert student["kept"] == "best" and student["best"]["step"] == best_step
    assert student["last"]["static"]["step"] == 6
    kept = weights(out / "student")
    ckpt = load_file(str(out / "checkpoints" / "student" / f"checkpoint-{best_step}" / "model.safetensors"))
    for key in kept:
        torch.testing.assert_close(kept[key], ckpt[key], rtol=0, atol=0, msg=key)
    teacher = result["teacher"]["training"]
    assert teacher["kept"] == "best" and teacher["optimizer"] == "adamw" and len(teacher["history"]) == 6

    plain = train(options(tmp_path, tiny_model_dir, glue_dir, name="plain", max_steps=2, eval_steps=1,
                          teacher=str(out / "teacher")))
    assert plain["student"]["kept"] == "best"
    assert not (tmp_path / "plain" / "checkpoints" / "student").exists()


def test_keep_last_saves_the_final_student(tmp_path, tiny_model_dir, glue_dir):
    result = train(options(tmp_path, tiny_model_dir, glue_dir, max_steps=3, eval_steps=1, keep="last",
                           keep_checkpoints=True))
    assert result["student"]["kept"] == "last"
    kept, final = weights(tmp_path / "run" / "student"), load_file(
        str(tmp_path / "run" / "checkpoints" / "student" / "checkpoint-3" / "model.safetensors"))
    for key in kept:
        torch.testing.assert_close(kept[key], final[key], rtol=0, atol=0, msg=key)


def test_teacher_only_stops_after_the_teacher(tmp_path, tiny_model_dir, glue_dir):
    result = train(options(tmp_path, tiny_model_dir, glue_dir, teacher_only=True, teacher_learning_rate=1e-3))
    out = tmp_path / "run"
    assert result["student"] is None and not (out / "student").exists()
    assert json.loads((out / "metrics.json").read_text())["teacher"]["training"]["learning_rate"] == 1e-3
    assert (out / "teacher" / "config.json").is_file() and not (out / "checkpoints").exists()


def test_progressive_bit_widths_a_student_teaches_and_initialises_the_next(tmp_path, tiny_model_dir, glue_dir):
    """W8/A8 student -> teacher and starting point of a W2/A8 one: its weights and activation ranges carry over."""
    train(options(tmp_path, tiny_model_dir, glue_dir, name="w8", weight_bits=8, max_steps=2))
    w8 = tmp_path / "w8" / "student"
    seen = {}

    class FirstStep(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            seen["state"] = {k: v.clone() for k, v in model.state_dict().items()}

    result = train(options(tmp_path, tiny_model_dir, glue_dir, name="w2", teacher=str(w8), init_student=str(w8),
                           max_steps=2), callbacks=[FirstStep()])
    start = load_student(w8).state_dict()
    assert seen["state"].keys() == start.keys()
    for key, value in start.items():
        torch.testing.assert_close(seen["state"][key], value, rtol=0, atol=0, msg=key)
    assert load_student(tmp_path / "w2" / "student").kdqat_quant_config.weight_bits == 2
    assert result["teacher"]["folder"] == str(w8)
    from transformers import BertForSequenceClassification

    three = tmp_path / "mnli-teacher"
    BertForSequenceClassification(tiny_config(num_labels=3, vocab_size=30522, max_position_embeddings=128)).save_pretrained(three)
    with pytest.raises(KdqatError, match=r"--init-student .*mnli-teacher: not a kdqat student"):
        train(options(tmp_path, tiny_model_dir, glue_dir, name="bad", teacher=str(w8), init_student=str(three)))
    with pytest.raises(KdqatError, match=r"--init-student .* has 3 labels"):  # a student of another task
        bad_student = make_student_run(tmp_path / "mnli-run", tiny_model_dir, QuantConfig(), task="mnli") / "student"
        train(options(tmp_path, tiny_model_dir, glue_dir, name="bad", teacher=str(w8), init_student=str(bad_student)))


def test_recipes_fill_what_is_not_given(tmp_path, tiny_model_dir, glue_dir):
    ours = options(tmp_path, tiny_model_dir, glue_dir).resolve()
    assert (ours.recipe, ours.optimizer, ours.learning_rate, ours.epochs) == ("kdqat", "bertadam", 1e-4, 3.0)
    paper = options(tmp_path, tiny_model_dir, glue_dir, recipe="paper").resolve()
    assert (paper.optimizer, paper.learning_rate, paper.epochs) == ("bertadam", 2e-5, 3.0)
    mine = options(tmp_path, tiny_model_dir, glue_dir, recipe="kdqat", learning_rate=3e-5, optimizer="adamw").resolve()
    assert (mine.optimizer, mine.learning_rate) == ("adamw", 3e-5)
    # STS-B measured short at 3 epochs: the kdqat recipe gives it 6, the paper's keeps 3, --epochs wins over both
    assert options(tmp_path, tiny_model_dir, glue_dir, task="stsb").resolve().epochs == 6.0
    assert options(tmp_path, tiny_model_dir, glue_dir, task="stsb", recipe="paper").resolve().epochs == 3.0
    assert options(tmp_path, tiny_model_dir, glue_dir, task="stsb", epochs=2.0).resolve().epochs == 2.0
    # the teacher: 6 epochs on CoLA and STS-B (measured short at 3), 3 elsewhere (RTE included); --teacher-epochs wins
    teacher_epochs = [options(tmp_path, tiny_model_dir, glue_dir, task=t).resolve().teacher_epochs
                      for t in ("rte", "cola", "stsb", "sst2")]
    assert teacher_epochs == [3.0, 6.0, 6.0, 3.0]
    assert options(tmp_path, tiny_model_dir, glue_dir, task="cola", teacher_epochs=4.0).resolve().teacher_epochs == 4.0
    with pytest.raises(KdqatError, match="--recipe 'fast' is not one of paper, kdqat"):
        options(tmp_path, tiny_model_dir, glue_dir, recipe="fast").resolve()
