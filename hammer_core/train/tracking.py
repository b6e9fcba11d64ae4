"""Live MLflow tracking of a training run (rank 0 only; no Prefect here).

One pipeline run is one MLflow run. The train stage opens it and logs while it trains:

* params: every config value, flattened (``train.lr``, ``adapter.n_common``, ...), plus the
  process layout (``run.world_size``, ``run.zero_stage``, ...);
* per optimizer step: ``train/loss``, ``train/lr``, ``train/grad_norm``, ``train/tokens_per_s``
  and ``train/loss/<task>`` for every task in the step; system metrics (CPU, memory, GPU when
  there is one) from MLflow's own sampler, every 5 s (``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL``
  overrides);
* inputs: the Parquet artifacts training read, as MLflow datasets (digest: the manifest's
  content hash, cut to the 36 characters MLflow stores; the full hash is a tag of the input);
* artifacts: each checkpoint (``train/checkpoints/step-N``) and the final adapter
  (``train/adapter``).

Where the run lives: :func:`hammer_core.mlflow_store.resolve_tracking_uri` (the config's
``registry.tracking_uri``, else ``MLFLOW_TRACKING_URI``, else a local sqlite store). The run id
is written to ``mlflow_run.json`` in the train folder, and in the pipeline folder when the
train folder is ``<output_dir>/train``; the register stage finds it there and adds the eval
metrics and the model to the same run instead of opening a second one. A resumed training
(after a crash) re-attaches to the run of the training it continues; a fresh training opens a
new run.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from hammer_core.artifacts import Artifact, atomic_write_json, open_artifact
from hammer_core.config import PipelineConfig

POINTER_NAME = "mlflow_run.json"
SYSTEM_METRICS_INTERVAL_S = 5.0
MLFLOW_DIGEST_CHARS = 36  # the width of MLflow's dataset digest column



def config_params(cfg: PipelineConfig) -> dict[str, str]:
    """Every config value as an MLflow param (the same strings the register stage logs)."""
    from hammer_core.mlflow_store import flatten

    return {k: str(v)[:6000] for k, v in flatten(cfg.model_dump(mode="json")).items()}


def pointer_paths(cfg: PipelineConfig, train_dir: Path) -> list[Path]:
    """Where the run id is recorded: the train folder, and the pipeline folder if it holds it."""
    paths = [Path(train_dir) / POINTER_NAME]
    if Path(train_dir).resolve() == cfg.stage_dir("train").resolve():
        paths.append(Path(cfg.output_dir) / POINTER_NAME)
    return paths


def read_pointer(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("run_id") else None


def input_artifacts(tokens: Artifact) -> list[Artifact]:
    """The tokens artifact and its parents found beside it (e.g. ``train.parquet``)."""
    found = [tokens]
    parents = set(tokens.manifest.get("parents", []))
    for manifest in sorted(tokens.path.parent.glob("*.manifest.json")):
        if not parents:
            break
        try:
            art = open_artifact(manifest.with_name(manifest.name.removesuffix(".manifest.json") + ".parquet"))
        except (OSError, ValueError):
            continue
        if art.content_hash in parents:
            found.append(art)
            parents.discard(art.content_hash)
    return found


class Tracker:
    """An open MLflow run that the training logs to; :meth:`disabled` gives a no-op one."""

    def __init__(self, mlflow: Any = None, run_id: str | None = None, tracking_uri: str | None = None,
                 experiment_id: str | None = None, resumed: bool = False) -> None:
        self._mlflow, self.run_id, self.tracking_uri = mlflow, run_id, tracking_uri
        self._scope: Any = None  # the use_tracking_uri block open while the run is
        self.experiment_id, self.resumed = experiment_id, resumed

    @classmethod
    def disabled(cls) -> "Tracker":
        return cls()

    @property
    def enabled(self) -> bool:
        return self._mlflow is not None

    @classmethod
    def open(cls, cfg: PipelineConfig, train_dir: Path, *, resuming: bool, run_name: str | None = None) -> "Tracker":
        """Start (or, when ``resuming``, re-attach to) the MLflow run and record its id."""
        from hammer_core.mlflow_store import preflight, use_tracking_uri

        uri = preflight(cfg)  # an unreachable server is one clear error, not MLflow's retry loop
        scope = use_tracking_uri(uri)  # left in close(): the environment is not changed for good
        scope.__enter__()
        try:
            tracker = cls._start(cfg, train_dir, uri, resuming=resuming, run_name=run_name)
        except BaseException:
            scope.__exit__(None, None, None)
            raise
        tracker._scope = scope
        return tracker

    @classmethod
    def _start(cls, cfg: PipelineConfig, train_dir: Path, uri: str, *, resuming: bool,
               run_name: str | None) -> "Tracker":
        import mlflow
        from mlflow import MlflowClient

        from hammer_core.mlflow_store import experiment_id

        exp_id = experiment_id(mlflow, cfg)
        run_id = None
        if resuming:
            pointer = read_pointer(Path(train_dir) / POINTER_NAME)
            if pointer and pointer.get("tracking_uri") == uri:
                try:
                    if MlflowClient(tracking_uri=uri).get_run(pointer["run_id"]).info.lifecycle_stage == "active":
                        run_id = pointer["run_id"]
                except Exception:  # noqa: BLE001 - a deleted or foreign run: open a new one
                    run_id = None
        if not os.environ.get("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"):  # MLflow's own knob wins
            mlflow.set_system_metrics_sampling_interval(SYSTEM_METRICS_INTERVAL_S)
        run = mlflow.start_run(run_id=run_id, experiment_id=None if run_id else exp_id,
                               run_name=None if run_id else (run_name or f"hammer-{cfg.fingerprint()[:8]}"),
                               log_system_metrics=True)
        tracker = cls(mlflow, run.info.run_id, uri, exp_id, resumed=run_id is not None)
        pointer = {"tracking_uri": uri, "experiment_id": exp_id, "run_id": run.info.run_id}
        for path in pointer_paths(cfg, Path(train_dir)):
            atomic_write_json(path, pointer)
        return tracker

    # ------------------------------------------------------------------------------ logging
    def log_params(self, params: dict[str, Any]) -> None:
        """Log params not yet on the run (a re-attached run already has the same values)."""
        if not self.enabled:
            return
        existing = self._mlflow.get_run(self.run_id).data.params if self.resumed else {}
        new = {k: str(v)[:6000] for k, v in params.items() if k not in existing}
        if new:
            self._mlflow.log_params(new)

    def _during_training(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> None:
        """Per-step logging must not end a long training: a failed call is a warning (the
        figures are in ``metrics.jsonl`` and the checkpoints stay on disk either way)."""
        if not self.enabled:
            return
        try:
            fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - tracking server hiccup, disk full on its side, ...
            warnings.warn(f"MLflow: could not log {what} to run {self.run_id}: {err}", RuntimeWarning, stacklevel=3)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.enabled:
            self._during_training("metrics", self._mlflow.log_metrics,
                                  {k: float(v) for k, v in metrics.items()}, step=step)

    def log_inputs(self, tokens: Artifact) -> None:
        """The Parquet inputs as MLflow datasets, identified by their content hashes."""
        if not self.enabled:
            return
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.data.sources import LocalArtifactDatasetSource

        for art in input_artifacts(tokens):
            digest = art.content_hash.removeprefix("sha256:")[:MLFLOW_DIGEST_CHARS]
            ds = MetaDataset(LocalArtifactDatasetSource(str(art.path.resolve())), name=art.path.stem, digest=digest)
            self._mlflow.log_input(ds, context="training",
                                   tags={"content_hash": art.content_hash, "rows": str(art.rows),
                                         "kind": str(art.manifest.get("kind", ""))})

    def log_artifacts(self, local_dir: Path, artifact_path: str) -> None:
        if self.enabled:
            self._during_training(artifact_path, self._mlflow.log_artifacts, str(local_dir),
                                  artifact_path=artifact_path)

    def log_artifact(self, local_file: Path, artifact_path: str) -> None:
        if self.enabled and Path(local_file).exists():
            self._mlflow.log_artifact(str(local_file), artifact_path=artifact_path)

    def close(self, status: str = "FINISHED") -> None:
        if self.enabled:
            try:
                self._mlflow.end_run(status=status)
            finally:
                self._mlflow = None
                scope, self._scope = self._scope, None
                if scope is not None:
                    scope.__exit__(None, None, None)
