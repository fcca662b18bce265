"""The command line: bad input ends in one line on stderr and exit status 2, no traceback, no output."""

import pytest
from conftest import run_cli as kdqat


@pytest.mark.parametrize(
    "args, message",
    [
        (["--task", "squad"], "error: --task 'squad' is not a GLUE task"),
        (["--task", "rte", "--data-dir", "nowhere"], "error: --data-dir nowhere: no such folder"),
        (["--task", "rte", "--kd", "minilm"], "error: --kd 'minilm' is not one of"),
        (["--task", "rte", "--gamma", "0.5"], "error: --gamma needs --gamma-on"),
    ],
)
def test_bad_input_is_one_line(tmp_path, args, message):
    done = kdqat("train", "--output-dir", str(tmp_path / "out"), *args, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().startswith(message), done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "student").exists()


def test_help_lists_the_train_command(tmp_path):
    done = kdqat("--help", cwd=tmp_path)
    assert done.returncode == 0 and "train" in done.stdout


def test_report_builds_a_table_from_metrics(tmp_path):
    import json

    def run(name, task, metric, teacher, kd, last, best):
        folder = tmp_path / name
        folder.mkdir()
        def rec(v):
            return {"step": 10, "dev": {metric: v}}

        (folder / "metrics.json").write_text(json.dumps({
            "task": task, "metric": metric, "teacher": {"dev": {metric: teacher}},
            "student": {"kd": kd, "act_scale": "static", "best": rec(best), "last": {"static": rec(last)}}}))
        return str(folder)

    runs = [run("a", "rte", "dev_accuracy", 60.0, "ternarybert", 55.0, 56.0),
            run("b", "rte", "dev_accuracy", 60.0, "map+output", 57.0, 58.0),
            run("c", "cola", "dev_mcc", 40.0, "map+output", 30.0, 31.0)]
    done = kdqat("report", *runs, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "| model | cola (mcc) | rte (accuracy) | avg |"
    assert lines[2] == "| teacher (fp32) | 40.00 | 60.00 | 50.00 |"
    assert lines[3] == "| ternarybert (W2/A8, static) | - | 55.00 | - |"
    assert lines[4] == "| map+output (W2/A8, static) | 30.00 | 57.00 | 43.50 |"
    best = kdqat("report", "--which", "best", *runs, cwd=tmp_path).stdout
    assert "| map+output (W2/A8, static) | 31.00 | 58.00 | 44.50 |" in best
    again = run("d", "rte", "dev_accuracy", 60.0, "map+output", 54.0, 55.0)  # same preset and task: a row of its own
    both = kdqat("report", *runs, again, cwd=tmp_path).stdout
    assert "| map+output (W2/A8, static) | 30.00 | 57.00 | 43.50 |" in both
    assert f"| map+output (W2/A8, static): {again} | - | 54.00 | - |" in both
    missing = kdqat("report", str(tmp_path / "nope"), cwd=tmp_path)
    assert missing.returncode == 2 and "metrics.json: not found" in missing.stderr


def test_export_then_eval_from_the_command_line(tmp_path, tiny_model_dir, glue_dir):
    from conftest import make_student_run

    from kdqat import QuantConfig

    run = make_student_run(tmp_path / "run", tiny_model_dir, QuantConfig())
    done = kdqat("export", str(run), "--onnx", "--samples", "16", "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "model.packed.onnx" in done.stdout and "ort_deploy_vs_torch" in done.stdout
    done = kdqat("eval", str(run), "--engine", "ort", "--data-dir", str(glue_dir), "--max-samples", "20", "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "student (PyTorch)" in done.stdout and "student (onnxruntime)" in done.stdout
    assert "students agree on" in done.stdout
    import json

    saved = json.loads((run / "eval" / "ort.json").read_text())
    assert saved["splits"]["dev"]["examples"] == 20 and set(saved["splits"]["dev"]["scores"]) == {"student (PyTorch)", "student (onnxruntime)"}


@pytest.mark.parametrize("args, message", [
    (["export", "nowhere"], "error: nowhere: no such folder"),
    (["export", ".", "--no-onnx"], "error: nothing to do"),
    (["export", ".", "--samples", "0"], "error: --samples and --batch-size must be positive"),
    (["eval", ".", "--engine", "tvm"], "error: --engine 'tvm' is not one of torch, ort, trt, openvino"),
    (["eval", "."], "error: .: not a kdqat run"),
])
def test_export_and_eval_bad_input_is_one_line(tmp_path, args, message):
    done = kdqat(*args, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().startswith(message), done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_sweep_command_writes_the_tables(tmp_path, tiny_model_dir, glue_dir):
    done = kdqat("sweep", "--output-dir", str(tmp_path / "sweep"), "--tasks", "rte", "--presets", "map+output",
                 "--seeds", "1", "--model", str(tiny_model_dir), "--data-dir", str(glue_dir), "--max-steps", "1",
                 "--max-train-samples", "8", "--max-eval-samples", "8", "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    table = (tmp_path / "sweep" / "sweep.md").read_text()
    assert "| full precision (teacher) |" in table and "| map+output |" in table and "### best" in table
    assert (tmp_path / "sweep" / "rte" / "map+output" / "seed1" / "metrics.json").is_file()
    assert (tmp_path / "sweep" / "sweep.csv").read_text().startswith("which,model,task")
    assert (tmp_path / "sweep" / "sweep.png").read_bytes().startswith(b"\x89PNG")

    # --table-only trains nothing: a wider grid tabulates the finished cell and leaves the rest empty
    done = kdqat("sweep", "--output-dir", str(tmp_path / "sweep"), "--tasks", "rte", "--presets", "map,map+output",
                 "--seeds", "1", "--table-only", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "sweep" / "rte" / "map").exists()
    rows = {line.split(" | ")[0]: line for line in (tmp_path / "sweep" / "sweep.md").read_text().splitlines()}
    assert "| map+output" in rows and "| map" not in rows  # a preset with no finished cell has no row


def test_report_curves_draw_every_evaluation_and_the_teacher(tmp_path):
    import json

    from kdqat.eval.curves import plot_curves

    def run(name, history, teacher=60.0):
        folder = tmp_path / name
        folder.mkdir()
        evals = [{"step": s, "dev": {"dev_accuracy": v}} for s, v in history]
        best = max(evals, key=lambda e: e["dev"]["dev_accuracy"])
        (folder / "metrics.json").write_text(json.dumps({
            "task": "rte", "metric": "dev_accuracy", "teacher": {"dev": {"dev_accuracy": teacher}},
            "student": {"kd": "map+output", "act_scale": "static", "best": best, "last": {"static": evals[-1]},
                        "history": evals}}))
        return str(folder)

    runs = [run("a", [(20, 50.0), (40, 57.0), (60, 55.0)]), run("b", [(20, 52.0), (40, 53.0)])]
    ax = plot_curves(runs).axes[0]
    lines = [line for line in ax.get_lines() if line.get_linestyle() == "-"]
    assert [list(line.get_ydata()) for line in lines] == [[50.0, 57.0, 55.0], [52.0, 53.0]]
    assert [line.get_label() for line in lines] == ["a (map+output)", "b (map+output)"]  # below their shared folder
    stars = [(list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines() if line.get_marker() == "*"]
    assert stars == [([40], [57.0]), ([40], [53.0])]
    assert [line.get_ydata()[0] for line in ax.get_lines() if line.get_linestyle() == "--"] == [60.0]  # shared: once

    done = kdqat("report", *runs, "--curves", str(tmp_path / "curves.png"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")
    old = tmp_path / "old"
    old.mkdir()
    rec = {"step": 10, "dev": {"dev_accuracy": 1.0}}
    (old / "metrics.json").write_text(json.dumps({"task": "rte", "metric": "dev_accuracy", "teacher": {"dev": {"dev_accuracy": 1.0}},
                                                 "student": {"kd": "map", "act_scale": "static", "best": rec, "last": {"static": rec}}}))
    done = kdqat("report", str(old), "--which", "last", "--curves", str(tmp_path / "x.png"), cwd=tmp_path)
    assert done.returncode == 2 and "no evaluation history" in done.stderr and not (tmp_path / "x.png").exists()
