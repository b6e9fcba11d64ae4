"""Prefect tasks: thin wrappers of :mod:`hammer_core.stages` that add artifacts.

Each task takes the validated config and folder paths, runs the core stage into its folder
(``cfg.stage_dir(stage)``), publishes markdown / table artifacts a person can read in the
Prefect UI, and returns a small JSON summary (what a cached run hands back). Caching and
retries are attached per run by :func:`tasks.orchestration.run_stage` from the config's
``orchestration`` section.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from hammer_core import stages
from hammer_core.config import PipelineConfig


def _table(d: dict) -> str:
    rows = "\n".join(f"| {k} | {json.dumps(v) if isinstance(v, (dict, list)) else v} |" for k, v in d.items())
    return "| key | value |\n|---|---|\n" + rows


def _publish(key: str, title: str, body: dict) -> None:
    create_markdown_artifact(key=key, markdown=f"## {title}\n\n{_table(body)}\n", description=title)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


@task(name="ingest-shard", cache_policy=NO_CACHE)
def ingest_shard_task(cfg: PipelineConfig, index: int) -> str:
    """Read, normalize and validate one source (one shard of a distributed ingest)."""
    return str(stages.ingest_shard(cfg, index))


@task(name="ingest", cache_policy=NO_CACHE)
def ingest_task(cfg: PipelineConfig, shards: list[str] | None = None) -> dict[str, Any]:
    res = stages.ingest(cfg, cfg.stage_dir("ingest"), shards=shards)
    s = res.summary
    _publish("hammer-ingest", "Ingestion", {k: s[k] for k in ("records", "examples", "kept", "rejected", "duplicates", "by_task")})
    create_table_artifact(
        key="hammer-ingest-sources", description="Ingestion per source: records read, examples made, kept, rejected, duplicates",
        table=[{"source": x["name"], "format": x["format"], "task": x["task"], "records": x["records"],
                "examples": x["examples"], "kept": x["kept"], "rejected": x["rejected"], "duplicates": x["duplicates"]}
               for x in res.sources])
    create_table_artifact(
        key="hammer-ingest-rejects", description="Rejected rows by reason (rejects.parquet holds each one)",
        table=[{"reason": r, "rows": n} for r, n in s["by_reason"].items()] or [{"reason": "(none)", "rows": 0}])
    return _jsonable(s)


@task(name="prepare", cache_policy=NO_CACHE)
def prepare_task(cfg: PipelineConfig, ingest_dir: str) -> dict[str, Any]:
    # task_runner dask: the blocks run on the Dask cluster too (same bytes as the local pool)
    res = stages.prepare(cfg, Path(ingest_dir), cfg.stage_dir("prepare"),
                         dask=cfg.orchestration.task_runner == "dask")
    s = res.summary
    _publish("hammer-prepare", "Prepared data (irrelevance + masking + tokens)",
             {"input_rows": s.get("input_rows"), "train": s["train"], "eval": s["eval"],
              "rejected_too_long": s["rejected_too_long"], "trimmed": s.get("trimmed"),
              "train_tokens": s["train_tokens"]})
    create_table_artifact(
        key="hammer-prepare-rows", description="Prepared rows per split",
        table=[{"split": split, **{k: v for k, v in (s[split] or {}).items() if not isinstance(v, (dict, list))}}
               for split in ("train", "eval") if isinstance(s.get(split), dict)])
    return _jsonable({k: s[k] for k in ("train", "eval", "rejected_too_long", "train_tokens") if k in s})


@task(name="train", cache_policy=NO_CACHE)
def train_task(cfg: PipelineConfig, prepare_dir: str) -> dict[str, Any]:
    res = stages.train(cfg, Path(prepare_dir), cfg.stage_dir("train"))
    _publish("hammer-train", "CGC-LoRA training", res.summary)
    return _jsonable(res.summary)


@task(name="export", cache_policy=NO_CACHE)
def export_task(cfg: PipelineConfig, train_dir: str) -> dict[str, Any]:
    res = stages.export(Path(train_dir), cfg.stage_dir("export"))
    _publish("hammer-export", "1 + N export (PEFT LoRA adapters)", res.manifest)
    return _jsonable(res.manifest)


@task(name="evaluate", cache_policy=NO_CACHE)
def eval_task(cfg: PipelineConfig, train_dir: str, prepare_dir: str) -> dict[str, Any]:
    res = stages.evaluate(cfg, Path(train_dir), Path(prepare_dir), cfg.stage_dir("eval"))
    # the report's tables; the UI cannot show local images, so the PNG files are named instead
    folder = res.report.parent.resolve()
    body = re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", lambda m: f"*plot ({m.group(1)}): `{folder / m.group(2)}`*",
                  res.report.read_text())
    create_markdown_artifact(key="hammer-eval", markdown=body, description="Evaluation report")
    create_table_artifact(key="hammer-eval-metrics", description="Evaluation metrics",
                          table=[{"metric": k, "value": v} for k, v in res.metrics.items()
                                 if isinstance(v, (int, float, str, bool)) or v is None])
    return _jsonable(res.metrics)


@task(name="register", cache_policy=NO_CACHE)
def register_task(cfg: PipelineConfig, run_dir: str) -> dict[str, Any]:
    res = stages.register(cfg, Path(run_dir))
    _publish("hammer-register", "MLflow registration",
             {k: v for k, v in res.items() if k not in ("metrics", "promotion")})
    promotion = Path(run_dir) / "register" / "promotion.md"
    if promotion.exists():  # the champion gate's decision and its metric table
        create_markdown_artifact(key="hammer-promotion", markdown=promotion.read_text(),
                                 description="Champion promotion gate")
    return _jsonable(res)
