"""Load on `kdqat serve` over real HTTP, against the engine alone on the same inputs.

    python benchmarks/serve_load.py RUN_DIR [--inputs equal,varied] [--concurrency 32] [--duration 10]
        [--modes off,on:8,on:32] [--texts FILE.txt] [--engine ort|openvino] [--output docs/results/serve/load.json]

How the load is produced: `wrk` (a C load generator, `apt-get install wrk`), one thread, `--concurrency` open
connections, each request one input (a text, or a [text_a, text_b] pair) taken in turn from the set, for
`--duration` seconds or `--max-requests` answers, whichever comes first. wrk's and the server's CPU use are read
from /proc and printed beside every row, so that what the load generator took from the server's cores is on the
record. The inputs: the run's dev data (or `--texts`, one text per line); `varied` sends them as they come,
`equal` only those of the most common token length.

The engine alone: the same inputs (repeated to `--count`), tokenized once, through the same onnxruntime graph in
this process, in batches of `--engine-batch` sorted by length over the whole set: the throughput a server of this
engine could reach; timed again right before each server starts (no server running then), since a shared
machine's speed drifts over minutes. The ratio server / engine (that mode's reference: one call at a time on all
the cores, as `kdqat bench` runs it) is the figure of merit. Beside it, the engine alone as the server runs it by
default on a CPU (two calls at once, each on half the cores; on 2 cores that is faster for short inputs) and the
server's ratio to that. Nothing else should run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

WRK_SCRIPT = """
local bodies = {}
for line in io.lines("%(bodies)s") do bodies[#bodies + 1] = line end
local i, done, limit = 0, 0, %(limit)d
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i %% #bodies + 1
  return wrk.format(nil, "%(path)s", nil, bodies[i])
end
response = function(status, headers, body)
  done = done + 1
  if done >= limit then wrk.thread:stop() end
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dev_inputs(run: Path, n: int) -> list:
    """Up to n inputs (texts, or [a, b] pairs) of the run's dev data (GLUE: GLUE_DIR; your data: its validation
    split)."""
    from kdqat.run_dir import open_run

    opened = open_run(run)
    source = opened.data_source(os.environ.get("GLUE_DIR") if opened.spec.source == "glue" else None)
    dev = source.load(opened.spec.dev_splits[0], n)
    if opened.spec.pair:
        return [[a, b] for a, b in zip(dev["text_a"], dev["text_b"])]
    return list(dev["text_a"])


def input_sets(run: Path, model, kinds: list[str], texts: Path | None, n: int) -> dict[str, list]:
    """`varied`: n inputs as they come; `equal`: those of the most common token length (as the server cuts them)."""
    pool = ([line.strip() for line in texts.read_text().splitlines() if line.strip()] if texts else dev_inputs(run, 4 * n))
    lengths = [len(ids) for ids in model.encode(pool)["input_ids"]]
    mode = collections.Counter(lengths).most_common(1)[0][0]
    sets = {"varied": pool[:n], "equal": [x for x, k in zip(pool, lengths) if k == mode][:n]}
    return {k: sets[k] for k in kinds}


def engine_throughput(model, inputs: list, count: int, batch: int, passes: int, calls: int = 1) -> dict:
    """Inputs per second of the engine alone over `inputs` (repeated to `count`, as the server sees them in turn)
    in batches of `batch` sorted by length: the median of `passes` passes. `calls` above 1: that many batches run
    at once from as many threads (give an engine with that share of the cores per call)."""
    from concurrent.futures import ThreadPoolExecutor

    from kdqat.runtime.batching import batches

    inputs = (inputs * (count // len(inputs) + 1))[:count]
    features = model.encode(inputs)
    padded = [b for _, b in batches(features, batch)]
    with ThreadPoolExecutor(calls) as pool:
        list(pool.map(model.engine.run, padded))  # warm up
        times = []
        for _ in range(passes):
            start = time.perf_counter()
            list(pool.map(model.engine.run, padded))
            times.append(time.perf_counter() - start)
    lengths = [len(x) for x in features["input_ids"]]
    return {"inputs_per_s": len(inputs) / statistics.median(times), "batch": batch, "passes": passes, "calls": calls,
            "mean_tokens": statistics.mean(lengths), "min_tokens": min(lengths), "max_tokens": max(lengths)}


def start_server(run: Path, options: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "kdqat.cli", "serve", str(run), "--host", "127.0.0.1", "--port", str(port), *options]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited: {process.stderr.read()}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    process.terminate()
    raise SystemExit("the server did not become ready in 300 s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its living descendants (a server's worker processes)."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += cpu_seconds(p)
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()
    return float(number) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def run_wrk(url: str, path: str, bodies: Path, concurrency: int, duration: float, limit: int, server_pid: int) -> dict:
    """One wrk run; its requests/s, latency percentiles, errors, and the CPU wrk and the server used."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_SCRIPT % {"bodies": bodies, "limit": limit, "path": path})
        script = f.name
    cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{duration:g}s", "--latency", "--timeout", "30s", "-s", script, url]
    server_before, start = tree_cpu_seconds(server_pid), time.perf_counter()
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wrk_cpu = 0.0
    while process.poll() is None:  # the last reading before wrk exits: its CPU seconds so far
        try:
            wrk_cpu = cpu_seconds(process.pid)
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(0.05)
    out = process.communicate()[0]
    wall = time.perf_counter() - start
    server_cpu = tree_cpu_seconds(server_pid) - server_before
    os.unlink(script)
    if process.returncode != 0:
        raise SystemExit(f"wrk failed: {out}")
    percentiles = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)$", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)$", out, re.M)
    return {"requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "requests": int(re.search(r"(\d+) requests in", out).group(1)),
            "p50_ms": _ms(percentiles["50"]), "p90_ms": _ms(percentiles["90"]), "p99_ms": _ms(percentiles["99"]),
            "non_2xx": int(errors.group(1)) if errors else 0, "socket_errors": socket_errors.group(1) if socket_errors else "",
            "wrk_cpu_cores": wrk_cpu / wall, "server_cpu_cores": server_cpu / wall, "wall_s": wall}


def counters(url: str) -> dict[str, float]:
    """The server's cumulative engine, tokenizer and batch figures (its /metrics)."""
    wanted = ("kdqat_engine_seconds_sum", "kdqat_engine_seconds_count", "kdqat_tokenize_seconds_sum",
              "kdqat_batch_size_sum", "kdqat_queue_seconds_sum", "kdqat_queue_seconds_count")
    out = dict.fromkeys(wanted, 0.0)
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        name, _, value = line.partition(" ")
        if name in out:
            out[name] = float(value)
    return out


def where_time_goes(before: dict, after: dict, wall: float) -> dict:
    """Over one load run: the share of the wall time the engine and the tokenizer were busy, inputs per engine
    call, and the mean time a request queued."""
    d = {k: after[k] - before[k] for k in before}
    calls, requests = d["kdqat_engine_seconds_count"], d["kdqat_queue_seconds_count"]
    return {"engine_busy": d["kdqat_engine_seconds_sum"] / wall, "tokenizer_busy": d["kdqat_tokenize_seconds_sum"] / wall,
            "inputs_per_engine_call": d["kdqat_batch_size_sum"] / calls if calls else 0.0,
            "queued_ms": 1000 * d["kdqat_queue_seconds_sum"] / requests if requests else 0.0}


CATEGORIES = (  # the innermost frame of a sampled stack that one of these matches says where its time went
    ("engine", ("onnxruntime_inference_collection", "torch_engine", "trt_engine")),
    ("tokenizer", ("tokenization_utils", "tokenizers", "served_model.py:")),
    ("json", ("json/",)),
    ("metrics", ("prometheus_client",)),
    ("http", ("uvicorn", "httptools")),
    ("framework", ("fastapi", "starlette")),
    ("server code", ("kdqat/runtime/", "runtime/server.py", "runtime/batcher.py", "runtime/batching.py")),
    ("event loop", ("asyncio", "uvloop", "concurrent/futures", "threading.py")),
)


def profile_server(pid: int, seconds: float, raw: Path) -> subprocess.Popen:
    """Start sampling the server with py-spy (every thread, 200 Hz, without pausing it) into `raw`."""
    return subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--subprocesses", "--format", "raw", "--rate", "200",
                             "--duration", str(max(1, int(seconds))), "--nonblocking", "--output", str(raw)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def time_shares(raw: Path) -> dict[str, float]:
    """Share of the server's busy samples per category (py-spy leaves idle waits out)."""
    counts: collections.Counter = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        name = next((c for frame in reversed(stack.split(";")) for c, keys in CATEGORIES if any(k in frame for k in keys)),
                    "other")
        counts[name] += int(n)
    total = sum(counts.values()) or 1
    return {name: counts[name] / total for name, _ in (*CATEGORIES, ("other", ()))}


def mode_options(mode: str) -> list[str]:
    """off -> --no-batching; on:N[:MS[:C]] -> --batching --max-batch-size N [--max-wait-ms MS] [--engine-calls C];
    default -> nothing; a trailing /C on any of them (off/1) sets --engine-calls C, a trailing @W (default@1,
    on:32/2@1) --workers W (server processes)."""
    mode, _, workers = mode.partition("@")
    mode, _, calls = mode.partition("/")
    if workers and not workers.isdigit():
        raise SystemExit(f"--modes: @{workers} is not a number of server processes")
    extra = (["--engine-calls", calls] if calls.isdigit() else []) + (["--workers", workers] if workers else [])
    parts = mode.split(":")
    if mode in ("off", "default"):
        return (["--no-batching"] if mode == "off" else []) + extra
    if parts[0] == "on" and len(parts) in (2, 3, 4) and all(p.replace(".", "", 1).isdigit() for p in parts[1:]):
        return ["--batching", "--max-batch-size", parts[1], *(["--max-wait-ms", parts[2]] if len(parts) >= 3 else []),
                *(["--engine-calls", parts[3]] if len(parts) == 4 else []), *extra]
    raise SystemExit(f"--modes: {mode!r} is not off, default or on:N[:MS[:C]] (optionally /C)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--inputs", default="equal,varied", help="equal, varied, or both (comma-separated)")
    parser.add_argument("--texts", type=Path, help="a .txt file, one input per line, instead of the run's dev data")
    parser.add_argument("--count", type=int, default=512, help="distinct inputs per set")
    parser.add_argument("--concurrency", default="32")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--max-requests", type=int, default=50_000, help="wrk stops after this many answers")
    parser.add_argument("--modes", default="off,on:32", help="server settings: off, default, on:N[:MS[:C]] (max batch size, max wait in ms, engine calls at once); /C after any sets the engine calls, @W the server processes")
    parser.add_argument("--engine", default="ort", choices=["ort", "openvino"],
                        help="the student's CPU engine, in the server and as the reference alone")
    parser.add_argument("--engine-batch", type=int, default=32)
    parser.add_argument("--engine-passes", type=int, default=5)
    parser.add_argument("--profile", type=Path, help="sample the server with py-spy during each run: raw stacks "
                        "into this folder, and the share of its busy time per category beside each row")
    parser.add_argument("--output", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk (the load generator this benchmark uses)")
    if args.profile and shutil.which("py-spy") is None:
        raise SystemExit("--profile samples the server with py-spy: pip install py-spy")
    from kdqat.io import write_json
    from kdqat.runtime.cpu_info import cpu_info, describe

    export = json.loads((args.run_dir / "onnx" / "export.json").read_text())
    path = "/v1/embeddings" if export.get("problem_type") == "embedding" else "/v1/predict"
    from kdqat.runtime.served_model import open_served

    model = open_served(args.run_dir, args.engine)  # the engine alone, timed again before each server (the machine drifts)
    cores = os.cpu_count() or 1
    split = open_served(args.run_dir, args.engine, threads=max(1, cores // 2)) if cores >= 2 else None  # two calls at once
    sets = input_sets(args.run_dir, model, args.inputs.split(","), args.texts, args.count)
    levels = [int(c) for c in args.concurrency.split(",")]
    rows, engines, two = [], {name: [] for name in sets}, {name: [] for name in sets}
    with tempfile.TemporaryDirectory() as scratch:
        files = {}
        for name, inputs in sets.items():
            files[name] = Path(scratch) / f"{name}.jsonl"
            body = (lambda x: {"input": x}) if path == "/v1/embeddings" else (lambda x: [x])
            files[name].write_text("".join(json.dumps(body(x)) + "\n" for x in inputs))
        for mode in args.modes.split(","):
            reference = {name: engine_throughput(model, inputs, args.count, args.engine_batch, args.engine_passes)
                         for name, inputs in sets.items()}
            two_calls = {name: engine_throughput(split, inputs, args.count, args.engine_batch, args.engine_passes, 2)
                         for name, inputs in sets.items()} if split else {}
            for name, e in reference.items():
                engines[name].append(e)
                two[name].append(two_calls.get(name))
            process, url = start_server(args.run_dir, ["--engine", args.engine, *mode_options(mode)])
            try:
                for name in sets:
                    run_wrk(url, path, files[name], 8, 2, 1000, process.pid)  # warm up
                    for c in levels:
                        before = counters(url)
                        if args.profile:
                            args.profile.mkdir(parents=True, exist_ok=True)
                            raw = args.profile / f"{mode.replace(':', '-')}-{name}-c{c}.txt"
                            sampler = profile_server(process.pid, args.duration, raw)
                        result = run_wrk(url, path, files[name], c, args.duration, args.max_requests, process.pid)
                        result.update(where_time_goes(before, counters(url), result["wall_s"]))
                        if args.profile:
                            sampler.wait(60)
                            result["busy_shares"] = time_shares(raw)
                        pair = two_calls.get(name)
                        rows.append({"mode": mode, "inputs": name, "concurrency": c, **result,
                                     "engine_alone_inputs_per_s": reference[name]["inputs_per_s"],
                                     "vs_engine": result["requests_per_s"] / reference[name]["inputs_per_s"],
                                     **({"engine_two_calls_inputs_per_s": pair["inputs_per_s"],
                                         "vs_engine_two_calls": result["requests_per_s"] / pair["inputs_per_s"]}
                                        if pair else {})})
            finally:
                process.terminate()
                process.wait(60)
    print(f"{args.run_dir} ({export['task']}), engine {args.engine}, {describe(cpu_info())}; load: wrk -t1, one input "
          "per request")
    for name, timed in engines.items():
        e, speeds = timed[0], [t["inputs_per_s"] for t in timed]
        print(f"engine alone, {name} inputs ({e['min_tokens']}-{e['max_tokens']} tokens, mean {e['mean_tokens']:.1f}), "
              f"batch {e['batch']}, before each server: {', '.join(f'{v:.0f}' for v in speeds)} inputs/s"
              + ("; two calls at once on half the cores each: " + ", ".join(f"{t['inputs_per_s']:.0f}" for t in two[name])
                 if all(two[name]) else ""))
    print(f"{'mode':>9} {'inputs':>7} {'conc':>5} {'req/s':>8} {'vs engine':>9} {'vs two calls':>12} {'p50 ms':>7} "
          f"{'p99 ms':>7} {'wrk CPU':>7} {'server CPU':>10} {'engine busy':>11} {'tokenizer':>9} {'batch':>5} {'non-2xx':>7}")
    for r in rows:
        two_calls_ratio = f"{r['vs_engine_two_calls']:11.2f}x" if "vs_engine_two_calls" in r else f"{'-':>12}"
        print(f"{r['mode']:>9} {r['inputs']:>7} {r['concurrency']:>5} {r['requests_per_s']:8.1f} {r['vs_engine']:8.2f}x "
              f"{two_calls_ratio} "
              f"{r['p50_ms']:7.1f} {r['p99_ms']:7.1f} {r['wrk_cpu_cores']:7.2f} {r['server_cpu_cores']:10.2f} "
              f"{r['engine_busy']:10.0%} {r['tokenizer_busy']:8.0%} {r['inputs_per_engine_call']:5.1f} {r['non_2xx']:>7}")
        if "busy_shares" in r:
            print("        server busy time: " + ", ".join(f"{k} {v:.0%}" for k, v in r["busy_shares"].items() if v >= 0.005))
    if args.output:
        write_json(args.output, {"args": {k: str(v) for k, v in vars(args).items()}, "cpu": cpu_info(),
                                 "python": platform.python_version(), "engine_alone": engines,
                                 "engine_alone_two_calls": two, "results": rows})


if __name__ == "__main__":
    main()
