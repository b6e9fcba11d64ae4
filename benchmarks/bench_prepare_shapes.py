"""The prepare stage on corpora shaped like real ones, as a user runs it: ``hammer prepare`` with
its defaults, against the like-for-like per-row reference (Hammer's masking + prompt script, then
the same tokenizer's batch encoding: ``bench_prepare.baseline``) on the same rows, in one run.

Shapes (``benchmarks/shapes.py``): ``xlam`` (a pool of 3,600 APIs reused, typed defaults the
gold often equals, long descriptions), ``glaive`` (every row its own tools, multi-turn),
``long`` (5-13 tools a row, most used once, rows near the 2,048-token budget). Each corpus is
written in its own format and read through ``hammer ingest`` (cached in
``$TMPDIR/hammer-bench``; not timed).

Figures, per shape:

* reference and stage on the same ``--rows`` records: output rows per second (the stage writes
  ``copies`` 3 rows per training row and rejects rows over the budget; the reference writes one
  copy and rejects nothing, so rows per second of *written* rows is the like-for-like unit);
  the stage's time is the whole CLI process, imports and tokenizer load included;
* the stage alone at ``--scale`` times the rows: peak memory (the sum of the proportional set
  sizes of the stage's processes, sampled every 0.25 s) should not grow with the corpus.

Usage::

    .venv/bin/python benchmarks/bench_prepare_shapes.py                  # 20k rows, 3x for memory
    .venv/bin/python benchmarks/bench_prepare_shapes.py --shapes glaive --rows 5000 --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.machine import machine, write_section  # noqa: E402
from benchmarks.shapes import SHAPES, write_corpus  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "prepare.md"
CACHE = Path(tempfile.gettempdir()) / "hammer-bench"
HAMMER = [str(Path(sys.executable).parent / "hammer")]


def ingested(shape: str, rows: int) -> Path:
    """The ingest folder of ``rows`` raw rows of ``shape`` (built once, cached)."""
    folder = CACHE / f"shape-{shape}-{rows}"
    if (folder / "ingest" / "examples.parquet").exists():
        return folder / "ingest"
    raw = write_corpus(shape, rows, folder / f"{shape}.jsonl")
    subprocess.run([*HAMMER, "ingest", "--input", str(raw), "--out", str(folder / "ingest")], check=True,
                   capture_output=True, cwd=REPO)
    raw.unlink()
    return folder / "ingest"


def _pss(proc: psutil.Process) -> int:
    """The summed proportional set size of ``proc`` and its children, in bytes (pages shared
    by forked workers counted once)."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            for line in Path(f"/proc/{p.pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
        except (OSError, psutil.NoSuchProcess):
            pass
    return total


def timed(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``cmd``: wall seconds, CPU seconds, peak summed PSS (MB), stdout."""
    start = time.perf_counter()
    proc = psutil.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                        env={**os.environ, **(env or {})})
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.25):
            try:
                peak[0] = max(peak[0], _pss(proc))
            except psutil.NoSuchProcess:
                return

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    before = os.times()
    out, err = proc.communicate()
    seconds = time.perf_counter() - start
    after = os.times()
    done.set()
    t.join()
    if proc.returncode:
        raise RuntimeError(f"{cmd} failed:\n{out[-2000:]}\n{err[-3000:]}")
    return {"seconds": seconds, "stdout": out, "peak_mb": peak[0] / 2**20,
            "cpu_seconds": (after.children_user - before.children_user)
            + (after.children_system - before.children_system)}


def reference(examples: Path) -> dict[str, Any]:
    """bench_prepare's per-row baseline with tokens, in a fresh process (work timed inside)."""
    spec = {"kind": "per-row", "examples": str(examples), "tokenize": True, "overrides": []}
    res = timed([sys.executable, str(REPO / "benchmarks" / "bench_prepare.py"), "--child", json.dumps(spec)],
                env={"TOKENIZERS_PARALLELISM": "true"})
    line = [x for x in res["stdout"].splitlines() if x.startswith("RESULT ")][0]
    out = json.loads(line[7:])
    out["peak_mb"] = res["peak_mb"]
    return out


def stage(folder: Path, out: Path, compiled: bool = True) -> dict[str, Any]:
    """``hammer prepare`` with its defaults, timed as a whole process (``compiled=False``: its
    pure-Python path, ``HAMMER_FASTPREP=0``)."""
    res = timed([*HAMMER, "prepare", "--input", str(folder), "--out", str(out)],
                env={"HAMMER_FASTPREP": "1" if compiled else "0"})
    summary = json.loads(res["stdout"].strip().splitlines()[-1])
    res["output_rows"] = summary["train"]["rows"] + summary["eval"]["rows"]
    res["rejected"] = summary["rejected_too_long"]
    res["input_rows"] = summary["input_rows"]
    res["train_hash"] = json.loads((out / "train.manifest.json").read_text()).get("content_hash")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=SHAPES)
    ap.add_argument("--rows", type=int, default=20_000, help="raw records per shape")
    ap.add_argument("--scale", type=int, default=3, help="memory check at this multiple of --rows (0: skip)")
    ap.add_argument("--no-write", action="store_true", help=f"do not update {RESULTS.name}")
    ap.add_argument("--python", action="store_true", help="also time the stage's pure-Python path (HAMMER_FASTPREP=0)")
    ap.add_argument("--no-reference", action="store_true", help="the stage only (a memory check); implies --no-write")
    args = ap.parse_args()
    info = machine()
    lines = []
    for shape in args.shapes:
        folder = ingested(shape, args.rows)
        ref = reference(folder / "examples.parquet") if not args.no_reference else {"output_rows": 1, "seconds": 1.0,
                                                                                  "peak_mb": 0}
        with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
            ours = stage(folder, Path(tmp) / "out")
        python = None
        if args.python:
            with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
                python = stage(folder, Path(tmp) / "out", compiled=False)
        big = None
        if args.scale > 1:
            big_folder = ingested(shape, args.rows * args.scale)
            with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
                big = stage(big_folder, Path(tmp) / "out")
        ref_rate = ref["output_rows"] / ref["seconds"]
        our_rate = ours["output_rows"] / ours["seconds"]
        row = {"shape": shape, "records": args.rows, "examples": ours["input_rows"],
               "reference_s": round(ref["seconds"], 1), "reference_rows": ref["output_rows"],
               "reference_rows_per_s": round(ref_rate), "reference_peak_mb": round(ref["peak_mb"]),
               "stage_s": round(ours["seconds"], 1), "stage_rows": ours["output_rows"], "rejected": ours["rejected"],
               "stage_rows_per_s": round(our_rate), "ratio": round(our_rate / ref_rate, 2),
               "stage_peak_mb": round(ours["peak_mb"]), "train_hash": ours["train_hash"]}
        if python is not None:
            row.update({"python_s": round(python["seconds"], 1),
                        "python_rows_per_s": round(python["output_rows"] / python["seconds"]),
                        "python_same_bytes": python["train_hash"] == ours["train_hash"]})
        if big is not None:
            row.update({"big_examples": big["input_rows"], "big_s": round(big["seconds"], 1),
                        "big_rows_per_s": round(big["output_rows"] / big["seconds"]),
                        "big_peak_mb": round(big["peak_mb"]),
                        "memory_growth": round(big["peak_mb"] / ours["peak_mb"], 2)})
        print(json.dumps(row), flush=True)
        lines.append(row)
    if not (args.no_write or args.no_reference):
        write(lines, info, args)


def write(rows: list[dict[str, Any]], info: dict[str, Any], args: argparse.Namespace) -> None:
    table = ["| shape | records -> examples | reference: output rows/s (s, peak MB) | `hammer prepare`: output rows/s "
             "(s, rows written, rejected over budget) | ratio | stage peak MB | "
             f"at {args.scale}x: examples, output rows/s, peak MB (growth) | Python path: output rows/s (same bytes) |",
             "|---|---|---|---|---:|---:|---|---|"]
    for r in rows:
        big = (f"{r['big_examples']:,}, {r['big_rows_per_s']:,}, {r['big_peak_mb']:,} ({r['memory_growth']}x)"
               if "big_s" in r else "")
        table.append(f"| {r['shape']} | {r['records']:,} -> {r['examples']:,} | {r['reference_rows_per_s']:,} "
                     f"({r['reference_s']} s, {r['reference_peak_mb']:,}) | {r['stage_rows_per_s']:,} ({r['stage_s']} s, "
                     f"{r['stage_rows']:,}, {r['rejected']:,}) | **{r['ratio']}x** | {r['stage_peak_mb']:,} | {big} | "
                     + (f"{r['python_rows_per_s']:,} ({r['python_same_bytes']}) |" if "python_s" in r else " |"))
    write_section(RESULTS, "shapes", "\n".join([
        "## Real-shaped corpora, `hammer prepare` with defaults (`benchmarks/bench_prepare_shapes.py`)", "",
        f"Machine: {info['arch']}, {info['nproc']} cores, {info['cpu']}, Python {info['python']}; {info['date']} "
        f"(load average at start {info['load_avg_at_start']}).",
        "", *table, "", "```json", *(json.dumps(r) for r in rows), "```"]))


if __name__ == "__main__":
    main()
