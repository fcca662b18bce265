"""The product tools that used to be scripts: `kdqat mix-texts` (training text for an embedding student) and the
peer graph the benchmarks measure the student against (kdqat.export.peer)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from conftest import batch, run_cli, tiny_classifier


def test_mix_texts_writes_each_sentence_once_in_source_order(tmp_path, glue_dir):
    (tmp_path / "mine.csv").write_text('text,label\n"first  line\nwrapped",a\nsecond,b\nsecond,b\n"",c\n')
    done = run_cli("mix-texts", tmp_path / "out.txt", "--glue-task", "rte", "--data-dir", glue_dir,
                   "--file", tmp_path / "mine.csv", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "out.txt").read_text().splitlines()
    assert lines[-2:] == ["first line wrapped", "second"]  # newlines and runs of spaces folded, duplicates once
    assert len(lines) == len(set(lines)) and "" not in lines
    assert done.stdout.strip() == f"{tmp_path / 'out.txt'}: {len(lines)} distinct sentences from 2 source(s)"


def test_mix_texts_without_a_source_is_refused_in_one_line(tmp_path):
    done = run_cli("mix-texts", tmp_path / "out.txt", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip() == "error: nothing to mix: give --glue-task and/or --file"
    assert not (tmp_path / "out.txt").exists()


def test_the_peer_is_the_float_model_fused_and_dynamically_quantized(tmp_path):
    from kdqat.export.peer import peer_graph

    model = tiny_classifier()
    path, record = peer_graph(model, tmp_path)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} & ops or "DynamicQuantizeMatMul" in ops
    assert record["bytes"] == path.stat().st_size < record["float_graph_bytes"]
    ids, mask = batch()
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": np.zeros_like(ids.numpy())}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})[0]
    assert logits.shape == (3, 2) and np.isfinite(logits).all()
