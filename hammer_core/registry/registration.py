"""The register stage: one MLflow run per pipeline run, a registered model version, and the
champion gate.

Tracking store: ``registry.tracking_uri`` from the config, else ``MLFLOW_TRACKING_URI``
(so users point the pipeline at their server the usual way), else a sqlite store in a
project-local folder (``registry.local_dir``, default ``.hammer/mlflow``)::

    mlflow ui --backend-store-uri sqlite:///.hammer/mlflow/mlflow.db

Every entry point first checks the store (:func:`preflight`): an unreachable server or an
unwritable folder is one :class:`RegistryUnavailable` that says what to do, within seconds,
instead of MLflow's long retry loop. The process environment is left as it was (MLflow's
``set_tracking_uri`` would export ``MLFLOW_TRACKING_URI`` to everything started later;
:func:`use_tracking_uri` scopes it).

The run holds the config as params, the training curve and eval metrics, the stage
summaries and manifests, and a pyfunc model (logged from code, no pickle; see
:mod:`hammer_core.registry.serving`) whose artifacts are the exported base + N standard PEFT adapters
(``artifacts/export/adapters/<task>/``) and ``artifacts/base_model.json`` (which base the
adapters apply to, and how to rebuild the tiny preset). The registered version carries
lineage tags (data artifact hashes, read from the files and checked against their manifests, config hash,
code version, ``hammer.lineage_key``), its
eval metrics (``hammer.eval.*``) and the alias ``candidate``. Registering an unchanged
pipeline again (same lineage key) returns the existing version instead of a duplicate.
Stage folders that were not made one from the other, or not with the config's data recipe and
training settings, are refused (:func:`check_lineage`): a version's tags describe the data and
weights it carries. :func:`hammer_core.stages.register` holds the run folder's lock meanwhile.

Then the promotion gate (:func:`promote`, ``registry.promotion``) moves the alias
``champion`` to the new version only if it beats the current champion by more than
``min_delta`` on every configured metric, and records why as version tags
(``hammer.promotion.decision`` / ``hammer.promotion.reason``). The eval stage's report,
plots and per-row predictions are logged under ``eval/``; :func:`compare_versions`
(``hammer eval compare``) sets the eval metrics of two registered versions side by side.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from hammer_core import __version__
from hammer_core.artifacts import (ArtifactError, atomic_write_json, atomic_write_text, manifest_path, open_artifact,
                                   sha256_file)
from hammer_core.config import PipelineConfig
from hammer_core.locking import LOCK_NAME

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # hammer_core/: bundled with the registered model

# What the eval stage leaves for a person to read: metrics, the markdown report, its plots, and
# the per-row predictions (held-out split, robustness study, BFCL), logged under ``eval/``.
EVAL_ARTIFACTS = ["metrics.json", "report.md", "accuracy_by_category.png", "relevance.png", "robustness.png",
                  "robustness.json", "bfcl.json", "predictions.parquet", "robustness.parquet",
                  "bfcl_predictions.parquet"]

CANDIDATE, CHAMPION = "candidate", "champion"
LINEAGE_KEY = "hammer.lineage_key"
EVAL_TAG = "hammer.eval."              # + metric name: the version's eval metrics, as tags
DECISION_TAG = "hammer.promotion.decision"
REASON_TAG = "hammer.promotion.reason"
PREFLIGHT_TIMEOUT_S = 4.0              # for all probes together, so an error comes within 5 s
_URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


class RegistryUnavailable(RuntimeError):
    """The MLflow tracking store cannot be reached or written; the message says what to do.

    ``transient`` is True for a server that does not answer (it may come back: worth a retry)
    and False for a local store folder that cannot be written (a retry will not help)."""

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


# --------------------------------------------------------------------------- the store
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


def _uri_source(cfg: PipelineConfig) -> str:
    if cfg.registry.tracking_uri:
        return "registry.tracking_uri"
    return "MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else "registry.local_dir"


def preflight(cfg: PipelineConfig) -> str:
    """Check that the configured MLflow store answers (server) or can be written (sqlite/file).

    Returns the tracking URI; raises :class:`RegistryUnavailable` within a few seconds, with
    what to do, where MLflow itself would retry for minutes::

        try:
            preflight(cfg)
        except RegistryUnavailable as err:
            print(err)   # cannot reach the MLflow tracking server at http://...: start it with ...
    """
    local_dir = Path(cfg.registry.local_dir).resolve()
    try:
        uri = resolve_tracking_uri(cfg)
    except OSError as err:
        raise RegistryUnavailable(_local_message(f"sqlite:///{local_dir / 'mlflow.db'}", local_dir, err),
                                  transient=False) from err
    parsed = urllib.parse.urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme in ("http", "https"):
        _check_server(uri, cfg, local_dir)
    elif scheme == "sqlite":
        db = uri[len("sqlite:///"):] if uri.lower().startswith("sqlite:///") else ""
        if db and db != ":memory:":
            _check_folder(uri, Path(db).resolve().parent)
    elif scheme in ("file", ""):
        _check_folder(uri, Path(urllib.parse.unquote(parsed.path) if scheme else uri).resolve())
    # other schemes (databricks, postgresql, ...): MLflow reports its own errors
    return uri


def _check_server(uri: str, cfg: PipelineConfig, local_dir: Path) -> None:
    """GET /health (then the REST API, for servers mounted under a path); any 2xx answer, or
    401/403 (a server that wants credentials: MLflow will say so), counts as reachable."""
    deadline = time.monotonic() + PREFLIGHT_TIMEOUT_S
    why = "no answer"
    for path in ("/health", "/api/2.0/mlflow/experiments/search?max_results=1"):
        left = deadline - time.monotonic()
        if left < 0.1:
            break
        try:
            with urllib.request.urlopen(uri.rstrip("/") + path, timeout=left) as resp:
                if 200 <= resp.status < 300:
                    return
                why = f"HTTP {resp.status} from {path.split('?')[0]}"
        except urllib.error.HTTPError as err:
            if err.code in (401, 403):
                return
            why = f"HTTP {err.code} from {path.split('?')[0]}"
        except (OSError, ValueError) as err:  # refused, timed out, unknown host, bad URL
            why = str(getattr(err, "reason", "") or err) or type(err).__name__
            break  # the API on the same host would fail the same way
    raise RegistryUnavailable(
        f"cannot reach the MLflow tracking server at {uri} (from {_uri_source(cfg)}; {why}): start it with "
        f"`mlflow server --host 127.0.0.1 --port 5000`, or unset MLFLOW_TRACKING_URI / registry.tracking_uri "
        f"to use the local sqlite store under {local_dir}")


def _check_folder(uri: str, folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise RegistryUnavailable(_local_message(uri, folder, err), transient=False) from err


def _local_message(uri: str, folder: Path, err: Exception) -> str:
    return (f"cannot use the MLflow store at {uri}: the folder {folder} cannot be created or written "
            f"({type(err).__name__}: {err}); point registry.local_dir at a writable folder, or set "
            f"registry.tracking_uri / MLFLOW_TRACKING_URI to a server started with "
            f"`mlflow server --host 127.0.0.1 --port 5000`")


@contextlib.contextmanager
def use_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's fluent API (``mlflow.start_run``, ``log_model``, ``pyfunc.load_model``) pointed at
    ``uri`` inside the block; afterwards MLflow's URIs and ``os.environ`` are as they were
    (``mlflow.set_tracking_uri`` alone also exports ``MLFLOW_TRACKING_URI`` to the environment)::

        with use_tracking_uri(result["tracking_uri"]):
            model = mlflow.pyfunc.load_model("models:/hammer-fc@champion")
    """
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    env = {k: os.environ.get(k) for k in _URI_ENV}
    before = (getattr(tracking_utils, "_tracking_uri", None), getattr(registry_utils, "_registry_uri", None))
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before[0])  # also resets MLflow's tracer provider
        registry_utils._registry_uri = before[1]
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


