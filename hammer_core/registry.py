"""The register stage: one MLflow run per pipeline run, and a registered model version.

Tracking store: ``registry.tracking_uri`` from the config, else ``MLFLOW_TRACKING_URI``
(so users point the pipeline at their server the usual way), else a sqlite store in a
project-local folder (``registry.local_dir``, default ``.hammer/mlflow``)::

    mlflow ui --backend-store-uri sqlite:///.hammer/mlflow/mlflow.db

The run holds the config as params, the training curve and eval metrics, the stage
summaries and manifests, and a pyfunc model (logged from code, no pickle) whose artifacts
are the exported base + N PEFT adapters. The registered version carries lineage tags
(data artifact hashes, config hash, code version) and the alias ``candidate``. The eval
stage's report (``report.md``), its PNG plots and per-row predictions are logged under
``eval/``; :func:`compare_versions` (``hammer eval compare``) sets the eval metrics of two
registered versions side by side.
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

# What the eval stage leaves for a person to read: metrics, the markdown report, its plots, and
# the per-row predictions (held-out split, robustness study, BFCL), logged under ``eval/``.
EVAL_ARTIFACTS = ["metrics.json", "report.md", "accuracy_by_category.png", "relevance.png", "robustness.png",
                  "robustness.json", "bfcl.json", "predictions.parquet", "robustness.parquet",
                  "bfcl_predictions.parquet"]


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
    # The train stage opened this pipeline's run and logged the training live: continue it.
    trained_in = _training_run(MlflowClient(tracking_uri=uri), uri, train_dir)
    if trained_in is not None:
        exp_id = trained_in.info.experiment_id
    with (mlflow.start_run(run_id=trained_in.info.run_id) if trained_in is not None else
          mlflow.start_run(experiment_id=exp_id, run_name=f"hammer-{cfg.fingerprint()[:8]}")) as run:
        mlflow.set_tags(lineage)
        logged = trained_in.data.params if trained_in is not None else {}
        mlflow.log_params({k: str(v)[:6000] for k, v in flatten(cfg.model_dump(mode="json")).items()
                           if k not in logged})
        if trained_in is None:  # a train folder without live tracking: log its curve now
            for line in (train_dir / "metrics.jsonl").read_text().splitlines():
                rec = json.loads(line)
                mlflow.log_metrics({f"train/{k}": v for k, v in rec.items() if k != "step"}, step=rec["step"])
        mlflow.log_metrics({f"eval/{k}": float(v) for k, v in metrics.items()})
        mlflow.log_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), "config.yaml")
        for stage_dir, names in ((ingest_dir, ["summary.json", "examples.manifest.json", "rejects.manifest.json"]),
                                 (prepare_dir, ["summary.json", "train.manifest.json", "eval.manifest.json"]),
                                 (train_dir, ["train_summary.json", "metrics.jsonl", "loss.png"]),
                                 (eval_dir, EVAL_ARTIFACTS)):
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


def compare_versions(cfg: PipelineConfig, a: str | int, b: str | int, *, model_name: str | None = None) -> dict[str, Any]:
    """Eval metrics of two registered versions side by side.

    ``a`` and ``b`` are version numbers or aliases (``@candidate``, ``champion``); the metrics
    are the ``eval/*`` metrics of the run that logged each version. Returns ``{"model_name",
    "a": {"version", "run_id", "metrics"}, "b": {...}, "delta": {metric: b - a}, "markdown"}``::

        res = compare_versions(cfg, 1, "@candidate")
        print(res["markdown"])      # or: hammer eval compare --config cfg.yaml --a 1 --b @candidate
    """
    from mlflow import MlflowClient

    from hammer_core.reports import comparison_markdown

    uri = resolve_tracking_uri(cfg)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    name = model_name or cfg.registry.model_name

    def side(ref: str | int) -> dict[str, Any]:
        ref = str(ref)
        mv = (client.get_model_version_by_alias(name, ref.lstrip("@")) if not ref.isdigit()
              else client.get_model_version(name, ref))
        if not mv.run_id:
            raise ValueError(f"{name} version {mv.version} has no run, so no eval metrics")
        run_metrics = client.get_run(mv.run_id).data.metrics
        return {"version": int(mv.version), "run_id": mv.run_id,
                "metrics": {k.removeprefix("eval/"): v for k, v in sorted(run_metrics.items()) if k.startswith("eval/")}}

    left, right = side(a), side(b)
    delta = {k: round(right["metrics"][k] - left["metrics"][k], 6)
             for k in left["metrics"] if k in right["metrics"]}
    md = comparison_markdown(f"{name}: version {left['version']} vs {right['version']}",
                             (f"v{left['version']}", f"v{right['version']}"), left["metrics"], right["metrics"])
    return {"model_name": name, "a": left, "b": right, "delta": delta, "markdown": md}


def _training_run(client: Any, uri: str, train_dir: Path) -> Any:
    """The MLflow run the train stage logged to (``mlflow_run.json``), if it is in this store."""
    pointer = _read_json(train_dir / "mlflow_run.json")
    if pointer.get("tracking_uri") != uri or not pointer.get("run_id"):
        return None
    try:
        run = client.get_run(pointer["run_id"])
    except Exception:  # noqa: BLE001 - deleted or unknown: open a new run
        return None
    return run if run.info.lifecycle_stage == "active" else None


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{p}=={version(p).split('+')[0]}" for p in
            ("torch", "transformers", "peft", "safetensors", "tokenizers", "mlflow", "pyarrow", "pydantic",
             "pyyaml")]
