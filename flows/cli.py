"""The ``hammer`` command line: every stage as a subcommand, plus ``run`` and ``demo``.

Stage subcommands call the same functions as the Prefect tasks (:mod:`hammer_core.stages`);
``run`` and ``demo`` start the Prefect flow. Run ``hammer <command> --help`` for details.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from hammer_core.config import ConfigError, PipelineConfig, config_from_dict, load_config
from hammer_core.paths import DEMO_CONFIG, DEMO_CONFIGS, DEMO_QUESTIONS

PREFECT_HEALTH_TIMEOUT_S = 5.0


class ServiceUnavailable(RuntimeError):
    """A service the command needs (the Prefect API, the MLflow store) cannot be reached;
    the message says what to do."""

EPILOG = """examples:
  hammer demo                                   # whole pipeline on the bundled sample
  hammer demo --model smollm2-135m              # the same with a real pretrained model (~20 min)
  hammer run data/configs/demo.yaml --set train.max_steps=100
  hammer ingest --input data/sample/travel.jsonl --task travel --out out/ingest
  hammer synth  --rows 60000 --out out/synth.jsonl   # seeded xLAM-shaped corpus
  hammer prepare --config cfg.yaml --input out/ingest --out out/prepare
  hammer train   --config cfg.yaml --input out/prepare --out out/train
  hammer export  --input out/train --out out/export
  hammer eval    --config cfg.yaml --input out/prepare --model out/train --out out/eval
  hammer eval score --dataset bfcl:simple_python --predictions preds.jsonl --out report.json
  hammer eval compare --config cfg.yaml --a 1 --b 2
  hammer register --config cfg.yaml --input out
  hammer promote  --config cfg.yaml --version @candidate   # champion gate on eval metrics
