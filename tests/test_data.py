import numpy as np
import pytest

from kdqat.glue.data import load_split
from kdqat.glue.metrics import glue_metrics
from kdqat.glue.tasks import get_task
from kdqat import KdqatError


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_real_glue_row_counts(glue_dir):
    assert len(load_split(get_task("rte"), "dev", glue_dir)) == 277
    assert len(load_split(get_task("cola"), "dev", glue_dir)) == 1043  # header-less, no trailing newline
    stsb = load_split(get_task("sts-b"), "train", glue_dir)
    assert len(stsb) == 5749 and isinstance(stsb[0]["label"], float)
    assert load_split(get_task("sst2"), "dev", glue_dir, max_samples=5).num_rows == 5


def test_quotes_are_text_not_csv_quoting(tmp_path):
    write(tmp_path / "SST-2" / "dev.tsv", 'sentence\tlabel\n"a quoted\tbit\t1\n')
    with pytest.raises(KdqatError, match=r"dev.tsv:2: expected 2 tab-separated fields, found 3"):
        load_split(get_task("sst2"), "dev", tmp_path)
    write(tmp_path / "SST-2" / "dev.tsv", 'sentence\tlabel\n"it" is\t1\n')
    assert load_split(get_task("sst2"), "dev", tmp_path)[0]["text_a"] == '"it" is'


@pytest.mark.parametrize(
    "content, message",
    [
        ("index\tsentence1\tlabel\n0\ta\tentailment\n", r"RTE/dev.tsv:1: column 'sentence2' missing"),
        ("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n", r"RTE/dev.tsv:2: unknown label 'maybe'"),
        ("index\tsentence1\tsentence2\tlabel\n", r"RTE/dev.tsv: the split is empty"),
        ("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tentailment\n", r"RTE/dev.tsv:3: expected 4"),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path, content, message):
    write(tmp_path / "RTE" / "dev.tsv", content)
    with pytest.raises(KdqatError, match=message):
        load_split(get_task("rte"), "dev", tmp_path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(KdqatError, match=r"RTE/train.tsv: file not found"):
        load_split(get_task("rte"), "train", tmp_path)
    with pytest.raises(KdqatError, match="--data-dir .*no such folder"):
        load_split(get_task("rte"), "train", tmp_path / "nope")


def test_no_source_says_what_was_tried(monkeypatch):
    monkeypatch.delenv("GLUE_DIR", raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(KdqatError, match="GLUE_DIR is unset.*nyu-mll/glue.*--data-dir"):
        load_split(get_task("rte"), "train")


def test_unknown_task():
    with pytest.raises(KdqatError, match="not a GLUE task"):
        get_task("squad")


def test_metrics_against_hand_computed_values():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 1.0], [3.0, 1.0]])  # predictions 0, 1, 1, 0
    labels = np.array([0, 1, 0, 1])
    assert glue_metrics(get_task("rte"), logits, labels) == {"accuracy": 50.0}
    mrpc = glue_metrics(get_task("mrpc"), logits, labels)
    assert mrpc["f1"] == pytest.approx(50.0)  # precision 1/2, recall 1/2
    cola = glue_metrics(get_task("cola"), logits, labels)
    assert cola["mcc"] == pytest.approx(0.0)  # tp=1 tn=1 fp=1 fn=1
    stsb = glue_metrics(get_task("stsb"), np.array([[1.0], [2.0], [3.0]]), np.array([2.0, 4.0, 6.5]))
    assert stsb["spearman"] == pytest.approx(100.0)
    assert stsb["pearson"] == pytest.approx(100.0 * np.corrcoef([1, 2, 3], [2, 4, 6.5])[0, 1])
