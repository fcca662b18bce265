"""Your own data: CSV, TSV, JSON Lines, JSON and Parquet files read into the same examples; columns and problem type
found or given; label names all the way into the models, metrics.json, export.json, the server and Triton; test
scored once for the kept checkpoints; a teacher's labels matched by name; every bad input one clear line."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import run_cli, train_options

from kdqat import KdqatError
from kdqat.data.files import read_file
from kdqat.data.metrics import class_report, task_metrics
from kdqat.data.source import open_file_source
from kdqat.data.task import TaskSpec

ROWS = [("what is my balance", "balance"), ("send money to mom", "transfer"), ("will it rain today", "weather"),
        ("how much money do i have", "balance"), ("transfer 20 dollars", "transfer"), ("is it sunny tomorrow", "weather"),
        ("show my account balance", "balance"), ("move funds to savings", "transfer"), ("forecast for paris", "weather"),
        ("balance please", "balance"), ("wire cash to bob", "transfer"), ("what's the weather, today", "weather")]
LABELS = ("balance", "transfer", "weather")  # sorted


def write_csv(path, rows, header=("text", "intent")):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def settings(**given) -> dict:
    base = {"train_file": None, "validation_file": None, "test_file": None, "dataset": None, "text_column": None,
            "text_pair_column": None, "label_column": None, "problem": None, "metric": None, "validation_fraction": 0.25}
    return {**base, **{k: str(v) if hasattr(v, "suffix") else v for k, v in given.items()}}


@pytest.fixture
def intents(tmp_path):
    folder = tmp_path / "intents"
    folder.mkdir()
    write_csv(folder / "train.csv", ROWS * 4)
    write_csv(folder / "validation.csv", ROWS)
    write_csv(folder / "test.csv", ROWS[::-1])
    return folder


def test_csv_jsonl_json_and_parquet_give_the_same_examples(tmp_path, intents):
    import pandas as pd

    frame = pd.read_csv(intents / "train.csv")
    frame.to_json(tmp_path / "train.jsonl", orient="records", lines=True)
    frame.to_json(tmp_path / "train.json", orient="records")
    frame.to_parquet(tmp_path / "train.parquet")
    frame.to_csv(tmp_path / "train.tsv", sep="\t", index=False)
    loaded = {}
    for name in ("train.jsonl", "train.json", "train.parquet", "train.tsv"):
        src = open_file_source(settings(train_file=tmp_path / name, validation_file=intents / "validation.csv"), "x", 0)
        loaded[name] = src.load("train")
    reference = open_file_source(settings(train_file=intents / "train.csv", validation_file=intents / "validation.csv"), "x", 0)
    expected = reference.load("train")
    assert reference.task.labels == LABELS and not reference.task.pair and reference.task.metric == "accuracy"
    assert expected["text_a"][:2] == ["what is my balance", "send money to mom"] and expected["label"][:3] == [0, 1, 2]
    for name, ds in loaded.items():
        assert ds["text_a"] == expected["text_a"] and ds["label"] == expected["label"], name


def test_held_out_validation_is_stratified_seeded_and_disjoint(intents):
    given = settings(train_file=intents / "train.csv")
    first, second = (open_file_source(given, "x", seed=42) for _ in range(2))
    train, validation = first.load("train"), first.load("validation")
    assert len(validation) == 12 and len(train) == 36  # 25% of 48
    assert sorted(np.bincount(validation["label"])) == [4, 4, 4]  # stratified: every class equally
    assert second.load("validation")["text_a"] == validation["text_a"]  # seeded
    other = open_file_source(given, "x", seed=7).load("validation")
    assert other["text_a"] != validation["text_a"]


def test_regression_from_float_labels_and_problem_override(tmp_path):
    path = write_csv(tmp_path / "scores.csv", [("a good film", 4.5), ("a bad film", 0.5), ("fine", 2.0), ("ok", 3.0)] * 3,
                     header=("sentence", "score"))
    src = open_file_source(settings(train_file=path), "x", 0)
    assert src.task.objective == "regression" and src.task.labels is None and src.task.metric == "pearson"
    assert src.load("train").features["label"].dtype == "float32"
    as_classes = open_file_source(settings(train_file=path, problem="classification"), "x", 0)
    assert as_classes.task.labels == ("0.5", "2", "3", "4.5")


def test_pair_columns_are_found_and_integer_labels_sort_numerically(tmp_path):
    rows = [(f"premise {i}", f"hypothesis {i}", [2, 10, 1][i % 3]) for i in range(12)]
    path = write_csv(tmp_path / "nli.csv", rows, header=("premise", "hypothesis", "label"))
    src = open_file_source(settings(train_file=path), "x", 0)
    assert src.task.pair and src.task.labels == ("1", "2", "10")
    ds = src.load("validation")
    assert set(ds.column_names) == {"text_a", "text_b", "label"}


def test_rte_given_as_files_gives_the_glue_examples(glue_dir):
    from kdqat.data.source import glue_spec, GlueSource

    files = settings(train_file=glue_dir / "RTE" / "train.tsv", validation_file=glue_dir / "RTE" / "dev.tsv",
                     text_column="sentence1", text_pair_column="sentence2", label_column="label")
    mine = open_file_source(files, "rte-files", 0)
    glue = GlueSource(glue_spec("rte"), str(glue_dir))
    assert mine.task.labels == glue.task.labels == ("entailment", "not_entailment")
    for mine_split, glue_split in (("train", "train"), ("validation", "dev")):
        a, b = mine.load(mine_split), glue.load(glue_split)
        assert len(a) == len(b) > 200
        for column in ("text_a", "text_b", "label"):
            assert a[column] == b[column], (mine_split, column)


def test_metrics_for_any_label_set_match_hand_computed_values():
    task = TaskSpec("x", "files", ("a", "b", "c"), "accuracy", pair=False)
    labels = np.array([0, 0, 1, 1, 2, 2])
    logits = np.eye(3)[[0, 1, 1, 1, 2, 0]]  # predictions 0 1 1 1 2 0
    m = task_metrics(task, logits, labels)
    assert m["accuracy"] == pytest.approx(400 / 6)
    # F1: a: p 1/2 r 1/2 -> 0.5; b: p 2/3 r 1 -> 0.8; c: p 1 r 1/2 -> 2/3
    assert m["macro_f1"] == pytest.approx(100 * (0.5 + 0.8 + 2 / 3) / 3)
    assert m["weighted_f1"] == pytest.approx(m["macro_f1"])  # equal supports
    report = class_report(task, logits, labels)
    assert report["per_class"]["b"] == {"precision": pytest.approx(200 / 3), "recall": 100.0, "f1": pytest.approx(80.0),
                                        "support": 2}
    assert report["confusions"] == [{"true": "c", "predicted": "a", "count": 1}, {"true": "a", "predicted": "b", "count": 1}]
    reg = TaskSpec("y", "files", None, "pearson", pair=False, objective="regression")
    r = task_metrics(reg, np.array([[1.0], [2.0], [4.0]]), np.array([1.0, 2.0, 3.0]))
    assert r["mse"] == pytest.approx(1 / 3) and r["spearman"] == pytest.approx(100.0)


def test_train_on_csv_records_labels_and_scores_test_once(tmp_path, tiny_model_dir, intents):
    from kdqat.train import train

    opts = train_options(tmp_path, tiny_model_dir, None, task=None, data_dir=None, train_file=str(intents / "train.csv"),
                         validation_file=str(intents / "validation.csv"), test_file=str(intents / "test.csv"),
                         metric="macro_f1", max_eval_samples=None)
    result = train(opts)
    run = tmp_path / "run"
    config = json.loads((run / "config.json").read_text())
    assert config["task_spec"]["labels"] == list(LABELS) and config["task_spec"]["test_split"] == "test"
    assert config["options"]["task"] == "intents" and config["options"]["validation_fraction"] == 0.1
    assert result["metric"] == "validation_macro_f1" and result["labels"] == list(LABELS)
    for folder in ("teacher", "student"):
        id2label = json.loads((run / folder / "config.json").read_text())["id2label"]
        assert [id2label[str(i)] for i in range(3)] == list(LABELS)
    test = result["student"]["test"]
    assert test["examples"] == 12 and set(test["scores"]) == {"accuracy", "macro_f1", "weighted_f1"}
    assert set(test["per_class"]) == set(LABELS) and sum(c["support"] for c in test["per_class"].values()) == 12
    assert "test" in result["teacher"]
    from kdqat.eval.report import results_table

    table = results_table([run], "test").splitlines()  # kdqat report --which test
    assert table[0] == "| model | intents (macro_f1) | avg |"
    assert table[2] == f"| teacher (fp32) | {result['teacher']['test']['scores']['macro_f1']:.2f} | " \
                       f"{result['teacher']['test']['scores']['macro_f1']:.2f} |"
    assert table[3].startswith(f"| map+output (W2/A8, static) | {test['scores']['macro_f1']:.2f} |")
    # selection never saw the test set: every evaluation in the history is a validation one
    assert all(set(h["dev"]) == {"validation_accuracy", "validation_macro_f1", "validation_weighted_f1"}
               for h in result["student"]["history"])


def test_a_teacher_fixes_the_label_order_by_name(tmp_path, tiny_model_dir, intents):
    from transformers import BertForSequenceClassification

    from kdqat.train import train

    teacher = tmp_path / "teacher"
    order = ("weather", "balance", "transfer")
    BertForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=3, id2label=dict(enumerate(order)),
                                                  label2id={n: i for i, n in enumerate(order)}).save_pretrained(teacher)
    opts = train_options(tmp_path, tiny_model_dir, None, task=None, data_dir=None, teacher=str(teacher),
                         train_file=str(intents / "train.csv"), validation_file=str(intents / "validation.csv"),
                         max_steps=1)
    assert train(opts)["labels"] == list(order)
    # another label set is refused with both lists
    wrong = ("weather", "balance", "greeting")
    BertForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=3, id2label=dict(enumerate(wrong)),
                                                  label2id={n: i for i, n in enumerate(wrong)}).save_pretrained(teacher)
    with pytest.raises(KdqatError) as e:
        train(opts.__class__(**{**opts.__dict__, "output_dir": str(tmp_path / "other")}))
    assert "[weather, balance, greeting]" in str(e.value) and "[balance, transfer, weather]" in str(e.value)
    assert "not in the model: transfer" in str(e.value) and not (tmp_path / "other").exists()


def test_init_student_of_another_task_is_refused(tmp_path, tiny_model_dir, glue_dir, intents):
    from kdqat.train import train

    rte = train_options(tmp_path, tiny_model_dir, glue_dir, name="rte", max_steps=1)
    train(rte)
    opts = train_options(tmp_path, tiny_model_dir, None, name="mine", task=None, data_dir=None,
                         init_student=str(tmp_path / "rte" / "student"), train_file=str(intents / "train.csv"),
                         max_steps=1)
    with pytest.raises(KdqatError, match="--init-student .* has 2 labels"):
        train(opts)
    assert not (tmp_path / "mine").exists()


BAD = {
    "unseen validation label": ("validation.csv", [("hello there", "greeting")], None, "validation.csv:2: label 'greeting' never appears in the training data"),
    "empty text": ("train.csv", ROWS + [("  ", "balance")], None, "train.csv:14: empty text in column 'text'"),
    "misspelled column": ("train.csv", ROWS, ("--label-column", "intnet"), "--label-column 'intnet': "),
    "single class": ("train.csv", [(t, "balance") for t, _ in ROWS], None, "has only one class (balance)"),
    "malformed row": ("train.csv", None, None, "train.csv:4: expected 2 fields, found 3"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_data_is_one_line_and_writes_nothing(tmp_path, tiny_model_dir, intents, case):
    name, rows, option, message = BAD[case]
    if rows is None:
        (intents / name).write_text("text,intent\nhi,balance\nyo,transfer\nwhat, is this,weather\n")
    else:
        write_csv(intents / name, rows)
    args = ["train", "--train-file", intents / "train.csv", "--validation-file", intents / "validation.csv",
            "--model", tiny_model_dir, "--output-dir", tmp_path / "run", "--max-steps", "1", *(option or ())]
    done = run_cli(*args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if not line.startswith("data: ")]  # kdqat's note of the columns
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], done.stderr  # no library log lines
    assert not (tmp_path / "run").exists()
    if case == "misspelled column":
        assert "its columns: text, intent" in lines[0]


RECORDS = [{"text": f"text number {i}", "intent": "balance" if i % 2 else "transfer"} for i in range(12)]
JSON_FILES = {  # a file of each shape a user gives, and the one line it gets
    "a broken JSON Lines record": ("train.jsonl", [*map(json.dumps, RECORDS[:8]), '{"text": "oops", "intent": ',
                                                   *map(json.dumps, RECORDS[9:])],
                                   "train.jsonl:9: not valid JSON (Expecting value at column 28)"),
    "a JSON Lines line that is not JSON": ("train.jsonl", [*map(json.dumps, RECORDS[:11]), "not json at all"],
                                           "train.jsonl:12: not valid JSON (Expecting value at column 1)"),
    "a JSON Lines line that is an array": ("train.jsonl", [*map(json.dumps, RECORDS[:3]), '["a", "b"]'],
                                           "train.jsonl:4: an array, not an object; JSON Lines holds one record a line, "
                                           '{"text": ..., "label": ...}'),
    "a .json number": ("train.json", ["42"], 'train.json: a number; expected an array of records [{"text": ..., '
                                             '"label": ...}, ...] or an object of equal-length columns {"text": [...], "label": [...]}'),
    "a .json syntax error": ("train.json", ["[", json.dumps(RECORDS[0]) + ",", "{oops}", "]"],
                             "train.json:3: not valid JSON (Expecting property name enclosed in double quotes at column 2)"),
    "a .json of columns of different lengths": ("train.json", [json.dumps({"text": ["a", "b"], "intent": ["x"]})],
                                                "train.json: its columns differ in length (text: 2, intent: 1)"),
}


@pytest.mark.parametrize("case", list(JSON_FILES))
def test_each_json_shape_gets_one_line_naming_the_file_and_line(tmp_path, tiny_model_dir, intents, case):
    name, lines, message = JSON_FILES[case]
    (tmp_path / name).write_text("\n".join(lines) + "\n")
    done = run_cli("train", "--train-file", tmp_path / name, "--validation-file", intents / "validation.csv",
                   "--model", tiny_model_dir, "--output-dir", tmp_path / "run", "--max-steps", "1", cwd=tmp_path)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if not line.startswith("data: ")]
    assert lines == [f"error: {tmp_path / name}{message[len(name):]}"]
    assert not (tmp_path / "run").exists()


def test_a_json_object_of_columns_reads_as_its_records(tmp_path):
    columns = {"text": [r["text"] for r in RECORDS], "intent": [r["intent"] for r in RECORDS]}
    (tmp_path / "columns.json").write_text(json.dumps(columns))
    (tmp_path / "records.json").write_text(json.dumps(RECORDS))
    assert read_file(tmp_path / "columns.json", "--train-file").to_list() == RECORDS
    assert read_file(tmp_path / "records.json", "--train-file").to_list() == RECORDS


def test_mixed_label_types_and_unsupported_files_are_refused(tmp_path):
    lines = [{"text": "a", "label": 1}, {"text": "b", "label": "two"}]
    (tmp_path / "mixed.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    with pytest.raises(KdqatError, match="mixed.jsonl: the label column 'label' mixes value types"):
        open_file_source(settings(train_file=tmp_path / "mixed.jsonl"), "x", 0)
    write_csv(tmp_path / "mixed.csv", [("a", "1"), ("b", "2"), ("c", "positive")], header=("text", "label"))
    with pytest.raises(KdqatError, match=r"mixed.csv: the label column 'label' mixes numbers and names \(1, 2, positive"):
        open_file_source(settings(train_file=tmp_path / "mixed.csv"), "x", 0)
    (tmp_path / "data.xlsx").write_text("x")
    with pytest.raises(KdqatError, match=r"--train-file .*data.xlsx: unsupported file type '.xlsx'; use one of .csv"):
        read_file(tmp_path / "data.xlsx", "--train-file")


def test_a_fixed_rerun_is_not_refused(tmp_path, tiny_model_dir, intents):
    write_csv(intents / "validation.csv", [("hello there", "greeting")])
    args = ["train", "--train-file", intents / "train.csv", "--validation-file", intents / "validation.csv",
            "--model", tiny_model_dir, "--output-dir", tmp_path / "run", "--max-steps", "1"]
    assert run_cli(*args, cwd=tmp_path).returncode == 2
    write_csv(intents / "validation.csv", ROWS)
    done = run_cli(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr


def test_glue_options_and_your_data_options_do_not_mix(tmp_path, tiny_model_dir, glue_dir):
    done = run_cli("train", "--task", "rte", "--data-dir", glue_dir, "--label-column", "x", "--output-dir",
                   tmp_path / "run", cwd=tmp_path)
    assert done.returncode == 2 and "--label-column applies to your own data" in done.stderr
    done = run_cli("train", "--output-dir", tmp_path / "run", cwd=tmp_path)
    assert done.returncode == 2 and "give --task (a GLUE task) or your own data" in done.stderr


def test_a_csv_run_exports_evaluates_serves_and_names_its_labels(tmp_path, tiny_model_dir, intents):
    """The README's path for your own data, command by command: train, export, eval (another test file), a
    Triton repository with labels.txt, and a server that answers with the dataset's label names."""
    import httpx
    from test_serve import Server

    run = tmp_path / "run"
    done = run_cli("train", "--train-file", intents / "train.csv", "--validation-file", intents / "validation.csv",
                   "--test-file", intents / "test.csv", "--model", tiny_model_dir, "--output-dir", run,
                   "--max-steps", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "test accuracy" in done.stdout and "data: text column 'text', label column 'intent'" in done.stderr
    done = run_cli("export", run, "--samples", "12", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads((run / "onnx" / "export.json").read_text())
    assert report["labels"] == list(LABELS) and report["pair"] is False
    assert report["parity"]["inputs"] == "intents validation (12 examples)"
    write_csv(intents / "other.csv", ROWS[:6])
    done = run_cli("eval", run, "--test-file", intents / "other.csv", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    scored = json.loads((run / "eval" / "ort.json").read_text())
    assert list(scored["splits"]) == ["validation", "test"] and scored["splits"]["test"]["examples"] == 6
    assert set(scored["splits"]["test"]["classes"]["per_class"]) == set(LABELS)
    done = run_cli("export", run, "--no-onnx", "--triton", tmp_path / "repo", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "repo" / "intents_student" / "labels.txt").read_text() == "balance\ntransfer\nweather\n"
    assert 'label_filename: "labels.txt"' in (tmp_path / "repo" / "intents_student" / "config.pbtxt").read_text()
    server = Server(run)
    try:
        server.wait()
        answer = server.predict(["what is my balance", "will it rain today"])
        assert answer.status_code == 200, answer.text
        for prediction in answer.json()["predictions"]:
            assert prediction["label"] in LABELS and set(prediction["probabilities"]) == set(LABELS)
        assert httpx.get(f"{server.url}/health").json()["status"] == "ready"
    finally:
        server.stop()


def test_a_dataset_by_name_with_its_splits(tmp_path, intents):
    """--dataset goes through `datasets.load_dataset` (here a local folder, as the hub's cache would serve it);
    an unknown split is one line naming the option."""
    given = settings(dataset=str(intents), train_split="train", validation_split="validation", test_split="test")
    src = open_file_source(given, "intents", 0)
    assert src.task.labels == LABELS and src.task.test_split == "test"
    assert src.load("test")["text_a"] == [t for t, _ in ROWS[::-1]]
    with pytest.raises(KdqatError, match=r"--dataset .*intents --test-split nope: cannot load it \(Unknown split"):
        open_file_source({**given, "test_split": "nope"}, "intents", 0)


def test_a_teacher_hub_id_that_cannot_be_reached_is_one_line(tmp_path, intents):
    import os

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = run_cli("train", "--train-file", intents / "train.csv", "--teacher", "someone/no-such-teacher",
                   "--output-dir", tmp_path / "run", cwd=tmp_path, env=env)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--teacher someone/no-such-teacher" in errors[0] and not (tmp_path / "run").exists()


def test_sweep_tables_of_your_data_include_test(tmp_path, tiny_model_dir, intents):
    """Your data's runs laid out as a sweep tabulate with `kdqat sweep --table-only`, test tables included."""
    from kdqat.train import train

    root = tmp_path / "sweep"
    for seed in (1, 2):
        train(train_options(tmp_path, tiny_model_dir, None, name=f"sweep/intents/map+output/seed{seed}", task=None,
                            data_dir=None, seed=seed, train_file=str(intents / "train.csv"),
                            validation_file=str(intents / "validation.csv"), test_file=str(intents / "test.csv"),
                            max_steps=1))
    done = run_cli("sweep", "--output-dir", root, "--tasks", "intents", "--presets", "map+output", "--seeds", "1,2",
                   "--table-only", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    test_table = done.stdout.split("### test (kept checkpoints, scored once)")[1]
    assert "| test | intents (accuracy) | avg |" in test_table and "map+output | " in test_table and "(n=2)" in test_table
    assert "### gap to the teacher (test)" in done.stdout and (root / "sweep.csv").read_text().count("\ntest,") == 2
