"""Prefect tasks: thin wrappers of :mod:`hammer_core.stages` that add retries and artifacts.

Each task takes the validated config and folder paths, runs the core stage, publishes a
markdown artifact a person can read in the Prefect UI, and returns the stage's output
folder (plain strings travel well between tasks and across processes).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from hammer_core import stages
from hammer_core.config import PipelineConfig


def _table(d: dict) -> str:
    rows = "\n".join(f"| {k} | {json.dumps(v) if isinstance(v, (dict, list)) else v} |" for k, v in d.items())
    return "| key | value |\n|---|---|\n" + rows


def _publish(key: str, title: str, body: dict) -> None:
    create_markdown_artifact(key=key, markdown=f"## {title}\n\n{_table(body)}\n", description=title)


@task(name="ingest", cache_policy=NO_CACHE)
def ingest_task(cfg: PipelineConfig) -> str:
    out = cfg.stage_dir("ingest")
    res = stages.ingest(cfg, out)
    _publish("hammer-ingest", "Ingestion", res.summary)
    return str(out)


@task(name="prepare", cache_policy=NO_CACHE)
def prepare_task(cfg: PipelineConfig, ingest_dir: str) -> str:
    out = cfg.stage_dir("prepare")
    res = stages.prepare(cfg, Path(ingest_dir), out)
    _publish("hammer-prepare", "Prepared data (irrelevance + masking + tokens)",
             {"train": res.summary["train"], "eval": res.summary["eval"],
              "rejected_too_long": res.summary["rejected_too_long"],
              "train_tokens": res.summary["train_tokens"]})
    return str(out)


@task(name="train", cache_policy=NO_CACHE)
def train_task(cfg: PipelineConfig, prepare_dir: str) -> str:
    out = cfg.stage_dir("train")
    res = stages.train(cfg, Path(prepare_dir), out)
    _publish("hammer-train", "CGC-LoRA training", res.summary)
    return str(out)


@task(name="export", cache_policy=NO_CACHE)
def export_task(train_dir: str, out_dir: str) -> str:
    res = stages.export(Path(train_dir), Path(out_dir))
    _publish("hammer-export", "1 + N export (PEFT LoRA adapters)", res.manifest)
    return out_dir


@task(name="evaluate", cache_policy=NO_CACHE)
def eval_task(cfg: PipelineConfig, train_dir: str, prepare_dir: str) -> dict:
    res = stages.evaluate(cfg, Path(train_dir), Path(prepare_dir), cfg.stage_dir("eval"))
    # the report's tables; the UI cannot show local images, so the PNG files are named instead
    folder = res.report.parent.resolve()
    body = re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", lambda m: f"*plot ({m.group(1)}): `{folder / m.group(2)}`*",
                  res.report.read_text())
    create_markdown_artifact(key="hammer-eval", markdown=body, description="Evaluation report")
    return res.metrics


@task(name="register", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[5, 20])
def register_task(cfg: PipelineConfig, run_dir: str) -> dict:
    res = stages.register(cfg, Path(run_dir))
    _publish("hammer-register", "MLflow registration",
             {k: v for k, v in res.items() if k != "metrics"})
    return res
