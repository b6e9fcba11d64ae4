"""Benchmark: streaming ingest of synthetic xLAM corpora (60k and 1M rows): rows/s and peak RSS.

For each size N the script generates a seeded corpus with ``hammer synth`` (JSON lines, about
2.2 KB a row, 1-5 tools of 1-5 parameters) into a temp folder, then measures, each in a fresh
process:

- ``ingest``: :func:`hammer_core.data.ingest.ingest` (read, normalize, validate, de-duplicate,
  write examples/rejects Parquet), the thing being measured;
- ``parse`` (baseline, every size): the stdlib floor, ``json.loads`` of each line and of its
  ``tools`` and ``answers`` strings, nothing kept; any ingester must do at least this;
- ``naive`` (baseline, sizes up to ``--naive-max``): the in-memory implementation ingest had
  before streaming: every record read into a list, normalized into a list of rows, one
  ``pyarrow`` table, one Parquet write.

Each measurement runs as ``measure -> work``: the measuring process starts the worker with
``subprocess`` and reads the worker's peak RSS from ``resource.getrusage(RUSAGE_CHILDREN)``
(one child each, so the figure is that worker's own); rows/s use the worker's own timing of
its work (imports excluded). Ratios compare figures of the same run on the same machine.

Usage::

    .venv/bin/python benchmarks/bench_ingest.py                     # 60k and 1M (minutes)
    .venv/bin/python benchmarks/bench_ingest.py --sizes 20000 --out /tmp/x.md   # quick
    .venv/bin/python benchmarks/bench_ingest.py --rerender benchmarks/results/ingest.md  # text only

Writes the figures (JSON + a markdown table + the machine) to ``benchmarks/results/ingest.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
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
RESULTS = REPO / "benchmarks" / "results" / "ingest.md"
SEED = 0


# --------------------------------------------------------------------------- work (in a worker)


def work_ingest(corpus: Path, out: Path) -> dict[str, Any]:
    from hammer_core.data.ingest import SourceSpec, ingest

    start = time.perf_counter()
    result = ingest([SourceSpec(str(corpus), name="synth")], out)
    return {"seconds": time.perf_counter() - start, "rows": result.summary["examples"],
            "summary": result.summary}


def work_parse(corpus: Path, out: Path) -> dict[str, Any]:
    start = time.perf_counter()
    rows = 0
    with open(corpus, "rb") as f:
        for line in f:
            record = json.loads(line)
            json.loads(record["tools"])
            json.loads(record["answers"])
            rows += 1
    return {"seconds": time.perf_counter() - start, "rows": rows}


def work_naive(corpus: Path, out: Path) -> dict[str, Any]:
    from hammer_core.artifacts import write_table
    from hammer_core.data.formats import RowError
    from hammer_core.data.formats.xlam import normalize_xlam
    from hammer_core.schema import examples_table

    start = time.perf_counter()
    with open(corpus, "rb") as f:
        records = [json.loads(line) for line in f]
    rows = []
    for i, record in enumerate(records):
        try:
            rows.append(normalize_xlam(record, source="synth", task="synth", index=i))
        except RowError:
            pass
    write_table(examples_table(rows), out / "examples.parquet", kind="examples")
    return {"seconds": time.perf_counter() - start, "rows": len(records)}


WORK = {"ingest": work_ingest, "parse": work_parse, "naive": work_naive}


# --------------------------------------------------------------------------- measuring


def measure(kind: str, corpus: Path, out: Path) -> dict[str, Any]:
    """Run one worker in a fresh process (via a measuring process) and return its figures."""
    cmd = [sys.executable, __file__, "--measure", kind, str(corpus), str(out)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _measure_here(kind: str, corpus: str, out: str) -> None:
    """The measuring process: start the worker, report its peak RSS (RUSAGE_CHILDREN)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--work", kind, corpus, out], check=True,
                          capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - start
    result = json.loads(done.stdout.strip().splitlines()[-1])
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    result.update(kind=kind, wall_seconds=round(wall, 2), peak_rss_mb=round(peak_kib / 1024, 1),
                  rows_per_s=round(result["rows"] / result["seconds"], 1),
                  seconds=round(result["seconds"], 2))
    print(json.dumps(result))


def _work_here(kind: str, corpus: str, out: str) -> None:
    Path(out).mkdir(parents=True, exist_ok=True)
    print(json.dumps(WORK[kind](Path(corpus), Path(out))))


# --------------------------------------------------------------------------- report



