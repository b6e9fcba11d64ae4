"""One Prefect flow per part of the pipeline, each runnable by itself or as a subflow.

=================  ==========================  ============================================
flow               stages                      reads (under the config's ``output_dir``)
=================  ==========================  ============================================
``hammer-data``    ingest (+ shards), prepare  the corpora in ``data.sources``
``hammer-train``   train, export               ``prepare/``
``hammer-eval``    evaluate                    ``prepare/``, ``train/``
``hammer-register``  register (MLflow)         every stage folder
=================  ==========================  ============================================

Every flow takes the same two parameters as the whole pipeline: ``config_path`` (the YAML)
and ``overrides`` (``key.sub=value`` strings), and validates them into the one config. It
holds the lock of the config's ``output_dir`` while its stages run
(:func:`hammer_core.locking.run_lock`: a second run on the folder waits or stops with one line;
the flows of one pipeline run share it). A
stage whose inputs and config are unchanged is served from the cache (see
:mod:`tasks.orchestration`). A bad config, a missing input folder or an unreachable registry
ends the flow run Failed with a one-line ``hammer: ...`` message (no traceback).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Failed

from hammer_core.artifacts import ArtifactError
from hammer_core.config import ConfigError, PipelineConfig, load_config
from hammer_core.train.distributed import TrainingError
from hammer_core.locking import FolderBusy, run_lock
from tasks.orchestration import data_task_runner, is_current, run_stage, stage_key
from tasks.retry import retry_options
from tasks.stages import (eval_task, export_task, ingest_shard_task, ingest_task, prepare_task, register_task,
                          train_task)

#: Failures a user fixes (config, inputs, services, a folder another run holds): reported as
#: one line, not a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, TrainingError, FileNotFoundError, IsADirectoryError,
                                                ArtifactError, FolderBusy)


def user_errors() -> tuple[type[BaseException], ...]:
    from hammer_core.mlflow_store import RegistryUnavailable

    return USER_ERRORS + (RegistryUnavailable,)


def guarded(body: Callable[..., Any], *args: Any) -> Any:
    """Run a flow body; a user-facing failure becomes a Failed state with a one-line message
    (calling the flow still raises the original exception)."""
    try:
        return body(*args)
    except user_errors() as err:
        get_run_logger().error("hammer: %s", err)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return Failed(message=f"hammer: {first}", data=err)


def flow_config(config_path: str, overrides: list[str] | None) -> PipelineConfig:
    cfg = load_config(config_path, overrides)
    get_run_logger().info("output folder: %s (config %s)", cfg.output_dir, cfg.fingerprint())
    return cfg


# ------------------------------------------------------------------------------ data
@flow(name="hammer-ingest-shards")
def hammer_ingest_shards(cfg: PipelineConfig) -> list[str]:
    """Read, normalize and validate every source as its own task, on the flow's task runner."""
    shard = ingest_shard_task.with_options(**retry_options(cfg))
    futures = [shard.submit(cfg, i) for i in range(len(cfg.data.sources))]
    return [f.result() for f in futures]


def run_ingest(cfg: PipelineConfig) -> dict[str, Any]:
    """The ingest stage: one task (local), or one shard per source on Dask and a merge
    (``orchestration.task_runner: dask``); same bytes either way."""
    shards = None
    if cfg.orchestration.task_runner == "dask" and not is_current("ingest", cfg, stage_key("ingest", cfg)):
        runner = data_task_runner(cfg)
        shards = hammer_ingest_shards.with_options(task_runner=runner)(cfg)
    return run_stage(ingest_task, "ingest", cfg, shards)


def _data(config_path: str, overrides: list[str] | None) -> dict[str, Any]:
    cfg = flow_config(config_path, overrides)
    with run_lock(cfg.output_dir):
        ingest = run_ingest(cfg)
        prepare = run_stage(prepare_task, "prepare", cfg, str(cfg.stage_dir("ingest")))
        return {"ingest": ingest, "prepare": prepare}


@flow(name="hammer-data", log_prints=True)
def hammer_data(config_path: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """Ingest the corpora and prepare the training mix (irrelevance, masking, tokens)."""
    return guarded(_data, config_path, overrides)


# ------------------------------------------------------------------------------ train
def _train(config_path: str, overrides: list[str] | None) -> dict[str, Any]:
    cfg = flow_config(config_path, overrides)
    with run_lock(cfg.output_dir):
        train = run_stage(train_task, "train", cfg, str(cfg.stage_dir("prepare")))
        export = run_stage(export_task, "export", cfg, str(cfg.stage_dir("train")))
        return {"train": train, "export": export}


@flow(name="hammer-train", log_prints=True)
def hammer_train(config_path: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """Train CGC-LoRA on the prepared tokens and export one PEFT adapter per task."""
    return guarded(_train, config_path, overrides)


# ------------------------------------------------------------------------------ eval
def _eval(config_path: str, overrides: list[str] | None) -> dict[str, Any]:
    cfg = flow_config(config_path, overrides)
    with run_lock(cfg.output_dir):
        return run_stage(eval_task, "eval", cfg, str(cfg.stage_dir("train")), str(cfg.stage_dir("prepare")))


@flow(name="hammer-eval", log_prints=True)
def hammer_eval(config_path: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """Evaluate the trained model on the held-out split; returns the metrics."""
    return guarded(_eval, config_path, overrides)


# ------------------------------------------------------------------------------ register
def _register(config_path: str, overrides: list[str] | None) -> dict[str, Any]:
    from hammer_core.mlflow_store import preflight

    cfg = flow_config(config_path, overrides)
    with run_lock(cfg.output_dir):
        preflight(cfg)
        return run_stage(register_task, "register", cfg, cfg.output_dir)


@flow(name="hammer-register", log_prints=True)
def hammer_register(config_path: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """Log the run to MLflow and register the model version (never cached)."""
    return guarded(_register, config_path, overrides)
