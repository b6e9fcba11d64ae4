"""MLflow registration: the embedded sqlite store and a real `mlflow server` on loopback,
idempotent registration, the champion gate inside register(), and clear errors when the
store is unreachable."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from hammer_core import stages
from hammer_core.config import PipelineConfig, load_config
from hammer_core.mlflow_store import RegistryUnavailable, preflight, use_tracking_uri
from hammer_core.registry.promotion import CANDIDATE, CHAMPION, DECISION_TAG, compare_versions, promote
from hammer_core.registry.registration import LINEAGE_KEY, register

from .conftest import DEMO_CONFIG, free_port, loopback_server

MLFLOW = str(Path(sys.executable).with_name("mlflow"))
TOOLS = [{"name": "get_weather", "description": "Current weather for a city.",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    cmd = [MLFLOW, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "art")]
    url = f"http://127.0.0.1:{port}"
    with loopback_server(cmd, f"{url}/health", root / "server.log"):
        yield url


# ------------------------------------------------------------------------------ errors (fast)
def test_an_unreachable_server_is_one_clear_error_from_every_entry_point(tmp_path, monkeypatch):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cfg = PipelineConfig(registry={"tracking_uri": dead, "local_dir": str(tmp_path / "local")})
    calls = [lambda: preflight(cfg), lambda: promote(cfg, 1), lambda: compare_versions(cfg, 1, 2),
             lambda: register(cfg, ingest_dir=tmp_path, prepare_dir=tmp_path, train_dir=tmp_path,
                              export_dir=tmp_path, eval_dir=tmp_path, out_dir=tmp_path / "out")]
    for call in calls:
        with pytest.raises(RegistryUnavailable) as err:
            call()
        msg = str(err.value)
        assert msg.startswith(f"cannot reach the MLflow tracking server at {dead} (from registry.tracking_uri")
        assert "mlflow server --host 127.0.0.1 --port 5000" in msg and str(tmp_path / "local") in msg
        assert err.value.transient  # a server may come back: worth a retry
    assert not (tmp_path / "out").exists()
    # the usual way to point at a server: the message says where the URI came from
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead)
    with pytest.raises(RegistryUnavailable, match="from MLFLOW_TRACKING_URI.*unset MLFLOW_TRACKING_URI"):
        preflight(PipelineConfig(registry={"local_dir": str(tmp_path / "local")}))


def test_an_unwritable_local_store_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(RegistryUnavailable, match="registry.local_dir at a writable folder") as err:
        preflight(PipelineConfig(registry={"local_dir": str(blocker / "mlflow")}))
    assert str(blocker / "mlflow") in str(err.value) and not err.value.transient
    with pytest.raises(RegistryUnavailable, match=f"cannot use the MLflow store at sqlite:///{blocker}/x.db"):
        preflight(PipelineConfig(registry={"tracking_uri": f"sqlite:///{blocker}/x.db"}))
    good = PipelineConfig(registry={"local_dir": str(tmp_path / "ok")})
    assert preflight(good) == f"sqlite:///{tmp_path / 'ok' / 'mlflow.db'}"


def test_use_tracking_uri_leaves_the_environment_as_it_was(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'x.db'}"
    with use_tracking_uri(uri):
        assert mlflow.get_tracking_uri() == uri and mlflow.get_registry_uri() == uri
    assert "MLFLOW_TRACKING_URI" not in os.environ and "MLFLOW_REGISTRY_URI" not in os.environ
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    with use_tracking_uri(uri):
        assert os.environ["MLFLOW_TRACKING_URI"] == uri  # a subprocess started inside inherits it
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:1"


# ------------------------------------------------------------------------------ real registrations
@pytest.mark.slow
def test_register_is_idempotent_and_gated_on_the_sqlite_store(pipeline_run, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    _, run_dir, overrides = pipeline_run
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    fresh = [o for o in overrides if not o.startswith("registry.")] + [f"registry.local_dir={tmp_path / 'store'}"]
    cfg = load_config(DEMO_CONFIG, fresh)
    first = stages.register(cfg, run_dir, tmp_path / "r1")
    assert first["tracking_uri"] == f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    assert "MLFLOW_TRACKING_URI" not in os.environ  # nothing leaks to training started later
    assert first["version"] == 1 and not first["reused"]
    assert first["promotion"]["promoted"] and first["champion_version"] == 1
    assert (tmp_path / "r1" / "promotion.md").read_text().startswith("# hammer-fc v1: promoted to champion")

    # the same pipeline again (e.g. a cached re-run): the same version, no duplicate
    again = stages.register(cfg, run_dir, tmp_path / "r2")
    assert again["version"] == 1 and again["reused"] and again["run_id"] == first["run_id"]
    assert again["promotion"]["decision"] == "already-champion"
    client = MlflowClient(tracking_uri=first["tracking_uri"], registry_uri=first["tracking_uri"])
    assert len(client.search_model_versions("name = 'hammer-fc'")) == 1

    # a changed config is a new version; its metrics only tie the champion's, so no promotion
    changed = load_config(DEMO_CONFIG, fresh + ["eval.max_new_tokens=8"])
    second = stages.register(changed, run_dir, tmp_path / "r3")
    assert second["version"] == 2 and not second["reused"]
    assert not second["promotion"]["promoted"] and second["champion_version"] == 1
    assert "does not beat champion version 1" in second["promotion"]["reason"]
    mv2 = client.get_model_version("hammer-fc", "2")
    assert mv2.tags[DECISION_TAG] == "rejected" and "tie" in mv2.tags["hammer.promotion.reason"]
    assert mv2.tags[LINEAGE_KEY] != client.get_model_version("hammer-fc", "1").tags[LINEAGE_KEY]
    assert int(client.get_model_version_by_alias("hammer-fc", CANDIDATE).version) == 2
    assert int(client.get_model_version_by_alias("hammer-fc", CHAMPION).version) == 1
    assert "MLFLOW_TRACKING_URI" not in os.environ


@pytest.mark.slow
def test_register_and_serve_against_an_mlflow_server(pipeline_run, mlflow_server, tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    _, run_dir, overrides = pipeline_run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)  # the usual way users point at a server
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    cfg = load_config(DEMO_CONFIG, [o for o in overrides if not o.startswith("registry.")])
    res = stages.register(cfg, run_dir, tmp_path / "register")
    assert res["tracking_uri"] == mlflow_server
    assert os.environ["MLFLOW_TRACKING_URI"] == mlflow_server and "MLFLOW_REGISTRY_URI" not in os.environ
    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    mv = client.get_model_version("hammer-fc", str(res["version"]))
    assert mv.tags["hammer.config_hash"] == cfg.fingerprint()
    assert float(mv.tags["hammer.eval.call_accuracy"]) == res["metrics"]["call_accuracy"]
    arts = {a.path for a in client.list_artifacts(res["run_id"], "eval")}
    assert "eval/metrics.json" in arts
    assert int(client.get_model_version_by_alias("hammer-fc", CHAMPION).version) == res["version"]
    # registering the unchanged pipeline again returns the same version
    res2 = stages.register(cfg, run_dir, tmp_path / "register2")
    assert res2["version"] == res["version"] and res2["reused"]
    assert int(client.get_model_version_by_alias("hammer-fc", CANDIDATE).version) == res["version"]

    with use_tracking_uri(mlflow_server):
        model = mlflow.pyfunc.load_model("models:/hammer-fc@champion")
    out = model.predict([{"query": "Weather in Oslo?", "tools": TOOLS, "task": "travel"},
                         {"messages": [{"role": "user", "content": "Hi"}], "tools": []}])
    assert [o["task"] for o in out] == ["travel", model.unwrap_python_model().manifest["tasks"][0]]
    for o in out:
        assert isinstance(o["raw"], str)
        assert isinstance(o["calls"], list) and all(set(c) == {"name", "arguments"} for c in o["calls"])
