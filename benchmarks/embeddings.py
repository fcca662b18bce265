"""Sentence-embedding quality, size and latency: the float model, its onnxruntime dynamic-int8 peer, and W2/A8
students (kdqat export of `kdqat train --objective embedding` runs), on one machine in one process.

    python benchmarks/embeddings.py --runs RUN [RUN ...] --data-dir ../shared/glue --clinc ../shared/clinc150 \\
        --output docs/results/embedding/quality.json           # quality and sizes
    python benchmarks/embeddings.py --runs RUN --latency --output docs/results/embedding/latency.json

Quality (no fine-tuning): STS-B dev Spearman correlation of cosine similarities with the gold scores (1,500
pairs), and CLINC150 k-nearest-neighbour intent accuracy (index train.csv, classify test.csv; k = 10, votes
weighted by cosine, fixed before any model was scored). `--split validation` scores what students are chosen by
instead: STS-B train pairs (5,749; the students never see their scores) and CLINC150 validation.csv. The peer (kdqat.export.peer) is what a user would do
instead of kdqat: onnxruntime's BERT fusions and `quantize_dynamic` int8 of the float model. Every model runs on the CPU in onnxruntime, except "float (PyTorch)".
Latency: median of `--blocks` blocks of `--iterations` calls per model and shape, models interleaved block by
block, on token ids of the given lengths; run it on an otherwise idle machine (nothing is timed while training).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path


from kdqat.export.peer import peer_graph
from kdqat.embedding import SentenceEmbedder
from kdqat.eval.embedding_quality import KNN_K, embedder, knn_accuracy, labelled_texts, sts_spearman, stsb_pairs
from kdqat.objectives import objective_of
from kdqat.objectives.embedding import Embedding
from kdqat.export.sizes import float_bytes
from kdqat.io import write_json
from kdqat.models import load_tokenizer, resolve_model
from kdqat.run_dir import open_run
from kdqat.runtime.cpu_info import cpu_info, describe
from kdqat.runtime.ort_engine import OrtEngine
from kdqat.runtime.torch_engine import TorchEngine
from kdqat.runtime.timing import block_ms, random_batch


def quality(embed, sts, clinc) -> dict[str, float]:
    a, b, gold = sts
    out = {"stsb_spearman": sts_spearman(embed, a, b, gold)}
    if clinc is not None:
        out["clinc_knn_accuracy"] = knn_accuracy(embed, *clinc, k=KNN_K)
    return out


def latency(engines: dict, shapes: list[tuple[int, int]], blocks: int, iterations: int, vocab: int) -> list[dict]:
    rows = []
    for batch, seq in shapes:
        inputs = random_batch(batch, seq, vocab, special=(101, 102))
        for engine in engines.values():
            engine.run(inputs)  # warm up
        times: dict[str, list[float]] = {name: [] for name in engines}
        for _ in range(blocks):  # interleaved: a slow phase of the machine hits every model alike
            for name, engine in engines.items():
                times[name].append(block_ms(engine.run, inputs, iterations))
        for name, t in times.items():
            rows.append({"model": name, "batch": batch, "seq": seq, "median_ms": statistics.median(t),
                         "min_ms": min(t), "blocks": blocks, "iterations": iterations})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True, help="exported embedding runs (kdqat export RUN first)")
    parser.add_argument("--data-dir", help="GLUE_DIR with STS-B/dev.tsv (default: GLUE_DIR)")
    parser.add_argument("--clinc", help="folder with CLINC150 train.csv and test.csv (kNN accuracy)")
    parser.add_argument("--latency", action="store_true", help="time the float model, the peer and the first run's student")
    parser.add_argument("--shapes", default="1x32,1x128,8x128,32x128", help="batch x sequence shapes for --latency")
    parser.add_argument("--blocks", type=int, default=9)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--split", choices=("test", "validation"), default="test",
                        help="test: STS-B dev, CLINC150 test.csv (reported once); validation: STS-B train pairs, "
                             "CLINC150 validation.csv (for choosing)")
    parser.add_argument("--students-only", action="store_true",
                        help="quality of the runs' students only (the float model and the peer scored in another call)")
    parser.add_argument("--output", required=True, help="JSON file for the results")
    args = parser.parse_args(argv)

    runs = [open_run(r) for r in args.runs]
    if any(objective_of(r.spec).labelled for r in runs):
        sys.exit("every --runs folder must be an embedding run (kdqat train --objective embedding)")
    models = {r.options["model"] for r in runs}
    if len(models) != 1:
        sys.exit(f"the runs distil different float models ({', '.join(sorted(models))}); compare one at a time")
    float_dir = resolve_model(models.pop())
    float_model = SentenceEmbedder.from_pretrained(float_dir)
    tokenizer = load_tokenizer(float_dir)
    length = runs[0].max_seq_length
    result: dict = {"float_model": float_dir, "max_seq_length": length, "threads": args.threads,
                    "cpu": describe(cpu_info()), "python": platform.python_version()}
    with tempfile.TemporaryDirectory() as scratch:
        peer_path, peer_record = peer_graph(float_model, Path(scratch), Embedding.onnx_output)
        result["peer"] = peer_record
        engines = {"float (PyTorch fp32)": TorchEngine(float_model),
                   "peer (onnxruntime dynamic int8)": OrtEngine(peer_path, threads=args.threads, cpu_rewrites=False)}
        students = {str(r.root): OrtEngine(r.root / "onnx" / "model.onnx", threads=args.threads) for r in runs}
        result["sizes"] = {"float_bytes": float_bytes(float_model), "peer_bytes": peer_record["bytes"],
                           "students": {}}
        for r in runs:
            export = json.loads((r.root / "onnx" / "export.json").read_text())
            result["sizes"]["students"][str(r.root)] = {"packed_bytes": export["graphs"]["packed"]["bytes"],
                                                        "packed_compression": export["sizes"]["packed_compression"]}
        if args.latency:
            shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
            timed_engines = {**engines, f"student W2/A8 (onnxruntime) {runs[0].root}": students[str(runs[0].root)]}
            result["latency"] = latency(timed_engines, shapes, args.blocks, args.iterations, tokenizer.vocab_size)
            for row in result["latency"]:
                print(f"{row['model'][:60]:60s} {row['batch']:>3d} x {row['seq']:<4d} {row['median_ms']:8.2f} ms")
        else:
            validation = args.split == "validation"
            sts = stsb_pairs(args.data_dir, "train" if validation else "dev")
            clinc = None
            if args.clinc:
                clinc = (*labelled_texts(Path(args.clinc) / "train.csv", "--clinc"),
                         *labelled_texts(Path(args.clinc) / ("validation.csv" if validation else "test.csv"), "--clinc"))
            result["quality"] = {}
            scored = {**({} if args.students_only else engines), **students}
            for name, engine in scored.items():
                result["quality"][name] = quality(embedder(engine.run, tokenizer, length, 64), sts, clinc)
                print(f"{name[:70]:70s} " + "  ".join(f"{k} {v:.2f}" for k, v in result["quality"][name].items()),
                      flush=True)
    write_json(Path(args.output), {**result, "args": vars(args)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
