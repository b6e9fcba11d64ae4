"""Where the MLflow store is and how to reach it: shared by live training tracking and the register stage.

Tracking store: ``registry.tracking_uri`` from the config, else ``MLFLOW_TRACKING_URI``
(so users point the pipeline at their server the usual way), else a sqlite store in a
project-local folder (``registry.local_dir``, default ``.hammer/mlflow``)::

    mlflow ui --backend-store-uri sqlite:///.hammer/mlflow/mlflow.db

Every entry point first checks the store (:func:`preflight`): an unreachable server or an
unwritable folder is one :class:`RegistryUnavailable` that says what to do, within seconds,
instead of MLflow's long retry loop. The process environment is left as it was (MLflow's
``set_tracking_uri`` would export ``MLFLOW_TRACKING_URI`` to everything started later;
:func:`use_tracking_uri` scopes it).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hammer_core.config import PipelineConfig


PREFLIGHT_TIMEOUT_S = 4.0              # for all probes together, so an error comes within 5 s


_URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


class RegistryUnavailable(RuntimeError):
    """The MLflow tracking store cannot be reached or written; the message says what to do.

    ``transient`` is True for a server that does not answer (it may come back: worth a retry)
    and False for a local store folder that cannot be written (a retry will not help)."""

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


def resolve_tracking_uri(cfg: PipelineConfig) -> str:
    if cfg.registry.tracking_uri:
        return cfg.registry.tracking_uri
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    local = Path(cfg.registry.local_dir).resolve()
    local.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{local / 'mlflow.db'}"


def is_local_default(cfg: PipelineConfig) -> bool:
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


def client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(mlflow, cfg: PipelineConfig) -> str:
    """The configured experiment's id (created if missing); ``mlflow`` is the module or a client."""
    exp = mlflow.get_experiment_by_name(cfg.registry.experiment)
    if exp is not None:
        return exp.experiment_id
    kwargs = {}
    if is_local_default(cfg):
        kwargs["artifact_location"] = (Path(cfg.registry.local_dir).resolve() / "artifacts").as_uri()
    return mlflow.create_experiment(cfg.registry.experiment, **kwargs)


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


__all__ = ["RegistryUnavailable", "client", "experiment_id", "flatten", "preflight", "resolve_tracking_uri",
           "use_tracking_uri"]
