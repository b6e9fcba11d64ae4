"""The whole pipeline as one Prefect flow: the data, train, eval and register flows as subflows.

``hammer-pipeline`` (parameters ``config_path``, ``overrides``) runs ``hammer-data`` (ingest +
prepare), ``hammer-train`` (train + export), ``hammer-eval`` and ``hammer-register`` (see
:mod:`flows.stages`), and keeps a progress artifact (stage k of N) up to date. Unchanged stages
are served from the cache. Without ``PREFECT_API_URL`` Prefect runs it against a temporary
local (embedded) API; with it, the run shows up on that server like any deployment run.
"""

from __future__ import annotations

from typing import Any

from prefect import Flow, flow
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from flows.stages import flow_config, guarded, hammer_data, hammer_eval, hammer_register, hammer_train
from hammer_core.locking import run_lock

#: (result name, subflow, the stages it runs)
SUBFLOWS: list[tuple[str, Flow, tuple[str, ...]]] = [
    ("data", hammer_data, ("ingest", "prepare")), ("train", hammer_train, ("train", "export")),
    ("eval", hammer_eval, ("eval",)), ("register", hammer_register, ("register",))]


def _pipeline(config_path: str, overrides: list[str] | None) -> dict[str, Any]:
    from hammer_core.mlflow_store import preflight

    cfg = flow_config(config_path, overrides)
    preflight(cfg)  # an unreachable tracking server fails now, not after training
    n = sum(len(stages) for *_, stages in SUBFLOWS)
    progress = create_progress_artifact(0.0, key="hammer-pipeline-progress",
                                        description=f"hammer-pipeline: stage 0 of {n} done")
    results: dict[str, Any] = {}
    done = 0
    with run_lock(cfg.output_dir):  # the whole run, so no other run writes between its parts
        for name, subflow, stages in SUBFLOWS:
            state = subflow(config_path=config_path, overrides=overrides, return_state=True)
            results[name] = state.result()  # a failed part raises its own error (one line, see guarded)
            done += len(stages)
            update_progress_artifact(progress, 100.0 * done / n,
                                     description=f"hammer-pipeline: stage {done} of {n} done ({', '.join(stages)})")
    return {"output_dir": cfg.output_dir, "metrics": results["eval"], "registry": results["register"],
            "export_dir": str(cfg.stage_dir("export")), "stages": results}


@flow(name="hammer-pipeline", log_prints=True)
def hammer_pipeline(config_path: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """Run every stage on the corpus named by the config; returns where everything went."""
    return guarded(_pipeline, config_path, overrides)
