"""The register stage: one MLflow run per pipeline run, and a registered model version.

Tracking store: ``registry.tracking_uri`` from the config, else ``MLFLOW_TRACKING_URI``
(so users point the pipeline at their server the usual way), else a sqlite store in a
project-local folder (``registry.local_dir``, default ``.hammer/mlflow``)::

    mlflow ui --backend-store-uri sqlite:///.hammer/mlflow/mlflow.db

The run holds the config as params, the training curve and eval metrics, the stage
summaries and manifests, and a pyfunc model (logged from code, no pickle) whose artifacts
are the exported base + N PEFT adapters. The registered version carries lineage tags
(data artifact hashes, config hash, code version) and the alias ``candidate``.
"""

from __future__ import annotations

import json
import os
import subprocess
import warnings
from pathlib import Path
from typing import Any

import yaml

from hammer_core import __version__
from hammer_core.artifacts import atomic_write_json
from hammer_core.config import PipelineConfig

PACKAGE_DIR = Path(__file__).resolve().parent


def resolve_tracking_uri(cfg: PipelineConfig) -> str:
    if cfg.registry.tracking_uri:
        return cfg.registry.tracking_uri
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    local = Path(cfg.registry.local_dir).resolve()
    local.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{local / 'mlflow.db'}"


def _is_local_default(cfg: PipelineConfig) -> bool:
    return not cfg.registry.tracking_uri and not os.environ.get("MLFLOW_TRACKING_URI")


def code_version() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PACKAGE_DIR, capture_output=True,
                             text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(d, list) and d and all(isinstance(x, dict) for x in d):
        for i, v in enumerate(d):
            out.update(flatten(v, f"{prefix}{i}."))
    else:
        out[prefix[:-1]] = d if not isinstance(d, (list, dict)) else json.dumps(d)
    return out


def _experiment_id(mlflow, cfg: PipelineConfig) -> str:
    exp = mlflow.get_experiment_by_name(cfg.registry.experiment)
    if exp is not None:
        return exp.experiment_id
    kwargs = {}
    if _is_local_default(cfg):
        kwargs["artifact_location"] = (Path(cfg.registry.local_dir).resolve() / "artifacts").as_uri()
    return mlflow.create_experiment(cfg.registry.experiment, **kwargs)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def register(cfg: PipelineConfig, *, ingest_dir: Path, prepare_dir: Path, train_dir: Path,
             export_dir: Path, eval_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Log the whole pipeline run to MLflow and register the model; returns where it went."""
    import mlflow
    from mlflow import MlflowClient

    uri = resolve_tracking_uri(cfg)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    exp_id = _experiment_id(mlflow, cfg)

    lineage = {
        "hammer.config_hash": cfg.fingerprint(),
        "hammer.code_version": code_version(),
        "hammer.examples_hash": _read_json(ingest_dir / "examples.manifest.json").get("content_hash", ""),
        "hammer.train_hash": _read_json(prepare_dir / "train.manifest.json").get("content_hash", ""),
        "hammer.eval_hash": _read_json(prepare_dir / "eval.manifest.json").get("content_hash", ""),
        "hammer.base_model": cfg.model.name_or_path,
    }
    metrics = _read_json(eval_dir / "metrics.json")
    with mlflow.start_run(experiment_id=exp_id, run_name=f"hammer-{cfg.fingerprint()[:8]}") as run:
        mlflow.set_tags(lineage)
        mlflow.log_params({k: str(v)[:6000] for k, v in flatten(cfg.model_dump(mode="json")).items()})
        history = (train_dir / "metrics.jsonl").read_text().splitlines()
        for line in history:
            rec = json.loads(line)
            mlflow.log_metrics({f"train/{k}": v for k, v in rec.items() if k != "step"}, step=rec["step"])
        mlflow.log_metrics({f"eval/{k}": float(v) for k, v in metrics.items()})
        mlflow.log_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), "config.yaml")
        for stage_dir, names in ((ingest_dir, ["summary.json", "examples.manifest.json", "rejects.manifest.json"]),
                                 (prepare_dir, ["summary.json", "train.manifest.json", "eval.manifest.json"]),
                                 (train_dir, ["train_summary.json", "metrics.jsonl", "loss.png"]),
                                 (eval_dir, ["metrics.json", "predictions.parquet"])):
            for name in names:
                if (stage_dir / name).exists():
                    mlflow.log_artifact(str(stage_dir / name), artifact_path=stage_dir.name)
        with warnings.catch_warnings():  # predict() takes free-form records on purpose
            warnings.filterwarnings("ignore", message=".*type hints to the `predict` method.*")
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(PACKAGE_DIR / "mlflow_model.py"),
                artifacts={"export": str(export_dir)},
                code_paths=[str(PACKAGE_DIR)],
                model_config={"max_new_tokens": cfg.eval.max_new_tokens},
                pip_requirements=_pip_requirements(),
            )
        result: dict[str, Any] = {"tracking_uri": uri, "experiment_id": exp_id, "run_id": run.info.run_id,
                                  "model_uri": info.model_uri, "metrics": metrics}
        if cfg.registry.register_model:
            mv = mlflow.register_model(info.model_uri, cfg.registry.model_name, tags=lineage)
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            client.set_registered_model_alias(cfg.registry.model_name, "candidate", mv.version)
            result.update(model_name=cfg.registry.model_name, version=int(mv.version),
                          registered_uri=f"models:/{cfg.registry.model_name}/{mv.version}")
    atomic_write_json(Path(out_dir) / "registry.json", result)
    return result


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{p}=={version(p).split('+')[0]}" for p in
            ("torch", "transformers", "peft", "safetensors", "tokenizers", "mlflow", "pyarrow", "pydantic",
             "pyyaml")]
