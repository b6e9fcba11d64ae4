"""Quality benchmark: a real base model, fine-tuned by the pipeline, against itself zero-shot.

Runs the pipeline's own stages (ingest, prepare, train, eval; no Prefect) on a real pretrained
base (default: the ``smollm2-135m`` preset) for several *arms*, each a set of config overrides,
and writes every figure with the machine, the minutes each arm took and the noise into its own
section of ``benchmarks/results/quality.md`` (between ``<!-- arms:begin -->`` and
``<!-- arms:end -->``; the hand-written reading around it stays). Each arm is scored on the
held-out split plus what its claim needs (``ARMS``):

1. ``tuned`` -- the recipe as configured; evaluated with the base model zero-shot beside it
   (``eval.baseline``) on the held-out split and on real BFCL questions (``--bfcl`` per
   category of simple_python, multiple, irrelevance, scored by the project's checker).
2. Hammer's claims, in direction: ``no_mask`` (``prepare.mask_prob=0``) against ``tuned`` in
   the robustness study (names randomized at eval time: the drop should be larger without
   masking); ``irr0`` / ``irr03`` (irrelevance share 0 and 0.3 against 0.1): irrelevance
   accuracy up, call accuracy down as the share grows.
3. ``multitask`` -- one multitask LoRA of the same per-task rank (``adapter.variant``) against
   CGC-LoRA, per task.

Every arm is scored on the *same* held-out rows (the ``tuned`` arm's eval split; the split is
made by source row before any synthesis, so no arm trained on them). Each accuracy is given
with its binomial standard error, sqrt(p(1-p)/n): differences inside two of those are noise at
this scale, and the reading says so. Nothing here is tuned toward a conclusion: the arms share
the config of the demo (``data/configs/demo-smollm2.yaml``) and change one thing each.

Run (each arm is tens of minutes on a 2-core CPU; run in the background. On 2026-12-08,
``--broad 100`` took 95 minutes for all five arms: tuned 40, the others 10-16 each)::

    .venv/bin/python benchmarks/bench_quality.py --broad 100             # every arm, broad corpus
    .venv/bin/python benchmarks/bench_quality.py                         # every arm, the sample
    .venv/bin/python benchmarks/bench_quality.py --arms tuned --bfcl 100 # base vs tuned only
    .venv/bin/python benchmarks/bench_quality.py --sources DIR           # your own corpus: one
                                                                         # JSONL per task cluster
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.machine import machine, write_section  # noqa: E402

from hammer_core import stages  # noqa: E402
from hammer_core.config import load_config  # noqa: E402
from hammer_core.paths import DEMO_CONFIGS  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "quality.md"
BFCL_CATEGORIES = ("simple_python", "multiple", "irrelevance")


class Arm(NamedTuple):
    overrides: list[str]  # config overrides: the one thing this arm changes
    what: str
    bfcl: tuple[str, ...]  # BFCL categories it is scored on (the claim it tests decides)
    robustness: bool  # the robustness study (names randomized at eval time)
    unseen: bool  # the rows of tools never seen in training (with --sources/--broad)


#: Every arm is scored on the held-out split; the rest of the evaluation is what its claim
#: needs (an eval row costs ~1-3 s of greedy decoding per model on a 2-core CPU).
ARMS: dict[str, Arm] = {
    "tuned": Arm([], "the recipe as configured (masking 2/3, irrelevance 0.1, CGC-LoRA), with the base "
                 "zero-shot beside it", BFCL_CATEGORIES, True, True),
    "no_mask": Arm(["prepare.mask_prob=0.0"], "no function masking (Hammer's claim a: robustness)",
                   (), True, True),
    "irr0": Arm(["prepare.irrelevance_ratio=0.0", "prepare.hard_negative_ratio=0.0"],
                "no irrelevance rows (Hammer's claim b)", ("simple_python", "irrelevance"), False, False),
    "irr03": Arm(["prepare.irrelevance_ratio=0.3"], "30 % irrelevance rows (Hammer's claim b)",
                 ("simple_python", "irrelevance"), False, False),
    "multitask": Arm(["adapter.variant=multitask_lora"], "one multitask LoRA of the same per-task rank "
                     "(per task, against CGC-LoRA)", (), False, False),
}
PREPARE_KEYS = ("prepare.",)  # overrides that change the data (the others reuse the tuned arm's)


def _sources(files: list[Path]) -> str:
    """A data.sources override: one source per file, its task the cluster (``x.unseen.jsonl`` -> x)."""
    return "data.sources=[" + ", ".join(f"{{path: {f}, task: {f.name.split('.')[0]}}}" for f in files) + "]"


def stderr(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n) if n else float("nan")


def run_arm(name: str, overrides: list[str], base_cfg: Path, common: list[str], work: Path,
            eval_prepare: Path | None) -> dict[str, Any]:
    """One arm: prepare (if its data differs), train, eval on the reference held-out rows."""
    out = work / name
    cfg = load_config(base_cfg, common + overrides + [f"output_dir={out}"])
    timings: dict[str, float] = {}
    data_changes = any(o.startswith(PREPARE_KEYS) for o in overrides)
    prepare_dir = out / "prepare" if (data_changes or eval_prepare is None) else eval_prepare
    if prepare_dir == out / "prepare":
        t = time.perf_counter()
        stages.prepare(cfg, work / "ingest", prepare_dir)
        timings["prepare_s"] = time.perf_counter() - t
    t = time.perf_counter()
    stages.train(cfg, prepare_dir, out / "train")
    timings["train_s"] = time.perf_counter() - t
    t = time.perf_counter()
    res = stages.evaluate(cfg, out / "train", eval_prepare or prepare_dir, out / "eval")
    timings["eval_s"] = time.perf_counter() - t
    summary = json.loads((out / "train" / "train_summary.json").read_text())
    return {"arm": name, "overrides": overrides, "metrics": res.metrics, "timings": timings,
            "prepare_dir": str(prepare_dir), "train": {k: summary.get(k) for k in (
                "steps", "tokens", "tokens_per_s", "first_loss", "last_loss", "trainable_params")}}


def _pct(m: dict[str, Any], key: str, n_key: str | None = None, n: int | None = None) -> str:
    if key not in m:
        return ""
    count = n if n is not None else int(m.get(n_key, 0)) if n_key else 0
    return f"{m[key]:.3f} ± {stderr(m[key], count):.3f}" if count else f"{m[key]:.3f}"


def markdown(results: list[dict[str, Any]], info: dict[str, Any], args: argparse.Namespace) -> str:
    first = results[0]["metrics"]
    n_rows, n_none = int(first["eval_rows"]), int(first["no_call_rows"])
    n_call = n_rows - n_none
    parts = ["## The quality benchmark (`benchmarks/bench_quality.py`): fine-tuned against zero-shot, "
             "and the recipe's ablations", "",
             f"Machine: `{json.dumps(info)}`", "",
             f"Base model `{args.model}`; corpus: {args.corpus_label}; held-out rows: {n_rows} "
             f"({n_call} need a call, {n_none} need none); BFCL: up to {args.bfcl} questions per category. "
             "Each accuracy is given ± its binomial standard error sqrt(p(1-p)/n); an empty cell is an "
             "evaluation that arm's claim does not need (not run, to keep each arm near an hour on 2 cores).", "",
             _table(["arm", "changes", "what it tests", "minutes (prepare / train / eval)"],
                    [[r["arm"], ", ".join(f"`{o}`" for o in ARMS[r["arm"]].overrides) or "-", ARMS[r["arm"]].what,
                      " / ".join(f"{r['timings'].get(k, 0) / 60:.1f}" for k in ("prepare_s", "train_s", "eval_s"))]
                     for r in results]), ""]
    rows = []
    if "base/call_accuracy" in first:
        rows.append(["base (zero-shot)", "", _pct(first, "base/call_accuracy", n=n_call),
                     _pct(first, "base/irrelevance_accuracy", n=n_none), _pct(first, "base/exact_match", n=n_rows),
                     f"{first.get('base/parse_failure_rate', 0):.2f}"]
                    + [_pct(first, f"base/bfcl/{c}", n=args.bfcl) for c in BFCL_CATEGORIES])
    for r in results:
        m = r["metrics"]
        minutes = sum(r["timings"].values()) / 60
        rows.append([r["arm"], f"{minutes:.1f}", _pct(m, "call_accuracy", n=n_call),
                     _pct(m, "irrelevance_accuracy", n=n_none), _pct(m, "exact_match", n=n_rows),
                     f"{m.get('parse_failure_rate', 0):.2f}"]
                    + [_pct(m, f"bfcl/{c}", n=args.bfcl) for c in BFCL_CATEGORIES])
    head = ["arm", "minutes", "call accuracy", "irrelevance accuracy", "exact match", "unparsable"] + [
        f"BFCL {c}" for c in BFCL_CATEGORIES]
    parts += ["### Held-out split and BFCL", "", _table(head, rows), ""]

    if any("unseen/eval_rows" in r["metrics"] for r in results):
        um = results[0]["metrics"]
        un, un_none = int(um["unseen/eval_rows"]), int(um["unseen/no_call_rows"])
        urows = []
        if "unseen/base/call_accuracy" in um:
            urows.append(["base (zero-shot)", _pct(um, "unseen/base/call_accuracy", n=un - un_none),
                          _pct(um, "unseen/base/irrelevance_accuracy", n=un_none)])
        urows += [[r["arm"], _pct(r["metrics"], "unseen/call_accuracy", n=un - un_none),
                   _pct(r["metrics"], "unseen/irrelevance_accuracy", n=un_none)]
                  for r in results if "unseen/eval_rows" in r["metrics"]]
        parts += [f"### Tools never seen in training ({un} rows, {un_none} need no call)", "",
                  _table(["arm", "call accuracy", "irrelevance accuracy"], urows), ""]

    robust = [r for r in results if any(k.startswith("robustness/") for k in r["metrics"])]
    if robust:
        modes = sorted({k.split("/")[1] for r in robust for k in r["metrics"] if k.startswith("robustness/")})
        parts += ["### Robustness: names randomized at eval time (AST accuracy drop; Hammer's claim a)", "",
                  _table(["arm"] + [f"drop ({m})" for m in modes],
                         [[r["arm"]] + [f"{r['metrics'].get(f'robustness/{m}/drop', float('nan')):+.3f}"
                                        for m in modes] for r in robust]), ""]
    tasks = sorted({k.split("/", 1)[1] for r in results for k in r["metrics"] if k.startswith("exact_match/")})
    if tasks:
        parts += ["### Per task (exact match)", "",
                  _table(["arm"] + tasks, [[r["arm"]] + [f"{r['metrics'].get(f'exact_match/{t}', 0):.3f}"
                                                         for t in tasks] for r in results]), ""]
    parts += ["### Runs", "", "```json", json.dumps(results, indent=1, sort_keys=True), "```", ""]
    return "\n".join(parts)


def _table(head: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m", help="base model (preset, .gguf, folder or hub id)")
    ap.add_argument("--config", default=str(DEMO_CONFIGS["smollm2-135m"]), help="the arms' shared config")
    ap.add_argument("--sources", help="folder of corpus files, one JSONL per task cluster (default: the "
                                      "config's data.sources); <cluster>.unseen.jsonl files are kept out of "
                                      "training and scored as tools the model never saw")
    ap.add_argument("--broad", type=int, metavar="ROWS", help="generate the broad corpus (hammer_core."
                                                              "broad_corpus: 18 domains, 335 tools, 4 clusters, "
                                                              "15 %% of tools held out) with ROWS rows per "
                                                              "cluster and use it as --sources")
    ap.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of {', '.join(ARMS)}")
    ap.add_argument("--steps", type=int, help="train.max_steps of every arm (default: the config's)")
    ap.add_argument("--bfcl", type=int, default=100, help="BFCL questions per category (0: none)")
    ap.add_argument("--robustness-rows", type=int, default=32, help="rows of the robustness study")
    ap.add_argument("--work", default=str(REPO / ".hammer" / "bench_quality"), help="work folder")
    ap.add_argument("--out", default=str(RESULTS), help="markdown results file")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more overrides for every arm")
    args = ap.parse_args(argv)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        ap.error(f"unknown arms {unknown}; choose from {list(ARMS)}")
    if "tuned" in arms:
        arms.remove("tuned")
    arms.insert(0, "tuned")  # the reference: its eval split and its baseline serve every arm

    work = Path(args.work)
    common = [f"model.name_or_path={args.model}", "train.track=false",
              f"eval.robustness_max_examples={args.robustness_rows}", f"eval.bfcl_max_examples={max(args.bfcl, 1)}"]
    common += list(args.set)
    if args.steps:
        common.append(f"train.max_steps={args.steps}")
    if args.broad:
        from hammer_core.data.broad_corpus import generate_corpus

        args.sources = str(work / "corpus")
        generate_corpus(args.sources, args.broad, seed=0)
    unseen: list[Path] = []
    if args.sources:
        files = sorted(Path(args.sources).glob("*.jsonl"))
        seen = [f for f in files if not f.name.endswith(".unseen.jsonl")]
        unseen = [f for f in files if f.name.endswith(".unseen.jsonl")]
        if not seen:
            ap.error(f"{args.sources} holds no .jsonl files to train on")
        common.append(_sources(seen))
        args.corpus_label = (f"{len(seen)} files from {args.sources} ({', '.join(f.stem for f in seen)})"
                             + (f"; {len(unseen)} files of held-out tools" if unseen else ""))
    else:
        args.corpus_label = "the config's data.sources (the bundled sample)"
    info = machine("transformers", "peft", arms=arms)
    cfg = load_config(args.config, common + [f"output_dir={work / 'tuned'}"])
    stages.ingest(cfg, work / "ingest")
    unseen_prepare = None
    if unseen:  # tools never seen in training: all of their rows are eval rows
        ucfg = load_config(args.config, common + [_sources(unseen), f"output_dir={work / 'unseen'}",
                                                  "prepare.eval_fraction=0.99"])
        stages.ingest(ucfg, work / "unseen" / "ingest")
        unseen_prepare = work / "unseen" / "prepare"
        stages.prepare(ucfg, work / "unseen" / "ingest", unseen_prepare)

    results: list[dict[str, Any]] = []
    for name in arms:
        arm = ARMS[name]
        overrides = list(arm.overrides) + [
            f"eval.baseline={name == 'tuned'}", f"eval.robustness={arm.robustness}",
            f"eval.bfcl_categories=[{','.join(arm.bfcl if args.bfcl else ())}]"]
        eval_prepare = Path(results[0]["prepare_dir"]) if results else None
        t = time.perf_counter()
        results.append(run_arm(name, overrides, Path(args.config), common, work, eval_prepare))
        if unseen_prepare is not None and arm.unseen:
            ucfg = load_config(args.config, common + overrides + ["eval.robustness=false", "eval.bfcl_categories=[]",
                                                                   f"output_dir={work / name}"])
            t_unseen = time.perf_counter()
            res = stages.evaluate(ucfg, work / name / "train", unseen_prepare, work / name / "eval-unseen")
            results[-1]["timings"]["eval_s"] += time.perf_counter() - t_unseen
            results[-1]["metrics"].update({f"unseen/{k}": v for k, v in res.metrics.items() if "/" not in k
                                           or k.startswith("base/") and k.count("/") == 1})
        print(json.dumps({"arm": name, "minutes": round((time.perf_counter() - t) / 60, 1),
                          **{k: v for k, v in results[-1]["metrics"].items() if "/" not in k or
                             k.startswith(("base/call", "base/irr", "bfcl/", "base/bfcl/"))}}), flush=True)
        write_section(Path(args.out), "arms", markdown(results, info, args))  # after every arm: a partial run counts
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
