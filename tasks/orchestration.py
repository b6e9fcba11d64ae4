"""How the flows run a stage: content-keyed caching, retries and the data task runner.

:func:`run_stage` is the one place a flow runs a stage task. From the config's
``orchestration`` section it attaches

- **caching** (``cache``): the task's cache key is :func:`hammer_core.caching.stage_key`
  (stage config + content hashes of its inputs + code version, never run ids). Results are
  persisted as JSON under ``<output_dir>/.cache/prefect`` beside the outputs they describe, so
  the temporary local API, a server, and separate processes all see the same cache. Before a
  cached result is used, the stage folder must still hold the files the run that made it
  wrote (:func:`hammer_core.caching.verify_stamp`); if not, the cache entry is refreshed and
  the stage runs. A stage served from the cache ends in the state ``Cached``.
- **retries** (``retries``, ``retry_delay_seconds``): only for transient failures
  (:mod:`tasks.retry`).

:func:`data_task_runner` builds the Prefect task runner the ingest shards run on (the prepare
task sends its blocks to the same kind of cluster itself, see ``hammer_core.data.prepare``)
(``task_runner: dask``: ``prefect_dask.DaskTaskRunner``, on ``dask_address`` or a local
cluster of ``dask_workers`` processes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from prefect import Task, get_run_logger
from prefect.cache_policies import NO_CACHE, CachePolicy

from hammer_core import caching
from hammer_core.config import ConfigError, PipelineConfig
from tasks.retry import retry_options

CACHE_SUBDIR = Path(".cache") / "prefect"


@dataclass
class StageCache(CachePolicy):
    """A cache policy whose key was computed up front (:func:`hammer_core.caching.stage_key`)."""

    key: str = ""

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> Optional[str]:
        return self.key


def cache_storage(cfg: PipelineConfig) -> Path:
    """Where cached stage results (small JSON summaries) are persisted (a local folder; Prefect
    reads a Path as an unsaved LocalFileSystem, so no storage block has to be registered)."""
    return (Path(cfg.output_dir) / CACHE_SUBDIR).resolve()


def stage_key(stage: str, cfg: PipelineConfig) -> str | None:
    """The stage's cache key with its inputs read from the stage folders of ``cfg``, or None
    when caching is off or the stage is never cached."""
    if not cfg.orchestration.cache:
        return None
    dirs = {s: cfg.stage_dir(s) for s in ("ingest", "prepare", "train")}
    return caching.stage_key(stage, cfg, dirs)


def is_current(stage: str, cfg: PipelineConfig, key: str | None = None) -> bool:
    """True when the stage folder holds the output of this exact key (cache on)."""
    key = key if key is not None else stage_key(stage, cfg)
    return key is not None and caching.verify_stamp(cfg.stage_dir(stage), key)


def run_stage(stage_task: Task, stage: str, cfg: PipelineConfig, *args: Any, **kwargs: Any) -> Any:
    """Run ``stage_task(cfg, *args, **kwargs)`` with the config's caching and retries; returns
    its result (raises its exception when it fails)."""
    key = stage_key(stage, cfg)
    options: dict[str, Any] = retry_options(cfg)
    if key is None:
        options["cache_policy"] = NO_CACHE
        current = False
    else:
        current = caching.verify_stamp(cfg.stage_dir(stage), key)
        options.update(cache_policy=StageCache(key=key), persist_result=True, result_serializer="json",
                       result_storage=cache_storage(cfg), refresh_cache=not current)
    state = stage_task.with_options(**options)(cfg, *args, return_state=True, **kwargs)
    result = state.result()  # raises the stage's exception if it failed
    if key is not None and state.name != "Cached":
        caching.write_stamp(cfg.stage_dir(stage), stage, key)
    get_run_logger().info("%s: %s", stage, "cached (inputs and config unchanged)" if state.name == "Cached"
                          else "done")
    return result


def data_task_runner(cfg: PipelineConfig) -> Any:
    """The task runner of the ingest shards: prefect-dask's DaskTaskRunner for ``dask``."""
    o = cfg.orchestration
    if o.task_runner != "dask":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=1)
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise ConfigError("orchestration.task_runner is 'dask' but prefect-dask is not installed: "
                          "pip install prefect-dask (it brings dask and distributed), or set "
                          "orchestration.task_runner: local") from None
    if o.dask_address:
        return DaskTaskRunner(address=o.dask_address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": o.dask_workers, "threads_per_worker": 1,
                                          "dashboard_address": None})
