"""The whole pipeline as one Prefect flow: ingest -> prepare -> train -> export -> eval -> register.

Without ``PREFECT_API_URL`` Prefect runs it against a temporary local (embedded) API; with
it, the run shows up on that server like any deployment run.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from hammer_core.config import load_config
from tasks import eval_task, export_task, ingest_task, prepare_task, register_task, train_task


@flow(name="hammer-pipeline", log_prints=True)
def hammer_pipeline(config_path: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """Run every stage on the corpus named by the config; returns where everything went."""
    cfg = load_config(config_path, overrides)
    log = get_run_logger()
    log.info("output folder: %s (config %s)", cfg.output_dir, cfg.fingerprint())
    ingest_dir = ingest_task(cfg)
    prepare_dir = prepare_task(cfg, ingest_dir)
    train_dir = train_task(cfg, prepare_dir)
    export_dir = export_task(train_dir, str(cfg.stage_dir("export")))
    metrics = eval_task(cfg, train_dir, prepare_dir)
    registry = register_task(cfg, cfg.output_dir)
    return {"output_dir": cfg.output_dir, "metrics": metrics, "registry": registry,
            "export_dir": export_dir}
