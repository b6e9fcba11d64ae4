"""The register stage: one MLflow run per pipeline run, a registered model version, its lineage.

The run holds the config as params, the training curve and eval metrics, the stage
summaries and manifests, and a pyfunc model (logged from code, no pickle; see
:mod:`hammer_core.registry.serving`) whose artifacts are the exported base + N standard PEFT
adapters (``artifacts/export/adapters/<task>/``) and ``artifacts/base_model.json`` (which base
the adapters apply to, and how to rebuild the tiny preset). The registered version carries
lineage tags (data artifact hashes, read from the files and checked against their manifests,
config hash, code version, ``hammer.lineage_key``), its eval metrics (``hammer.eval.*``) and the
alias ``candidate``. Registering an unchanged pipeline again (same lineage key) returns the
existing version instead of a duplicate. Stage folders that were not made one from the other, or
not with the config's data recipe and training settings, are refused (:func:`check_lineage`): a
version's tags describe the data and weights it carries. :func:`hammer_core.stages.register`
holds the run folder's lock meanwhile.

Then the champion gate runs (:func:`hammer_core.registry.promotion.promote`). The eval stage's
report, plots and per-row predictions are logged under ``eval/``. Where the store is:
:mod:`hammer_core.mlflow_store`.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import warnings
from pathlib import Path
from typing import Any

import yaml

from hammer_core import __version__, mlflow_store
from hammer_core.artifacts import (ArtifactError, atomic_write_json, atomic_write_text, manifest_path, open_artifact,
                                   sha256_file)
from hammer_core.config import PipelineConfig
from hammer_core.locking import LOCK_NAME
from hammer_core.registry.promotion import CANDIDATE, EVAL_TAG, promote


PACKAGE_DIR = Path(__file__).resolve().parents[1]  # hammer_core/: bundled with the registered model


# What the eval stage leaves for a person to read: metrics, the markdown report, its plots, and
# the per-row predictions (held-out split, robustness study, BFCL), logged under ``eval/``.
EVAL_ARTIFACTS = ["metrics.json", "report.md", "accuracy_by_category.png", "relevance.png", "robustness.png",
                  "robustness.json", "bfcl.json", "predictions.parquet", "robustness.parquet",
                  "bfcl_predictions.parquet"]


LINEAGE_KEY = "hammer.lineage_key"


def code_version() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PACKAGE_DIR, capture_output=True,
                             text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


def model_fingerprint(cfg: PipelineConfig) -> str:
    """Hash of the config sections that shape the model and its metrics (everything but
    ``output_dir``, ``registry`` and ``orchestration``)."""
    dump = cfg.model_dump(mode="json")
    for key in ("output_dir", "registry", "orchestration"):
        dump.pop(key, None)
    return hashlib.sha256(json.dumps(dump, sort_keys=True).encode()).hexdigest()[:16]


def tree_hash(folder: Path) -> str:
    """Content hash of a folder: every file's relative path and bytes (sorted; a lock file,
    which says who ran in the folder, is not its content)."""
    h = hashlib.sha256()
    folder = Path(folder)
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != LOCK_NAME):
        h.update(f"{path.relative_to(folder).as_posix()}\0{sha256_file(path)}\n".encode())
    return "sha256:" + h.hexdigest()


def data_hash(folder: Path, name: str) -> str:
    """The content hash of the artifact ``<folder>/<name>.parquet``, checked against the data
    file (:func:`~hammer_core.artifacts.open_artifact`); "" when there is none."""
    path = Path(folder) / f"{name}.parquet"
    return open_artifact(path).content_hash if manifest_path(path).exists() else ""


def check_lineage(cfg: PipelineConfig, *, ingest_dir: Path, prepare_dir: Path, train_dir: Path) -> None:
    """Refuse (:class:`~hammer_core.artifacts.ArtifactError`) stage folders that were not made
    one from the other, or not with this config's data recipe and training settings, so the
    tags of a registered version describe the data and weights it carries."""
    from hammer_core.caching import stage_config
    from hammer_core.config import config_from_dict
    from hammer_core.train.distributed import JOB_NAME

    recipe = json.loads(json.dumps(cfg.prepare.model_dump(exclude={"workers", "seed"})))
    # each prepare artifact and the one it was made from: the examples, or the split it tokenizes
    for name, source in (("train", ingest_dir / "examples.parquet"), ("eval", ingest_dir / "examples.parquet"),
                         ("train_tokens", prepare_dir / "train.parquet"), ("eval_tokens", prepare_dir / "eval.parquet")):
        manifest = _read_json(prepare_dir / f"{name}.manifest.json")
        parent = data_hash(source.parent, source.stem)
        if parent and manifest and parent not in manifest.get("parents", []):
            raise ArtifactError(f"{prepare_dir / (name + '.parquet')} was not made from {source} "
                                f"(its parent {','.join(manifest.get('parents', [])) or 'none'} != {parent}): "
                                "rerun prepare and the stages after it")
        extra = manifest.get("extra", {})
        if name in ("train", "eval") and manifest and (extra.get("seed"), extra.get("prepare")) != (cfg.prepare_seed(), recipe):
            raise ArtifactError(f"{prepare_dir} was made with another data recipe than this config's (prepare seed "
                                f"{extra.get('seed')} vs {cfg.prepare_seed()}): register with the config the run "
                                "used, or rerun the pipeline with this one")
    tokens = data_hash(prepare_dir, "train_tokens")
    trained_on = _read_json(train_dir / "train_summary.json").get("train_tokens_hash")
    if tokens and trained_on and trained_on != tokens:
        raise ArtifactError(f"{train_dir} was trained on other tokens than {prepare_dir / 'train_tokens.parquet'} holds "
                            f"({trained_on} != {tokens}): rerun train and the stages after it")
    job = _read_json(train_dir / "logs" / JOB_NAME)
    if job.get("config"):
        ran, this = (mlflow_store.flatten(stage_config("train", c))
                     for c in (config_from_dict(job["config"], "(train job)"), cfg))
        differ = sorted(k for k in ran.keys() | this.keys() if ran.get(k) != this.get(k))
        if differ:
            raise ArtifactError(f"{train_dir} was trained with other settings than this config's "
                                f"({', '.join(f'{k}: {ran.get(k)} vs {this.get(k)}' for k in differ[:4])}): "
                                "register with the config the run used, or rerun the pipeline with this one")


def lineage_tags(cfg: PipelineConfig, *, ingest_dir: Path, prepare_dir: Path, export_dir: Path,
                 eval_dir: Path) -> dict[str, str]:
    """The version's lineage tags; ``hammer.lineage_key`` hashes all the inputs that make the
    model what it is (data, config, exported weights, eval metrics) and nothing else. The data
    hashes are those of the files, checked against their manifests."""
    tags = {
        "hammer.config_hash": cfg.fingerprint(),
        "hammer.model_config_hash": model_fingerprint(cfg),
        "hammer.code_version": code_version(),
        "hammer.examples_hash": data_hash(ingest_dir, "examples"),
        "hammer.train_hash": data_hash(prepare_dir, "train"),
        "hammer.eval_hash": data_hash(prepare_dir, "eval"),
        "hammer.export_hash": tree_hash(export_dir) if Path(export_dir).is_dir() else "",
        "hammer.metrics_hash": sha256_file(eval_dir / "metrics.json") if (eval_dir / "metrics.json").exists() else "",
        "hammer.base_model": cfg.model.name_or_path,
    }
    keyed = {k: tags[k] for k in ("hammer.model_config_hash", "hammer.examples_hash", "hammer.train_hash",
                                  "hammer.eval_hash", "hammer.export_hash", "hammer.metrics_hash")}
    tags[LINEAGE_KEY] = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:32]
    return tags


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def base_model_reference(cfg: PipelineConfig, export_dir: Path) -> dict[str, Any]:
    """``base_model.json``: which base the exported adapters apply to, and how to get it.

    Paths are relative to the registered model's ``artifacts/`` folder."""
    manifest = _read_json(Path(export_dir) / "export_manifest.json")
    ref: dict[str, Any] = {
        "name_or_path": cfg.model.name_or_path, "revision": cfg.model.revision, "dtype": cfg.model.dtype,
        "trust_remote_code": cfg.model.trust_remote_code,
        "tokenizer": f"export/{manifest.get('tokenizer', 'tokenizer')}",
        "adapters": {t: f"export/{rel}" for t, rel in manifest.get("adapters", {}).items()},
        "tasks": manifest.get("tasks", []), "adapter_format": "peft-lora", "rank": manifest.get("rank"),
    }
    base = manifest.get("base_model")
    if base and (Path(export_dir) / base).is_dir():  # shipped beside the adapters (tiny preset)
        from hammer_core.model.base import TINY_ARCH

        vocab = _read_json(Path(export_dir) / base / "config.json").get("vocab_size")
        ref["weights"] = f"export/{base}"
        ref["load"] = "transformers.AutoModelForCausalLM.from_pretrained(<artifacts>/" + ref["weights"] + ")"
        ref["rebuild"] = {
            "how": "hammer_core.model.base.build_tiny_model(vocab_size, seed, dtype): a random-init Qwen2; "
                   "the same seed and torch version give the same weights as the shipped copy",
            "builder": "hammer_core.model.base.build_tiny_model", "vocab_size": vocab, "seed": cfg.seed,
            "arch": {"model_type": "qwen2", **TINY_ARCH},
        }
    else:
        ref["weights"] = None
        ref["load"] = ("transformers.AutoModelForCausalLM.from_pretrained(name_or_path, revision=revision, "
                       "dtype=dtype, use_safetensors=True)")
    return ref