"""


def _config(args: argparse.Namespace) -> PipelineConfig:
    overrides = list(getattr(args, "set", None) or [])
    if getattr(args, "seed", None) is not None:
        overrides.append(f"seed={args.seed}")
    if getattr(args, "config", None):
        return load_config(args.config, overrides)
    from hammer_core.config import apply_overrides
    return config_from_dict(apply_overrides({}, overrides), origin="(defaults + --set)")


def _common(p: argparse.ArgumentParser, *, inp: str | None, out: bool = True) -> None:
    p.add_argument("--config", help="pipeline YAML (default: built-in defaults)")
    p.add_argument("--seed", type=int, help="override the config's seed")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value (repeatable)")
    if inp:
        p.add_argument("--input", required=True, help=inp)
    if out:
        p.add_argument("--out", required=True, help="output folder of this stage")
        p.set_defaults(out_is_folder=True)


def _print(obj: Any) -> None:
    print(json.dumps(obj, sort_keys=True, default=str))


def cmd_ingest(args: argparse.Namespace) -> None:
    from hammer_core import stages

    cfg = _config(args)
    if args.input:
        sources = [{"path": str(Path(p).resolve()), "format": args.format, "task": args.task} for p in args.input]
        cfg = config_from_dict({**cfg.model_dump(mode="json"), "data": {"sources": sources}}, "(--input)")
    res = stages.ingest(cfg, Path(args.out))
    _print(res.summary)


def cmd_synth(args: argparse.Namespace) -> None:
    from hammer_core.data.synth import write_synth

    _print(write_synth(args.out, args.rows, seed=args.seed, fmt=args.format))


def cmd_prepare(args: argparse.Namespace) -> None:
    from hammer_core import stages

    res = stages.prepare(_config(args), Path(args.input), Path(args.out))
    _print(res.summary)


def cmd_train(args: argparse.Namespace) -> None:
    from hammer_core import stages

    args.set = list(args.set or []) + [f"train.{key}={value}" for key, value in
                                       (("nproc", args.nproc), ("launcher", args.launcher)) if value is not None]
    from hammer_core.train.distributed import TrainingError

    cfg = _config(args)
    if cfg.train.track:
        _check_registry(cfg)
    try:
        res = stages.train(cfg, Path(args.input), Path(args.out))
    except TrainingError as err:  # the workers' error and log tail, without a launcher traceback
        print(f"hammer: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    _print(res.summary)


def cmd_export(args: argparse.Namespace) -> None:
    from hammer_core import stages

    _print(stages.export(Path(args.input), Path(args.out), merged=args.merged).manifest)


def cmd_eval(args: argparse.Namespace) -> None:
    from hammer_core import stages

    missing = [f"--{k}" for k in ("input", "model", "out") if not getattr(args, k)]
    if missing:
        raise ConfigError(f"hammer eval needs {', '.join(missing)} (or a subcommand: hammer eval score ..., "
                          "hammer eval compare ...)")
    _print(stages.evaluate(_config(args), Path(args.model), Path(args.input), Path(args.out)).metrics)


def cmd_eval_score(args: argparse.Namespace) -> None:
    from hammer_core.evaluation.scoring import score_predictions

    try:
        report = score_predictions(args.dataset, args.predictions, args.out, underscore_to_dot=args.underscore_to_dot)
    except ValueError as err:  # bad predictions line or unknown category: a clear message, no traceback
        raise ConfigError(str(err)) from None
    _print({"dataset": report["dataset"], "accuracy": report["accuracy"], "correct": report["correct"],
            "total": report["total"], "missing_predictions": report["missing_predictions"],
            "parse_failures": report["parse_failures"], "summary": report["summary"], "report": args.out,
            "categories": {c: v["accuracy"] for c, v in report["categories"].items()}})


def cmd_eval_compare(args: argparse.Namespace) -> None:
    from mlflow.exceptions import MlflowException

    from hammer_core.registry.promotion import compare_versions

    try:
        res = compare_versions(_config(args), args.a, args.b, model_name=args.model_name)
    except (MlflowException, ValueError) as err:  # unknown model, version or alias: say so, no traceback
        raise ConfigError(f"cannot compare: {err}") from None
    if args.out:
        from hammer_core.artifacts import atomic_write_text
        atomic_write_text(args.out, res["markdown"])
    print(res["markdown"])


def cmd_register(args: argparse.Namespace) -> None:
    from hammer_core import stages

    _check_registry(_config(args))
    _print(stages.register(_config(args), Path(args.input), Path(args.out) if args.out else None))


def cmd_promote(args: argparse.Namespace) -> None:
    from mlflow.exceptions import MlflowException

    from hammer_core.registry.promotion import promote

    cfg = _config(args)
    _check_registry(cfg)
    try:
        res = promote(cfg, args.version, force=args.force, model_name=args.model_name)
    except (MlflowException, ValueError) as err:  # unknown model, version or alias
        raise ConfigError(f"cannot promote: {err}") from None
    print(res["markdown"])
    if not res["promoted"] and not args.force:
        raise SystemExit(1)  # the gate said no: a script can tell


def _check_registry(cfg: PipelineConfig) -> None:
    from hammer_core.mlflow_store import RegistryUnavailable, preflight

    try:
        preflight(cfg)
    except RegistryUnavailable as err:
        raise ServiceUnavailable(str(err)) from None


def _check_prefect_api() -> None:
    """With an API URL set (environment or Prefect profile), it must answer before a flow starts."""
    import urllib.error
    import urllib.request

    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        return  # Prefect starts a temporary local API for the run
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=PREFECT_HEALTH_TIMEOUT_S):
            pass
    except urllib.error.HTTPError:
        pass  # it answered (an API that wants credentials, a path without /health): reachable
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise ServiceUnavailable(
            f"cannot reach the Prefect API at {url} ({reason}): start it with `prefect server start`, "
            "or unset PREFECT_API_URL to run on a temporary local server") from None


# Without PREFECT_API_URL Prefect starts a temporary local API for the flow run, in a subprocess
# that inherits this environment; these are its settings unless the user set them.
TEMPORARY_PREFECT_SERVER_ENV = {
    # its default 20 s start-up budget is too tight on a busy 2-core machine
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    # its telemetry heartbeat writes to the server's SQLite database while the run starts and
    # prints a "database is locked" traceback; a throwaway server has nothing to report
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}


def _run_flow(config: str, overrides: list[str]) -> dict[str, Any]:
    for key, value in TEMPORARY_PREFECT_SERVER_ENV.items():
        os.environ.setdefault(key, value)
    _check_prefect_api()
    cfg = load_config(config, overrides)
    _check_registry(cfg)
    from flows.pipeline import hammer_pipeline
    from hammer_core.locking import run_lock

    with run_lock(cfg.output_dir):  # a second run on the folder waits or stops before Prefect starts
        return hammer_pipeline(config_path=str(config), overrides=overrides)


def _report(result: dict[str, Any]) -> None:
    reg = result["registry"]
    m = result["metrics"]
    out = Path(result["output_dir"]).resolve()
    lines = [
        "",
        "=" * 72,
        "hammer: pipeline finished",
        f"  outputs      {out}/{{ingest,prepare,train,export,eval,register}}",
        f"  loss curve   {out / 'train' / 'loss.png'}",
        f"  adapters     {out / 'export' / 'adapters'}  (standard PEFT LoRA, one per task)",
        f"  eval         exact_match={m['exact_match']:.3f} call_accuracy={m['call_accuracy']:.3f} "
        f"irrelevance_accuracy={m['irrelevance_accuracy']:.3f} (rows={m['eval_rows']})",
    ]
    if "base/exact_match" in m:  # eval.baseline: the base model zero-shot on the same rows
        lines.append(f"  base model   exact_match={m['base/exact_match']:.3f} call_accuracy={m['base/call_accuracy']:.3f} "
                     f"irrelevance_accuracy={m['base/irrelevance_accuracy']:.3f} (zero-shot, same rows; "
                     f"unparsable {m['base/parse_failure_rate']:.0%})")
    lines.append(f"  MLflow       {reg['tracking_uri']}  run {reg['run_id']}")
    if "version" in reg:
        lines.append(f"  model        {reg['registered_uri']}  (alias: candidate"
                     f"{', reused: same lineage' if reg.get('reused') else ''})")
    promo = reg.get("promotion")
    if promo:
        lines.append(f"  champion     models:/{promo['model_name']}@champion -> v{reg.get('champion_version')} "
                     f"({promo['decision']}: {promo['reason']})")
    if reg["tracking_uri"].startswith("sqlite:///"):
        lines.append(f"  browse       mlflow ui --backend-store-uri {reg['tracking_uri']}")
    lines.append("=" * 72)
    print("\n".join(lines))


def cmd_run(args: argparse.Namespace) -> None:
    overrides = list(args.set or [])
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    load_config(args.config_file, overrides)  # fail fast with a clear message, before Prefect starts
    _report(_run_flow(args.config_file, overrides))


def cmd_demo(args: argparse.Namespace) -> None:
    config = DEMO_CONFIGS.get(args.model)
    if config is None:
        raise ConfigError(f"hammer demo --model {args.model!r}: no demo for that model; choose one of "
                          f"{', '.join(DEMO_CONFIGS)} (or run any model with `hammer run CONFIG`)")
    out = args.out or (".hammer/demo" if config == DEMO_CONFIG else f".hammer/demo-{args.model}")
    overrides = [f"output_dir={Path(out).resolve()}"] + list(args.set or [])
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    load_config(config, overrides)
    result = _run_flow(str(config), overrides)
    _report(result)
    _ask(result["registry"], DEMO_QUESTIONS)


def _ask(reg: dict[str, Any], questions_file: Path) -> None:
    """Ask the registered model questions it never saw in training, through MLflow, as a user would."""
    if "registered_uri" not in reg:
        return
    import mlflow

    from hammer_core.mlflow_store import use_tracking_uri

    questions = [json.loads(line) for line in questions_file.read_text().splitlines() if line.strip()]
    with use_tracking_uri(reg["tracking_uri"]):
        model = mlflow.pyfunc.load_model(reg["registered_uri"])
    answers = model.predict([{k: q[k] for k in ("query", "tools", "task")} for q in questions])
    lines = [f"hammer: questions for {reg['registered_uri']} (mlflow.pyfunc.load_model(...).predict)"]
    for q, a in zip(questions, answers):
        tools = ", ".join(t["name"] for t in q["tools"])
        lines += [f"  Q  {q['query']}", f"     ({q['about']}; tools: {tools})",
                  f"  A  {json.dumps(a['calls']) if a['calls'] else 'no call'}"
                  + ("" if a["calls"] or a["raw"].strip() in ("", "[]", "```\n[]\n```") else
                     f"  (raw: {a['raw'].strip()[:80]!r})")]
    lines.append("=" * 72)
    print("\n".join(lines))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="hammer", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Hammer function-calling pipeline: corpus -> irrelevance + masking -> CGC-LoRA "
                    "training -> evaluation -> MLflow registry.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("ingest", help="normalize corpora to the canonical Parquet schema (+ rejects)",
                       description="Read corpora (xLAM, Glaive, sharegpt, OpenAI chat, BFCL, Hammer test "
                                   "sets; JSON/JSONL/Parquet, gzip, hf://<dataset>), validate every row, write "
                                   "examples.parquet, rejects.parquet and a summary; prints a JSON summary line.")
    _common(p, inp=None)
    p.add_argument("--input", nargs="+", help="corpus files (default: the config's data.sources)")
    p.add_argument("--task", help="CGC-LoRA task label for --input (default: file stem)")
    p.add_argument("--format", default="auto",
                   help="input format: auto (default: detect from the first rows), xlam, glaive, "
                        "sharegpt, openai, bfcl, hammer_testset")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("synth", help="generate a synthetic xLAM-shaped corpus (benchmarks, tests)",
                       description="Write N seeded xLAM rows (1-5 tools of 1-5 parameters, ~2.2 KB a "
                                   "row) as JSON lines or Parquet; same seed, same bytes. Prints a "
                                   "JSON summary line.")
    p.add_argument("--rows", type=int, required=True, help="number of rows")
    p.add_argument("--out", required=True, help="output file (.jsonl, .jsonl.gz or .parquet)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--format", choices=["jsonl", "parquet"],
                   help="output format (default: from the file name)")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("prepare", help="split, irrelevance synthesis, masking, rendering, tokenization",
                       description="Turn ingested examples into the train/eval mix and token ids.")
    _common(p, inp="ingest output folder (or an examples.parquet)")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train", help="CGC-LoRA training on the prepared tokens",
                       description="Train CGC-LoRA (task-common + task-specific experts, task-ID gate) in "
                                   "--nproc worker processes under DeepSpeed (torchrun or the deepspeed "
                                   "launcher); rerun the same command to resume from the last checkpoint.")
    _common(p, inp="prepare output folder")
    p.add_argument("--nproc", type=int, help="worker processes per node (GPUs per node; default: train.nproc)")
    p.add_argument("--launcher", choices=["torchrun", "deepspeed"], help="process launcher (default: train.launcher)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("export", help="collapse each task into a standard PEFT LoRA adapter (1 + N)",
                       description="Write one PEFT LoRA adapter per task next to the base model reference.")
    _common(p, inp="train output folder")
    p.add_argument("--merged", action="store_true",
                   help="also write each task merged into the base weights (merged/<task>: a plain HF model)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("eval", help="evaluate a model (BFCL rules, Hammer F1s, robustness), score predictions",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Without a subcommand: greedy decoding on the prepared eval split (plus "
                                   "robustness and BFCL as configured), metrics.json + report.md.\n"
                                   "hammer eval score: score predictions from any model against BFCL or own data.\n"
                                   "hammer eval compare: eval metrics of two registered versions side by side.")
    _common(p, inp=None, out=False)
    p.add_argument("--input", help="prepare output folder")
    p.add_argument("--model", help="train output folder (or an export folder: the 1 + N PEFT adapters)")
    p.add_argument("--out", help="output folder of this stage")
    p.set_defaults(func=cmd_eval, out_is_folder=True)
    esub = p.add_subparsers(dest="eval_command", metavar="SUBCOMMAND")
    q = esub.add_parser("score", help="score a predictions file with BFCL's AST rules",
                        description="Score predictions ({id, calls: [{name, arguments}]} or {id, text} per JSON line) "
                                    "against bfcl:<categories> (e.g. bfcl:simple_python,multiple; bfcl:live; "
                                    "bfcl:all) or an examples Parquet / prepare folder of your own data. Writes the "
                                    "report JSON (per-id verdicts with the failing rule, per-category accuracy) and "
                                    "a markdown summary beside it.")
    q.add_argument("--dataset", required=True, help="bfcl:<categories> or a path to canonical examples")
    q.add_argument("--predictions", required=True, help="JSON-lines predictions file")
    q.add_argument("--out", required=True, help="report JSON path (markdown goes beside it, .md)")
    q.add_argument("--underscore-to-dot", action="store_true",
                   help="compare dotted function names with dots as underscores (models whose API forbids dots)")
    q.set_defaults(func=cmd_eval_score, out_is_folder=False)
    q = esub.add_parser("compare", help="compare the eval metrics of two registered model versions",
                        description="Eval metrics of two versions of the registered model, side by side (markdown).")
    _common(q, inp=None, out=False)
    q.add_argument("--a", required=True, help="first version (number or @alias)")
    q.add_argument("--b", required=True, help="second version (number or @alias)")
    q.add_argument("--model-name", help="registered model (default: the config's registry.model_name)")
    q.add_argument("--out", help="also write the markdown here")
    q.set_defaults(func=cmd_eval_compare, out_is_folder=False)

    p = sub.add_parser("register", help="log the run to MLflow and register the model version",
                       description="Log params, metrics and artifacts of a pipeline output folder to MLflow "
                                   "and register the pyfunc model (MLFLOW_TRACKING_URI is honoured).")
    _common(p, inp="pipeline output folder (holding ingest/ prepare/ train/ export/ eval/)", out=False)
    p.add_argument("--out", help="where registry.json goes (default: INPUT/register)")
    p.set_defaults(func=cmd_register, out_is_folder=True)

    p = sub.add_parser("promote", help="move the champion alias to a version if it beats the champion",
                       description="The promotion gate (registry.promotion in the config): alias champion moves "
                                   "to VERSION only if it beats the current champion on every configured metric; "
                                   "prints why. Exit 1 when the gate says no.")
    _common(p, inp=None, out=False)
    p.add_argument("--version", default="@candidate", help="version number or @alias (default: @candidate)")
    p.add_argument("--force", action="store_true", help="promote regardless of the metrics (recorded as forced)")
    p.add_argument("--model-name", help="registered model (default: the config's registry.model_name)")
    p.set_defaults(func=cmd_promote)

    p = sub.add_parser("run", help="the whole pipeline as a Prefect flow run",
                       description="Run every stage as a Prefect flow (embedded Prefect unless PREFECT_API_URL is set).")
    p.add_argument("config_file", metavar="CONFIG", help="pipeline YAML")
    p.add_argument("--seed", type=int)
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="the main job: the whole pipeline on the bundled sample, tiny model",
                       description="Run the pipeline on data/sample with the tiny Qwen2 preset (or --model "
                                   "smollm2-135m: a real pretrained model, ~20 minutes on 2 cores), embedded "
                                   "Prefect and a local sqlite MLflow store; then ask the registered model "
                                   "questions it never saw.")
    p.add_argument("--model", default="hammer-tiny-qwen2", metavar="PRESET",
                   help=f"model preset: {', '.join(DEMO_CONFIGS)} (default: hammer-tiny-qwen2; each has its "
                        "config in data/configs/ and its own registered model name)")
    p.add_argument("--out", help="output folder (default: .hammer/demo, or .hammer/demo-<PRESET>)")
    p.add_argument("--seed", type=int)
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.set_defaults(func=cmd_demo, out_is_folder=True)
    return ap


def _check_out_folder(args: argparse.Namespace) -> None:
    """A stage's ``--out`` is a folder: a path to a file (or under one) is a one-line error here,
    not a traceback from the stage's mkdir."""
    if not getattr(args, "out_is_folder", False) or not args.out:
        return
    for path in (Path(args.out), *Path(args.out).parents):
        if path.exists():
            if not path.is_dir():
                raise ConfigError(f"--out {args.out}: {path} is a file, not a folder")
            return


def main(argv: list[str] | None = None) -> int:
    from hammer_core.artifacts import ArtifactError
    from hammer_core.locking import FolderBusy

    args = build_parser().parse_args(argv)
    try:
        _check_out_folder(args)
        args.func(args)
    except ConfigError as err:
        print(f"hammer: {err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, ServiceUnavailable, ArtifactError, FolderBusy) as err:
        print(f"hammer: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
