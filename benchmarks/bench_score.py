"""Benchmark of ``hammer eval score``: predictions scored per second with BFCL's AST rules.

The issue asks for at least 10,000 predictions scored per second. The workload is every
single-turn BFCL v4 question (13 categories, 3,641 ids) with one prediction each, built from
the possible answers and then perturbed (about half are wrong: dropped or extra calls, changed
values, wrong types, renamed functions), written as a JSON-lines file, in two forms:

* ``calls`` -- ``{"id", "calls": [{"name", "arguments"}]}`` (structured, from a server);
* ``text``  -- ``{"id", "text": "<raw output>"}`` (Hammer JSON in a code fence with stray text
  for most lines, BFCL's Python call syntax for a fifth, prose for a few).

Timed: :func:`hammer_core.evaluation.scoring.score_predictions` on an already loaded dataset -- reading
and decoding the file, checking every prediction, building the report (per-id verdicts,
per-category accuracy, summaries); writing the report is timed separately. Baseline, measured
in the same run on the same files: the scorer the pipeline had before this work (read, decode,
order-free exact match of ``name`` + ``arguments``), so the ratio says what BFCL's rules cost
over plain exact match. Rounds are interleaved (baseline, BFCL, BFCL, baseline, ...) and both
CPU time of this process and wall time are recorded; the headline is CPU time (on a shared
2-core machine wall time mostly measures waiting for a core).

Run::

    .venv/bin/python benchmarks/bench_score.py            # writes benchmarks/results/score.md
    .venv/bin/python benchmarks/bench_score.py --quick    # smoke run, does not write results
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.machine import machine  # noqa: E402

from hammer_core.evaluation import bfcl  # noqa: E402
from hammer_core.artifacts import atomic_write_text  # noqa: E402
from hammer_core.evaluation.parsing import parse_calls  # noqa: E402
from hammer_core.evaluation.scoring import calls_match, load_dataset, score_predictions  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "score.md"
TARGET = 10_000  # predictions per second



# ------------------------------------------------------------------------------ workload

def gold_calls(entry: bfcl.Entry) -> list[dict[str, Any]]:
    if entry.ground_truth is None:
        return [] if "irrelevance" in entry.category else [{"name": entry.functions[0]["name"], "arguments": {}}]
    calls = []
    for answer in entry.ground_truth:
        (name, params), = answer.items()
        args = {p: next(v for v in vals if v != "") for p, vals in params.items() if any(v != "" for v in vals)}
        calls.append({"name": name, "arguments": args})
    return calls


def perturb(calls: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    calls = copy.deepcopy(calls)
    r = rng.random()
    if r < 0.5 or not calls:
        return calls
    c = rng.choice(calls)
    if r < 0.6:
        return calls[:-1]
    if r < 0.65:
        return calls + [copy.deepcopy(c)]
    if r < 0.75:
        c["name"] += "_v2"
    elif c["arguments"]:
        k = rng.choice(list(c["arguments"]))
        v = c["arguments"][k]
        c["arguments"][k] = (str(v) if not isinstance(v, str) else v + " city") if r < 0.9 else None
    return calls


def python_syntax(calls: list[dict[str, Any]]) -> str:
    return "[" + ", ".join(f"{c['name']}(" + ", ".join(f"{k}={v!r}" for k, v in c["arguments"].items()) + ")"
                           for c in calls) + "]"


def write_predictions(entries: list[bfcl.Entry], form: str, path: Path, seed: int) -> dict[str, list]:
    """Writes the predictions file; returns the gold calls by id (for the exact-match baseline)."""
    rng = random.Random(seed)
    targets = {}
    with open(path, "w") as f:
        for e in entries:
            gold = gold_calls(e)
            targets[e.id] = gold
            calls = perturb(gold, rng)
            if form == "calls":
                line = {"id": e.id, "calls": calls}
            else:
                r = rng.random()
                text = ("I am not able to help with that." if r < 0.05 else python_syntax(calls) if r < 0.25
                        else "Here are the calls:\n```json\n" + json.dumps(calls) + "\n```")
                line = {"id": e.id, "text": text}
            f.write(json.dumps(line) + "\n")
    return targets


def exact_match_baseline(path: Path, targets: dict[str, list]) -> dict[str, Any]:
    """The previous scorer: decode each line, order-free exact match against one gold call list."""
    correct = total = 0
    with open(path) as f:
        for line in f:
            obj = json.loads(line)
            pred = obj["calls"] if "calls" in obj else parse_calls(obj["text"])
            try:
                ok = calls_match(targets[obj["id"]], pred)
            except (KeyError, TypeError):
                ok = False
            correct += ok
            total += 1
    return {"correct": correct, "total": total}


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return time.process_time() - c0, time.perf_counter() - w0, out


def run(rounds: int) -> dict[str, Any]:
    t_load = time.perf_counter()
    dataset = load_dataset("bfcl:all")
    load_s = time.perf_counter() - t_load
    n = len(dataset.entries)
    results: dict[str, Any] = {"predictions_per_file": n, "dataset_load_s": round(load_s, 3), "forms": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for form in ("calls", "text"):
            path = Path(tmp) / f"{form}.jsonl"
            targets = write_predictions(dataset.entries, form, path, seed=0)
            score_predictions(dataset, path)  # warm-up (regex compilation, caches)
            exact_match_baseline(path, targets)
            base_cpu, base_wall, ours_cpu, ours_wall, ratios = [], [], [], [], []
            report = None
            for k in range(rounds):
                pair = [("base", lambda: exact_match_baseline(path, targets)),
                        ("ours", lambda: score_predictions(dataset, path))]
                if k % 2:
                    pair.reverse()
                got = {}
                for name, fn in pair:
                    got[name] = timed(fn)
                base_cpu.append(got["base"][0])
                base_wall.append(got["base"][1])
                ours_cpu.append(got["ours"][0])
                ours_wall.append(got["ours"][1])
                ratios.append(got["ours"][0] / got["base"][0])
                report = got["ours"][2]
            w_cpu, w_wall, _ = timed(lambda: score_predictions(dataset, path, Path(tmp) / f"{form}_report.json"))
            med = statistics.median
            results["forms"][form] = {
                "rounds": rounds,
                "bfcl_cpu_s": round(med(ours_cpu), 4), "bfcl_wall_s": round(med(ours_wall), 4),
                "baseline_cpu_s": round(med(base_cpu), 4), "baseline_wall_s": round(med(base_wall), 4),
                "bfcl_per_s_cpu": round(n / med(ours_cpu)), "bfcl_per_s_wall": round(n / med(ours_wall)),
                "baseline_per_s_cpu": round(n / med(base_cpu)),
                "cost_ratio_paired_cpu": round(med(ratios), 3),
                "with_report_written_wall_s": round(w_wall, 4),
                "with_report_written_per_s_wall": round(n / w_wall),
                "accuracy": report["accuracy"], "parse_failures": report["parse_failures"],
                "rules": len(report["rules"]),
            }
    return results


def markdown(res: dict[str, Any], mach: dict[str, Any]) -> str:
    rows = []
    for form, r in res["forms"].items():
        ok = "yes" if r["bfcl_per_s_cpu"] >= TARGET and r["bfcl_per_s_wall"] >= TARGET else "NO"
        rows.append(f"| {form} | {res['predictions_per_file']} | {r['accuracy']:.3f} | {r['bfcl_cpu_s']:.4f} | "
                    f"**{r['bfcl_per_s_cpu']:,}** | {r['bfcl_per_s_wall']:,} | {r['with_report_written_per_s_wall']:,} | "
                    f"{r['baseline_per_s_cpu']:,} | {r['cost_ratio_paired_cpu']:.2f} | {ok} |")
    return "\n".join([
        "# Scoring benchmark (`hammer eval score`)", "",
        f"Machine: {mach['arch']}, {mach['nproc']} cores, {mach['cpu']}; Python {mach['python']}, "
        f"torch {mach['torch']}; {mach['date']}.",
        "Produced by `benchmarks/bench_score.py`: every single-turn BFCL v4 question with one perturbed "
        "prediction (about half wrong), medians over interleaved rounds; the baseline is the previous "
        "exact-match scorer on the same file, timed in the same run. Dataset loading "
        f"(once per command, not per prediction): {res['dataset_load_s']} s.", "",
        f"| form | predictions | accuracy | BFCL scoring s (CPU) | **predictions/s (CPU)** | predictions/s (wall) "
        f"| predictions/s incl. writing the report (wall) | exact-match baseline /s (CPU) | cost vs baseline "
        f"(paired, CPU) | >= {TARGET:,}/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows, "",
        "## Raw figures", "", "```json", json.dumps({"machine": mach, "results": res}, indent=2), "```", ""])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="2 rounds, print only")
    args = ap.parse_args()
    res = run(2 if args.quick else args.rounds)
    md = markdown(res, machine())
    print(md)
    if not args.quick:
        atomic_write_text(RESULTS, md)


if __name__ == "__main__":
    main()