# --------------------------------------------------------------------------- register
def register(cfg: PipelineConfig, *, ingest_dir: Path, prepare_dir: Path, train_dir: Path,
             export_dir: Path, eval_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Log the whole pipeline run to MLflow, register the model (alias ``candidate``) and run
    the promotion gate; returns where it went (``registry.json`` holds the same)."""
    import mlflow

    uri = mlflow_store.preflight(cfg)
    ingest_dir, prepare_dir, train_dir, export_dir, eval_dir, out_dir = map(
        Path, (ingest_dir, prepare_dir, train_dir, export_dir, eval_dir, out_dir))
    check_lineage(cfg, ingest_dir=ingest_dir, prepare_dir=prepare_dir, train_dir=train_dir)
    lineage = lineage_tags(cfg, ingest_dir=ingest_dir, prepare_dir=prepare_dir, export_dir=export_dir,
                           eval_dir=eval_dir)
    metrics = _read_json(eval_dir / "metrics.json")
    client = mlflow_store.client(uri)
    name = cfg.registry.model_name

    if cfg.registry.register_model:
        existing = _version_with_key(client, name, lineage[LINEAGE_KEY])
        if existing is not None:  # an unchanged pipeline, registered before: no duplicate version
            client.set_registered_model_alias(name, CANDIDATE, existing.version)
            result = {"tracking_uri": uri, "experiment_id": _run_experiment(client, existing.run_id),
                      "run_id": existing.run_id, "model_uri": existing.source, "metrics": metrics,
                      "model_name": name, "version": int(existing.version), "reused": True,
                      "registered_uri": f"models:/{name}/{existing.version}"}
            return _finish(cfg, result, out_dir)

    with mlflow_store.use_tracking_uri(uri):
        exp_id = mlflow_store.experiment_id(client, cfg)
        # The train stage opened this pipeline's run and logged the training live: continue it.
        trained_in = _training_run(client, uri, train_dir)
        if trained_in is not None:
            exp_id = trained_in.info.experiment_id
        base_ref = out_dir / "base_model.json"
        atomic_write_json(base_ref, base_model_reference(cfg, export_dir))
        with (mlflow.start_run(run_id=trained_in.info.run_id) if trained_in is not None else
              mlflow.start_run(experiment_id=exp_id, run_name=f"hammer-{cfg.fingerprint()[:8]}")) as run:
            mlflow.set_tags(lineage)
            logged = trained_in.data.params if trained_in is not None else {}
            mlflow.log_params({k: str(v)[:6000] for k, v in mlflow_store.flatten(cfg.model_dump(mode="json")).items()
                               if k not in logged})
            if trained_in is None and (train_dir / "metrics.jsonl").exists():  # no live tracking: log the curve
                for line in (train_dir / "metrics.jsonl").read_text().splitlines():
                    rec = json.loads(line)
                    mlflow.log_metrics({f"train/{k}": v for k, v in rec.items() if k != "step"}, step=rec["step"])
            mlflow.log_metrics({f"eval/{k}": float(v) for k, v in metrics.items() if _is_number(v)})
            mlflow.log_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), "config.yaml")
            for stage_dir, names in ((ingest_dir, ["summary.json", "examples.manifest.json", "rejects.manifest.json"]),
                                     (prepare_dir, ["summary.json", "train.manifest.json", "eval.manifest.json"]),
                                     (train_dir, ["train_summary.json", "metrics.jsonl", "loss.png"]),
                                     (eval_dir, EVAL_ARTIFACTS)):
                for fname in names:
                    if (stage_dir / fname).exists():
                        mlflow.log_artifact(str(stage_dir / fname), artifact_path=stage_dir.name)
            with warnings.catch_warnings():  # predict() takes free-form requests on purpose
                warnings.filterwarnings("ignore", message=".*type hints to the `predict` method.*")
                warnings.filterwarnings("ignore", message=".*signature.*")
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=str(PACKAGE_DIR / "registry" / "mlflow_model.py"),
                    artifacts={"export": str(export_dir), "base_model": str(base_ref)},
                    code_paths=[str(PACKAGE_DIR)],
                    model_config={"max_new_tokens": cfg.eval.max_new_tokens,
                                  "prompt_format": cfg.prepare.prompt_format, "model_name": name,
                                  **cfg.serving.model_dump(mode="json")},
                    pip_requirements=_pip_requirements(),
                )
            result: dict[str, Any] = {"tracking_uri": uri, "experiment_id": exp_id, "run_id": run.info.run_id,
                                      "model_uri": info.model_uri, "metrics": metrics}
            if cfg.registry.register_model:
                tags = {**lineage, **{f"{EVAL_TAG}{k}": str(v) for k, v in metrics.items() if _is_number(v)}}
                mv = mlflow.register_model(info.model_uri, name, tags=tags)
                client.set_registered_model_alias(name, CANDIDATE, mv.version)
                result.update(model_name=name, version=int(mv.version), reused=False,
                              registered_uri=f"models:/{name}/{mv.version}")
    return _finish(cfg, result, out_dir)


def _finish(cfg: PipelineConfig, result: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    if "version" in result and cfg.registry.promotion.enabled:
        decision = promote(cfg, result["version"])
        result["promotion"] = {k: v for k, v in decision.items() if k != "markdown"}
        result["champion_version"] = decision["champion_after"]
        atomic_write_text(Path(out_dir) / "promotion.md", decision["markdown"])
    atomic_write_json(Path(out_dir) / "registry.json", result)
    return result


def _run_experiment(client: Any, run_id: str | None) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id).info.experiment_id if run_id else None
    except MlflowException:
        return None


def _version_with_key(client: Any, name: str, key: str) -> Any:
    found = client.search_model_versions(f"name = '{_quote(name)}' and tags.`{LINEAGE_KEY}` = '{key}'")
    found = [v for v in found if getattr(v, "status", "READY") == "READY"]
    return min(found, key=lambda v: int(v.version)) if found else None


def _quote(s: str) -> str:
    return s.replace("'", "\\'")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


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


__all__ = ["EVAL_ARTIFACTS", "LINEAGE_KEY", "base_model_reference", "check_lineage", "lineage_tags", "model_fingerprint",
           "register"]