def render(figures: dict[str, Any]) -> str:
    m = figures["machine"]
    lines = [
        "# Ingest benchmark (streaming) — `benchmarks/bench_ingest.py`",
        "",
        f"Date: {figures['date']}. Machine: {m['arch']}, {m['nproc']} cores ({m['cpu']}), "
        f"Python {m['python']}, torch {m['torch']}, pyarrow {m['pyarrow']}; load average at "
        f"start {m['load_avg_at_start']} (a shared machine: absolute rows/s are noisy, the "
        "ratios are measured in the same run).",
        "",
        "Corpus: `hammer synth` (seed 0), JSON lines, xLAM-shaped, 1-5 tools of 1-5 parameters, "
        f"about {figures['bytes_per_row']:.0f} bytes a row. Peak RSS is the worker process's "
        "own (`RUSAGE_CHILDREN` of a process that starts only it).",
        "",
        "| rows | ingest rows/s | ingest peak RSS | parse floor rows/s | ingest / floor | "
        "naive rows/s | naive peak RSS | ingest RSS / naive RSS |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size in figures["sizes"]:
        ing, par, nai = size["ingest"], size["parse"], size.get("naive")
        lines.append(
            f"| {size['rows']:,} | {ing['rows_per_s']:,.0f} | {ing['peak_rss_mb']:,.0f} MB | "
            f"{par['rows_per_s']:,.0f} | {ing['rows_per_s'] / par['rows_per_s']:.2f} | "
            + (f"{nai['rows_per_s']:,.0f} | {nai['peak_rss_mb']:,.0f} MB | "
               f"{ing['peak_rss_mb'] / nai['peak_rss_mb']:.2f} |" if nai else "— | — | — |"))
    lines += [
        "",
        "- *ingest / floor*: the share of the bare stdlib JSON-parsing speed that the full "
        "ingest keeps (it also converts tools to JSON schema, validates types, de-duplicates, "
        "and writes zstd Parquet).",
        "- *naive*: the previous in-memory implementation (all records and rows held, one "
        f"write); run up to {figures['naive_max']:,} rows only, since its memory grows with "
        "the corpus" + _naive_growth(figures) + ".",
        "",
        "```json",
        json.dumps(figures, indent=2),
        "```",
        "",
    ]
    return "\n".join(lines)


def _naive_growth(figures: dict[str, Any]) -> str:
    """Extrapolation of the in-memory baseline's RSS to the largest size (linear in rows)."""
    sizes = [s for s in figures["sizes"] if "naive" in s]
    if not sizes:
        return ""
    small, largest = sizes[-1], max(s["rows"] for s in figures["sizes"])
    per_row = (small["naive"]["peak_rss_mb"] - small["parse"]["peak_rss_mb"]) / small["rows"]
    return (f" (about {per_row * 1024:,.1f} KB a row at {small['rows']:,} rows: roughly "
            f"{per_row * largest / 1024:,.1f} GB at {largest:,}, extrapolated, not measured)")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("--measure", "--work"):
        (_measure_here if sys.argv[1] == "--measure" else _work_here)(*sys.argv[2:5])
        return
    if len(sys.argv) > 2 and sys.argv[1] == "--rerender":  # refresh the text of a report
        text = Path(sys.argv[2]).read_text()
        figures = json.loads(text.split("```json\n", 1)[1].split("\n```", 1)[0])
        Path(sys.argv[2]).write_text(render(figures))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[60_000, 1_000_000])
    ap.add_argument("--naive-max", type=int, default=60_000,
                    help="largest size the in-memory baseline runs at")
    ap.add_argument("--workdir", help="where corpora and outputs go (default: a temp folder)")
    ap.add_argument("--out", default=str(RESULTS), help="markdown report")
    args = ap.parse_args()

    from hammer_core.data.synth import write_synth

    figures: dict[str, Any] = {"date": dt.date.today().isoformat(), "machine": machine("pyarrow"),
                               "seed": SEED, "naive_max": args.naive_max, "sizes": []}
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="bench_ingest.") as tmp:
        work = Path(tmp)
        for n in args.sizes:
            corpus = work / f"synth_{n}.jsonl"
            start = time.perf_counter()
            info = write_synth(corpus, n, seed=SEED)
            synth_s = time.perf_counter() - start
            print(f"[{n:,}] synth: {info['bytes'] / 2**20:,.0f} MiB in {synth_s:.0f} s",
                  flush=True)
            size: dict[str, Any] = {"rows": n, "corpus_bytes": info["bytes"],
                                    "synth_seconds": round(synth_s, 1)}
            kinds = ["parse", "ingest"] + (["naive"] if n <= args.naive_max else [])
            for kind in kinds:
                size[kind] = measure(kind, corpus, work / f"out_{kind}_{n}")
                print(f"[{n:,}] {kind}: {size[kind]['rows_per_s']:,.0f} rows/s, "
                      f"peak RSS {size[kind]['peak_rss_mb']:,.0f} MB", flush=True)
            summary = size["ingest"].pop("summary")
            assert summary["kept"] == n and summary["examples"] == n, summary
            figures["sizes"].append(size)
            corpus.unlink()
        figures["bytes_per_row"] = figures["sizes"][0]["corpus_bytes"] / figures["sizes"][0]["rows"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(render(figures))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
