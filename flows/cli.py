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
from hammer_core.modeling import DATA_DIR

DEMO_CONFIG = DATA_DIR / "configs" / "demo.yaml"

EPILOG = """examples:
  hammer demo                                   # whole pipeline on the bundled sample
  hammer run data/configs/demo.yaml --set train.max_steps=100
  hammer ingest --input data/sample/travel.jsonl --task travel --out out/ingest
  hammer prepare --config cfg.yaml --input out/ingest --out out/prepare
  hammer train   --config cfg.yaml --input out/prepare --out out/train
  hammer export  --input out/train --out out/export
  hammer eval    --config cfg.yaml --input out/prepare --model out/train --out out/eval
  hammer register --config cfg.yaml --input out
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


def cmd_prepare(args: argparse.Namespace) -> None:
    from hammer_core import stages

    res = stages.prepare(_config(args), Path(args.input), Path(args.out))
    _print(res.summary)


def cmd_train(args: argparse.Namespace) -> None:
    from hammer_core import stages

    res = stages.train(_config(args), Path(args.input), Path(args.out))
    _print(res.summary)


def cmd_export(args: argparse.Namespace) -> None:
    from hammer_core import stages

    _print(stages.export(Path(args.input), Path(args.out)).manifest)


def cmd_eval(args: argparse.Namespace) -> None:
    from hammer_core import stages

    _print(stages.evaluate(_config(args), Path(args.model), Path(args.input), Path(args.out)).metrics)


def cmd_register(args: argparse.Namespace) -> None:
    from hammer_core import stages

    _print(stages.register(_config(args), Path(args.input), Path(args.out) if args.out else None))


def _run_flow(config: str, overrides: list[str]) -> dict[str, Any]:
    from flows.pipeline import hammer_pipeline

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
        f"  MLflow       {reg['tracking_uri']}  run {reg['run_id']}",
    ]
    if "version" in reg:
        lines.append(f"  model        {reg['registered_uri']}  (alias: candidate)")
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
    overrides = [f"output_dir={Path(args.out).resolve()}"] + list(args.set or [])
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    load_config(DEMO_CONFIG, overrides)
    _report(_run_flow(str(DEMO_CONFIG), overrides))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="hammer", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Hammer function-calling pipeline: corpus -> irrelevance + masking -> CGC-LoRA "
                    "training -> evaluation -> MLflow registry.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("ingest", help="normalize corpora to the canonical Parquet schema (+ rejects)",
                       description="Read corpora (xLAM JSON/JSONL/Parquet), validate every row, write "
                                   "examples.parquet, rejects.parquet and a summary; prints a JSON summary line.")
    _common(p, inp=None)
    p.add_argument("--input", nargs="+", help="corpus files (default: the config's data.sources)")
    p.add_argument("--task", help="CGC-LoRA task label for --input (default: file stem)")
    p.add_argument("--format", default="auto", help="input format (default: auto-detect)")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("prepare", help="split, irrelevance synthesis, masking, rendering, tokenization",
                       description="Turn ingested examples into the train/eval mix and token ids.")
    _common(p, inp="ingest output folder (or an examples.parquet)")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train", help="CGC-LoRA training on the prepared tokens",
                       description="Train CGC-LoRA (task-common + task-specific experts, task-ID gate).")
    _common(p, inp="prepare output folder")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("export", help="collapse each task into a standard PEFT LoRA adapter (1 + N)",
                       description="Write one PEFT LoRA adapter per task next to the base model reference.")
    _common(p, inp="train output folder")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("eval", help="greedy decoding on the held-out split; exact match, irrelevance",
                       description="Evaluate a trained model on the prepared eval split.")
    _common(p, inp="prepare output folder")
    p.add_argument("--model", required=True, help="train output folder")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("register", help="log the run to MLflow and register the model version",
                       description="Log params, metrics and artifacts of a pipeline output folder to MLflow "
                                   "and register the pyfunc model (MLFLOW_TRACKING_URI is honoured).")
    _common(p, inp="pipeline output folder (holding ingest/ prepare/ train/ export/ eval/)", out=False)
    p.add_argument("--out", help="where registry.json goes (default: INPUT/register)")
    p.set_defaults(func=cmd_register)

    p = sub.add_parser("run", help="the whole pipeline as a Prefect flow run",
                       description="Run every stage as a Prefect flow (embedded Prefect unless PREFECT_API_URL is set).")
    p.add_argument("config_file", metavar="CONFIG", help="pipeline YAML")
    p.add_argument("--seed", type=int)
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="the main job: the whole pipeline on the bundled sample, tiny model",
                       description="Run the pipeline on data/sample with the tiny Qwen2 preset, embedded Prefect "
                                   "and a local sqlite MLflow store.")
    p.add_argument("--out", default=".hammer/demo", help="output folder (default: .hammer/demo)")
    p.add_argument("--seed", type=int)
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.set_defaults(func=cmd_demo)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ConfigError as err:
        print(f"hammer: {err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError) as err:
        print(f"hammer: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
