"""MLflow registration against a real `mlflow server` on loopback (the embedded sqlite store
is covered by test_pipeline)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from hammer_core import stages
from hammer_core.config import load_config

from .conftest import DEMO_CONFIG, free_port, loopback_server

pytestmark = pytest.mark.slow

MLFLOW = str(Path(sys.executable).with_name("mlflow"))


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    cmd = [MLFLOW, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "art")]
    url = f"http://127.0.0.1:{port}"
    with loopback_server(cmd, f"{url}/health", root / "server.log"):
        yield url


def test_register_against_an_mlflow_server(pipeline_run, mlflow_server, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    _, run_dir, overrides = pipeline_run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)  # the usual way users point at a server
    cfg = load_config(DEMO_CONFIG, [o for o in overrides if not o.startswith("registry.")])
    res = stages.register(cfg, run_dir, tmp_path / "register")
    assert res["tracking_uri"] == mlflow_server
    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    mv = client.get_model_version("hammer-fc", str(res["version"]))
    assert mv.tags["hammer.config_hash"] == cfg.fingerprint()
    arts = {a.path for a in client.list_artifacts(res["run_id"], "eval")}
    assert "eval/metrics.json" in arts
    # a second registration makes a second version of the same model
    res2 = stages.register(cfg, run_dir, tmp_path / "register2")
    assert res2["version"] == res["version"] + 1
    assert client.get_model_version_by_alias("hammer-fc", "candidate").version == str(res2["version"])