# --------------------------------------------------------------------------- lineage
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
        ran, this = (flatten(stage_config("train", c)) for c in (config_from_dict(job["config"], "(train job)"), cfg))
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
    """The configured experiment's id (created if missing); ``mlflow`` is the module or a client."""
    exp = mlflow.get_experiment_by_name(cfg.registry.experiment)
    if exp is not None:
        return exp.experiment_id
    kwargs = {}
    if _is_local_default(cfg):
        kwargs["artifact_location"] = (Path(cfg.registry.local_dir).resolve() / "artifacts").as_uri()
    return mlflow.create_experiment(cfg.registry.experiment, **kwargs)


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

    uri = preflight(cfg)
    ingest_dir, prepare_dir, train_dir, export_dir, eval_dir, out_dir = map(
        Path, (ingest_dir, prepare_dir, train_dir, export_dir, eval_dir, out_dir))
    check_lineage(cfg, ingest_dir=ingest_dir, prepare_dir=prepare_dir, train_dir=train_dir)
    lineage = lineage_tags(cfg, ingest_dir=ingest_dir, prepare_dir=prepare_dir, export_dir=export_dir,
                           eval_dir=eval_dir)
    metrics = _read_json(eval_dir / "metrics.json")
    client = _client(uri)
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

    with use_tracking_uri(uri):
        exp_id = _experiment_id(client, cfg)
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
            mlflow.log_params({k: str(v)[:6000] for k, v in flatten(cfg.model_dump(mode="json")).items()
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


# --------------------------------------------------------------------------- promotion
def promote(cfg: PipelineConfig, version: str | int, *, force: bool = False,
            model_name: str | None = None) -> dict[str, Any]:
    """The champion gate: move alias ``champion`` to ``version`` if it earns it.

    ``version`` is a number or an alias (``@candidate``). With no champion yet the version is
    promoted ("first version"); otherwise only if it beats the champion by more than
    ``registry.promotion.min_delta`` on every metric of ``registry.promotion.metrics`` in that
    metric's direction (a tie is not enough; a metric missing on either side blocks it).
    ``force=True`` promotes regardless. The decision is recorded on the version as tags
    (``hammer.promotion.decision``, ``hammer.promotion.reason``). Returns ``{"promoted",
    "version", "champion_before", "champion_after", "reason", "table": [{"metric",
    "direction", "candidate", "champion", "delta", "passes"}], "markdown"}``::

        from hammer_core.config import load_config
        from hammer_core.registry.registration import promote

        cfg = load_config("data/configs/demo.yaml")
        res = promote(cfg, "@candidate")        # or a version number; force=True to override
        print(res["promoted"], res["reason"])
        print(res["markdown"])
    """
    from mlflow.exceptions import MlflowException

    client = _client(preflight(cfg))
    name = model_name or cfg.registry.model_name
    gate = cfg.registry.promotion
    mv = _get_version(client, name, version)
    try:
        champ = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        champ = None
    before = int(champ.version) if champ is not None else None
    ver = int(mv.version)

    cand_metrics = _version_metrics(client, mv)
    champ_metrics = _version_metrics(client, champ) if champ is not None else {}
    table = []
    for metric, direction in gate.metrics.items():
        c, h = cand_metrics.get(metric), champ_metrics.get(metric)
        delta = None if c is None or h is None else round(c - h, 6)
        gain = None if delta is None else (delta if direction == "max" else -delta)
        table.append({"metric": metric, "direction": direction, "candidate": c, "champion": h, "delta": delta,
                      "passes": gain is not None and gain > gate.min_delta})

    bases = [(v.tags or {}).get("hammer.base_model") for v in (mv, champ) if v is not None]
    if champ is not None and int(champ.version) == ver:
        promoted, decision = False, "already-champion"
        reason = f"version {ver} is already the champion"
    elif force:
        promoted, decision = True, "forced"
        reason = "forced" + (f" (replaces champion version {before})" if before is not None else "")
    elif champ is None:
        promoted, decision = True, "promoted"
        reason = "first version: there was no champion yet"
    elif len(set(bases)) > 1:  # like with like: another base model's scores say nothing about this one
        promoted, decision = False, "rejected"
        reason = (f"the champion version {before} is built on base model {bases[1]!r}, this version on "
                  f"{bases[0]!r}: their metrics are not comparable; give each base model its own "
                  "registry.model_name, or promote by hand with --force")
    else:
        promoted = all(row["passes"] for row in table)
        decision = "promoted" if promoted else "rejected"
        reason = (f"beats champion version {before} by more than {gate.min_delta:g} on every metric: "
                  if promoted else f"does not beat champion version {before}: ") + "; ".join(
            _row_reason(row, gate.min_delta, promoted) for row in table if promoted or not row["passes"])

    if promoted:
        client.set_registered_model_alias(name, CHAMPION, str(ver))
        if champ is not None:
            client.set_model_version_tag(name, champ.version, "hammer.promotion.replaced_by", str(ver))
    after = ver if promoted else before
    for key, value in ((DECISION_TAG, decision), (REASON_TAG, reason[:4900]),
                       ("hammer.promotion.champion_before", "none" if before is None else str(before))):
        client.set_model_version_tag(name, str(ver), key, value)
    res = {"model_name": name, "promoted": promoted, "version": ver, "champion_before": before,
           "champion_after": after, "decision": decision, "reason": reason, "table": table}
    res["markdown"] = promotion_markdown(res, gate.min_delta)
    return res


def _row_reason(row: dict[str, Any], min_delta: float, promoted: bool) -> str:
    m = row["metric"]
    if row["candidate"] is None or row["champion"] is None:
        sides = [s for s in ("candidate", "champion") if row[s] is None]
        return f"{m} is missing on the {' and the '.join(sides)}"
    better = "higher" if row["direction"] == "max" else "lower"
    if promoted:
        return f"{m} {row['candidate']:g} vs {row['champion']:g} ({row['delta']:+g})"
    if row["delta"] == 0:
        return f"{m} ties at {row['candidate']:g} ({better} is better; a tie is not enough)"
    return (f"{m} {row['candidate']:g} vs {row['champion']:g} ({row['delta']:+g}; needs {better} "
            f"by more than {min_delta:g})")


def promotion_markdown(res: dict[str, Any], min_delta: float) -> str:
    from hammer_core.evaluation.reports import table

    verdict = {"promoted": "promoted to champion", "forced": "promoted to champion (forced)",
               "rejected": "not promoted", "already-champion": "already the champion"}[res["decision"]]
    champ = "none" if res["champion_before"] is None else f"v{res['champion_before']}"
    rows = [[r["metric"], r["direction"], "—" if r["candidate"] is None else r["candidate"],
             "—" if r["champion"] is None else r["champion"],
             "—" if r["delta"] is None else f"{r['delta']:+.4f}", "yes" if r["passes"] else "no"] for r in res["table"]]
    return (f"# {res['model_name']} v{res['version']}: {verdict}\n\n{res['reason']}\n\n"
            + table(["metric", "direction", f"candidate v{res['version']}", f"champion {champ}", "delta",
                     f"beats by > {min_delta:g}"], rows) + "\n")


def _get_version(client: Any, name: str, ref: str | int) -> Any:
    ref = str(ref).strip()
    if ref.isdigit():
        return client.get_model_version(name, ref)
    return client.get_model_version_by_alias(name, ref.lstrip("@"))


def _version_metrics(client: Any, mv: Any) -> dict[str, float]:
    """A version's eval metrics: its run's ``eval/*`` metrics, else its ``hammer.eval.*`` tags."""
    out: dict[str, float] = {}
    for k, v in (mv.tags or {}).items():
        if k.startswith(EVAL_TAG):
            try:
                out[k.removeprefix(EVAL_TAG)] = float(v)
            except ValueError:
                pass
    if mv.run_id:
        from mlflow.exceptions import MlflowException

        try:
            run_metrics = client.get_run(mv.run_id).data.metrics
        except MlflowException:  # a deleted run: the tags still tell
            run_metrics = {}
        out.update({k.removeprefix("eval/"): float(v) for k, v in run_metrics.items() if k.startswith("eval/")})
    return out


# --------------------------------------------------------------------------- compare
def compare_versions(cfg: PipelineConfig, a: str | int, b: str | int, *, model_name: str | None = None) -> dict[str, Any]:
    """Eval metrics of two registered versions side by side.

    ``a`` and ``b`` are version numbers or aliases (``@candidate``, ``champion``); the metrics
    are the ``eval/*`` metrics of the run that logged each version. Returns ``{"model_name",
    "a": {"version", "run_id", "metrics"}, "b": {...}, "delta": {metric: b - a}, "markdown"}``::

        res = compare_versions(cfg, 1, "@candidate")
        print(res["markdown"])      # or: hammer eval compare --config cfg.yaml --a 1 --b @candidate
    """
    from hammer_core.evaluation.reports import comparison_markdown

    client = _client(preflight(cfg))
    name = model_name or cfg.registry.model_name

    def side(ref: str | int) -> dict[str, Any]:
        mv = _get_version(client, name, ref)
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


__all__ = ["CANDIDATE", "CHAMPION", "RegistryUnavailable", "base_model_reference", "compare_versions",
           "lineage_tags", "model_fingerprint", "preflight", "promote", "register", "resolve_tracking_uri",
           "use_tracking_uri"]
