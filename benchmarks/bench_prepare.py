"""Benchmark of the prepare stage (irrelevance + masking + rendering [+ tokenization]) against a
straightforward per-row Python implementation, measured in the same run.

Data: ``hammer synth`` xLAM-shaped rows (1-5 tools of 1-5 parameters, ~2.2 KB a row as xLAM
JSON), normalized to canonical rows and written once to an examples artifact (cached in
``$TMPDIR/hammer-bench``; not timed).

Each measurement runs in a fresh subprocess and times only the work (imports excluded):
read ``examples.parquet`` -> split -> irrelevance -> masking -> rendering [-> tokens] -> write
Parquet. Rows/s count *input* rows (the output has ~1.1x that per copy). CPU is user+system
of the process and its workers; peak RSS is the largest process's.
The compiled stage and the I/O floor run ``--repeat`` times (default 3; the run of median time
is reported, every run's seconds beside it); the slower baselines run once.

* ``per-row``: the baseline -- one row at a time: ``json.loads`` the tools, mask them with a
  ``random.Random`` per row, ``json.dumps`` them back, render the prompt with ``json.dumps``,
  tokenize whole prompts (the tokenizer called on lists), write Parquet.
* ``prepare (python)``: :func:`hammer_core.data.prepare.prepare` on its pure-Python path
  (``HAMMER_FASTPREP=0``; ``tokenize=False`` for the render-only rows).
* ``prepare (compiled)``: the same stage with the C kernel (``hammer_core.data.compiled._fastprep``); the
  artifacts are byte-identical to the Python path's (the train hashes are in the JSON below).
* ``parquet copy (I/O floor)`` (render-only rows): no work at all -- the input read the way
  the stage reads it and written unchanged the way the stage writes ``train.parquet``. No
  implementation of the stage can beat it on the same machine (the stage also writes ~1.1x
  the rows, plus ``eval.parquet``).

Usage::

    .venv/bin/python benchmarks/bench_prepare.py                      # 60k and 1M rows
    .venv/bin/python benchmarks/bench_prepare.py --rows 60000         # 60k only
    .venv/bin/python benchmarks/bench_prepare.py --rows 1000000 --impl compiled --no-baseline \
        --append                                                       # add 1M compiled rows

To benchmark another corpus, ingest it (``hammer ingest``) and pass ``--examples PATH`` to the
prepare runs; the synthetic corpus comes from :func:`hammer_core.data.synth.synth_rows`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.machine import machine  # noqa: E402
RESULTS = REPO / "benchmarks" / "results" / "prepare.md"
CACHE = Path(tempfile.gettempdir()) / "hammer-bench"


# --------------------------------------------------------------------------- data

def corpus(rows: int) -> Path:
    """The canonical examples artifact of ``rows`` synthetic rows (built once, cached)."""
    from hammer_core.artifacts import ArtifactWriter
    from hammer_core.data.formats.xlam import normalize_xlam
    from hammer_core.schema import EXAMPLE_SCHEMA, examples_table
    from hammer_core.data.synth import synth_rows

    path = CACHE / f"synth-{rows}" / "examples.parquet"
    if path.exists():
        return path
    with ArtifactWriter(path, EXAMPLE_SCHEMA, kind="examples") as w:
        batch = []
        for i, rec in enumerate(synth_rows(rows, seed=0)):
            batch.append(normalize_xlam(rec, source="synth", task=("a", "b")[i % 2], index=i))
            if len(batch) == 65_536:
                w.write_table(examples_table(batch))
                batch = []
        if batch:
            w.write_table(examples_table(batch))
    return path


# --------------------------------------------------------------------------- the baseline

def baseline(examples: Path, out: Path, tokenize: bool) -> dict:
    """The straightforward per-row implementation (Hammer's public script, plus the same
    split, irrelevance and Parquet output as the stage)."""
    import hashlib
    import re
    import string

    import pyarrow as pa
    import pyarrow.parquet as pq

    from hammer_core.data.prompts import FORMAT_INSTRUCTION, TASK_INSTRUCTION, tools_for_prompt
    from hammer_core.schema import dumps, examples_table

    alphabet = string.ascii_letters + "_." + string.digits

    def is_eval(rid: str) -> bool:
        return int.from_bytes(hashlib.sha256(f"0:split:{rid}".encode()).digest()[:8], "big") / 2**64 < 0.1

    def irrelevance(rows: list[dict]) -> list[dict]:
        want = round(0.1 * len(rows) / 0.9)
        out = []
        for r in sorted(rows, key=lambda r: hashlib.sha256(f"0:irr:{r['id']}".encode()).digest()):
            calls, tools = json.loads(r["calls"]), json.loads(r["tools"])
            gold = {c["name"] for c in calls}
            kept = [t for t in tools if t["name"] not in gold]
            if calls and kept:
                out.append({**r, "id": r["id"] + "~irr", "tools": dumps(kept), "calls": "[]",
                            "parent_id": r["id"], "variant": "irrelevance"})
                if len(out) == want:
                    break
        return out

    def name(rng: random.Random, lo: int, hi: int) -> str:
        return "".join(rng.choices(alphabet, k=rng.randint(lo, hi)))

    def mask(r: dict) -> dict:
        rng = random.Random(f"0:{r['id']}")
        if rng.random() >= 2 / 3:
            return r
        tools, calls = json.loads(r["tools"]), json.loads(r["calls"])
        query = r["messages"][-1]["content"]
        rng.shuffle(tools)
        for t in tools:
            old, t["name"] = t["name"], name(rng, 5, 15)
            mine = [c for c in calls if c["name"] == old]
            for c in mine:
                c["name"] = t["name"]
            props, new_props, renamed = t["parameters"]["properties"], {}, {}
            for p, spec in props.items():
                renamed[p] = new = name(rng, 4, 10)
                d = spec.get("default")
                if d not in (None, "") and not isinstance(d, (list, dict, bool)) and \
                        any(str(c["arguments"].get(p)) == str(d) for c in mine):
                    nd = d + rng.randint(1, 4) if isinstance(d, int) else d + rng.random() \
                        if isinstance(d, float) else name(rng, 5, 5)
                    spec["default"] = nd
                    spec["description"] = spec.get("description", "").replace(str(d), str(nd))
                    query = re.sub(rf"\b{re.escape(str(d))}\b", str(nd), query)
                    for c in mine:
                        if str(c["arguments"].get(p)) == str(d):
                            c["arguments"][p] = nd
                new_props[new] = spec
            t["parameters"]["properties"] = new_props
            t["parameters"]["required"] = [renamed[p] for p in t["parameters"].get("required", [])]
            for c in mine:
                c["arguments"] = {renamed[k]: v for k, v in c["arguments"].items()}
        return {**r, "id": r["id"] + "~m0", "tools": dumps(tools), "calls": dumps(calls),
                "messages": [*r["messages"][:-1], {"role": "user", "content": query}],
                "parent_id": r["id"], "variant": r["variant"] + "+masked"}

    def prompt(r: dict) -> str:
        return (f"[BEGIN OF TASK INSTRUCTION]\n{TASK_INSTRUCTION}\n[END OF TASK INSTRUCTION]\n\n"
                f"[BEGIN OF AVAILABLE TOOLS]\n"
                f"{json.dumps(tools_for_prompt(json.loads(r['tools'])), ensure_ascii=False)}\n"
                f"[END OF AVAILABLE TOOLS]\n\n[BEGIN OF FORMAT INSTRUCTION]\n{FORMAT_INSTRUCTION}\n"
                f"[END OF FORMAT INSTRUCTION]\n\n[BEGIN OF QUERY]\n{r['messages'][-1]['content']}\n[END OF QUERY]\n\n")

    tokenizer = None
    if tokenize:
        from hammer_core.model.tokenizer import load_tiny_tokenizer
        tokenizer = load_tiny_tokenizer()
    work_cpu_start()
    start = time.perf_counter()
    rows = pq.read_table(examples).to_pylist()
    train = [r for r in rows if not is_eval(r["id"])]
    mix = [mask(r) for r in train + irrelevance(train)]
    prompts = [prompt(r) for r in mix]
    targets = ["```\n" + json.dumps(json.loads(r["calls"]), ensure_ascii=False) + "\n```" for r in mix]
    pq.write_table(examples_table(mix), out / "train.parquet", compression="zstd")
    if tokenizer is not None:
        wrapped = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                 add_generation_prompt=True) for p in prompts]
        ids = [a + b + [tokenizer.eos_token_id] for a, b in
               zip(tokenizer(wrapped, add_special_tokens=False)["input_ids"],
                   tokenizer(targets, add_special_tokens=False)["input_ids"])]
        pq.write_table(pa.table({"id": [r["id"] for r in mix], "input_ids": ids}), out / "tokens.parquet",
                       compression="zstd")
    return {"seconds": time.perf_counter() - start, "input_rows": len(rows), "output_rows": len(mix)}


# --------------------------------------------------------------------------- the I/O floor

def copy_floor(examples: Path, out: Path) -> dict:
    """The Parquet I/O alone: read ``examples.parquet`` the way the stage reads it (blocks, read
    ahead on a thread) and write every row unchanged the way the stage writes ``train.parquet``
    (row groups on a writer thread, the same encodings, compression, hashing and manifest).
    No split, no masking, no rendering: no implementation of the stage with this input and
    output can be faster than this on the same machine."""
    from hammer_core.artifacts import open_artifact
    from hammer_core.data.prepare.blockio import _blocks, _output_writer
    from hammer_core.schema import EXAMPLE_SCHEMA

    art = open_artifact(examples)
    work_cpu_start()
    start = time.perf_counter()
    w = _output_writer(out / "train.parquet", EXAMPLE_SCHEMA, "examples", [art])
    n = 0
    for _, table in _blocks(examples):
        w.add(table)
        n += table.num_rows
    w.finish()
    return {"seconds": time.perf_counter() - start, "input_rows": n, "output_rows": n}


# --------------------------------------------------------------------------- the stage

def stage(examples: Path, out: Path, tokenize: bool, overrides: list[str]) -> dict:
    from hammer_core.artifacts import open_artifact
    from hammer_core.config import apply_overrides, config_from_dict
    from hammer_core.data.prepare import prepare

    raw = apply_overrides({"seed": 0, "output_dir": str(out), "prepare": {
        "irrelevance_ratio": 0.1, "hard_negative_ratio": 0.0, "mask_prob": 2 / 3, "copies": 1,
        "max_length": 4096}}, overrides)
    cfg = config_from_dict(raw)
    from hammer_core.model.tokenizer import load_tokenizer
    if tokenize:
        load_tokenizer(cfg.model)  # imports (torch, transformers) are not timed
    art = open_artifact(examples)
    work_cpu_start()
    start = time.perf_counter()
    tokenizer = load_tokenizer(cfg.model) if tokenize else None  # timed, as the stage loads it
    res = prepare(cfg, art, out, tokenize=tokenize, tokenizer=tokenizer)
    seconds = time.perf_counter() - start
    s = res.summary
    return {"seconds": seconds, "input_rows": s["input_rows"], "output_rows": s["train"]["rows"] + s["eval"]["rows"],
            "tokenization": s["tokenization"], "train_hash": res.train.content_hash}


_CPU0: list[float] = []


def work_cpu_start() -> None:
    """Mark the start of the timed work (CPU of this process and its reaped children from here)."""
    _CPU0[:] = [_cpu_now()]


def _cpu_now() -> float:
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def _preload() -> None:
    """Imports are not timed: pyarrow imports pandas (when installed, ~0.3 s) on its first
    ``pa.array`` call, so that import is made here, before the clock starts, for every
    implementation alike."""
    import pyarrow as pa
    pa.array([0])


def child(args: argparse.Namespace) -> None:
    spec = json.loads(args.child)
    _preload()
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        if spec["kind"] == "per-row":
            out = baseline(Path(spec["examples"]), Path(tmp), spec["tokenize"])
        elif spec["kind"] == "parquet copy":
            out = copy_floor(Path(spec["examples"]), Path(tmp))
        else:
            out = stage(Path(spec["examples"]), Path(tmp), spec["tokenize"], spec["overrides"])
    out["work_cpu_seconds"] = round(_cpu_now() - _CPU0[0], 1)  # the timed work only (workers included)
    self_, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    out["peak_rss_mb"] = round(max(self_.ru_maxrss, kids.ru_maxrss) / 1024)
    print("RESULT " + json.dumps(out))


def run_median(repeat: int, *args: Any, **kwargs: Any) -> dict:
    """:func:`run` ``repeat`` times: the run of median wall-clock time, with every run's seconds
    (``runs``). The box is shared: one run can be 20 % off; the median of three rarely is."""
    results = sorted((run(*args, **kwargs) for _ in range(repeat)), key=lambda r: r["seconds"])
    median = dict(results[len(results) // 2])
    median["runs"] = [round(r["seconds"], 2) for r in results]
    return median


def run(kind: str, examples: Path, tokenize: bool, overrides: list[str] | None = None,
        fast: bool = True) -> dict:
    spec = {"kind": kind, "examples": str(examples), "tokenize": tokenize, "overrides": overrides or []}
    before = os.times()
    load = os.getloadavg()[0]
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "true", "HAMMER_FASTPREP": "1" if fast else "0"},
                          cwd=REPO)
    after = os.times()
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode or not line:
        raise RuntimeError(f"{kind} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    out = json.loads(line[0][7:])
    out["cpu_seconds"] = round((after.children_user - before.children_user)
                               + (after.children_system - before.children_system), 1)
    out["rows_per_s"] = round(out["input_rows"] / out["seconds"])
    out["output_rows_per_s"] = round(out["output_rows"] / out["seconds"])
    out["rows_per_cpu_s"] = round(out["input_rows"] / max(out["work_cpu_seconds"], 1e-9))
    out["load_avg"] = [round(load, 2), round(os.getloadavg()[0], 2)]  # 1-min load average before / after
    return out


# --------------------------------------------------------------------------- report


def markdown(results: list[dict], info: dict) -> str:
    lines = ["# Prepare-stage benchmark (irrelevance + masking + rendering [+ tokens], Parquet in and out)", "",
             f"Machine: {info['arch']}, {info['nproc']} cores, {info['cpu']}; Python {info['python']}, "
             f"torch {info['torch']}; {info['date']} (load average at start, 1/5/15 min: {info['load_avg_at_start']}).",
             "", "Rows/s are input rows per wall-clock second, from reading examples.parquet to the last byte "
             "written (imports excluded); work CPU s is the CPU time of that same stretch, the process and "
             "its workers (``cpu_seconds`` in the JSON also counts the imports and the tokenizer load). "
             "The speedup is against the per-row baseline on the same rows and "
             "settings, measured in the same run, per output row (copies 3 writes 3x the rows from the same input). "
             "Generated by `benchmarks/bench_prepare.py`.", "",
             "| rows | tokens | implementation | settings | seconds | runs (s) | rows/s | output rows/s | work CPU s "
             "| input rows / work CPU s | load before/after | peak RSS MB | vs per-row | vs python |",
             "|---:|:---:|---|---|---:|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    for r in results:
        load = r.get("load_avg", ["", ""])
        lines.append(f"| {r['rows']:,} | {'yes' if r['tokenize'] else 'no'} | {r['kind']} | {r['settings']} | "
                     f"{r['seconds']:.1f} | {' / '.join(f'{x:.1f}' for x in r.get('runs', []))} | "
                     f"{r['rows_per_s']:,} | {r['output_rows_per_s']:,} | {r.get('work_cpu_seconds', '')} | "
                     f"{r.get('rows_per_cpu_s', '')} | {load[0]} / {load[1]} | {r['peak_rss_mb']:,} | "
                     f"{r.get('speedup', '')} | {r.get('vs_python', '')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[60_000, 1_000_000])
    ap.add_argument("--baseline-max", type=int, default=60_000,
                    help="the per-row baseline runs on at most this many rows (its rows/s is the same)")
    ap.add_argument("--baseline-tokens-max", type=int, default=10_000)
    ap.add_argument("--impl", nargs="+", choices=["python", "compiled"], default=["python", "compiled"],
                    help="which prepare paths to run (the compiled one needs the built extension)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the per-row baseline")
    ap.add_argument("--no-floor", action="store_true",
                    help="skip the Parquet copy (read + write, no work) that bounds any implementation")
    ap.add_argument("--tokens", choices=["both", "no", "yes"], default="both")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of the compiled stage and the I/O floor (the median is reported); the "
                         "baselines run once")
    ap.add_argument("--append", action="store_true", help="add to the results in --out instead of replacing them")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    CACHE.mkdir(parents=True, exist_ok=True)
    info = machine()
    results: list[dict] = []
    if args.append and args.out.exists():
        text = args.out.read_text()
        old = json.loads(text[text.index("```json") + 7: text.rindex("```")])
        results = old["results"]
        info = {**old["machine"], "appended": [*old["machine"].get("appended", []), machine()]}

    def record(rows: int, kind: str, tokenize: bool, settings: str, res: dict, base: dict | None,
               python: dict | None = None) -> None:
        res.update(rows=rows, kind=kind, tokenize=tokenize, settings=settings)
        if base is not None:  # per output row: copies 3 makes 3x the rows from the same input
            res["speedup"] = f"{res['output_rows_per_s'] / base['output_rows_per_s']:.1f}x"
        if python is not None:  # the same rows and settings, the same run
            res["vs_python"] = f"{res['output_rows_per_s'] / python['output_rows_per_s']:.1f}x"
        results.append(res)
        print(json.dumps(res), flush=True)

    for rows in args.rows:
        examples = corpus(rows)
        for tokenize in {"both": (False, True), "no": (False,), "yes": (True,)}[args.tokens]:
            base = None
            if not args.no_baseline:
                cap = args.baseline_tokens_max if tokenize else args.baseline_max
                b_rows = min(rows, cap)
                base = run("per-row", corpus(b_rows), tokenize)
                record(b_rows, "per-row", tokenize, "copies 1", base, None)
            if not tokenize and not args.no_floor:  # the ceiling the Parquet I/O alone sets
                record(rows, "parquet copy (I/O floor)", tokenize, "read + write, no work",
                       run_median(args.repeat, "parquet copy", examples, tokenize), None)
            variants = [("copies 1", ["prepare.copies=1"])]
            large = rows > 200_000  # the long runs: the main settings only
            if tokenize:
                variants += [] if large else [("copies 3 (Hammer)", ["prepare.copies=3"])]
                variants += [("copies 3, name pool 65536", ["prepare.copies=3", "prepare.name_pool_size=65536"])]
            else:  # the other codec (the same rows; the Python path's rows/s barely change with it)
                variants += [("copies 1, lz4 outputs", ["prepare.copies=1", "prepare.compression=lz4"])]
            if not large:
                variants += [("copies 1, hard negatives 3%", ["prepare.copies=1", "prepare.hard_negative_ratio=0.03"])]
            for settings, overrides in variants:
                python = None
                if "python" in args.impl and "lz4" not in settings:
                    python = run("prepare", examples, tokenize, overrides, fast=False)
                    record(rows, "prepare (python)", tokenize, settings, python, base)
                if "compiled" in args.impl:
                    res = run_median(args.repeat, "prepare", examples, tokenize, overrides, fast=True)
                    record(rows, "prepare (compiled)", tokenize, settings, res, base, python)
    payload = {"machine": info, "results": results}
    notes = ""  # the hand-written reading of the numbers, kept across runs
    if args.out.exists():
        old_text = args.out.read_text()
        if "## Reading these numbers" in old_text and "```json" in old_text:
            notes = "\n" + old_text[old_text.index("## Reading these numbers"): old_text.index("```json")].rstrip() + "\n"
    md = markdown(results, info) + notes + "\n```json\n" + json.dumps(payload, indent=1) + "\n```\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(md)
    print(md)


if __name__ == "__main__":
    main()
