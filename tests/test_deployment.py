"""The path users take: a real Prefect server on loopback, `prefect deploy --all` from
deployment/prefect.yaml, `prefect deployment run`, and a process worker that executes it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from .conftest import FAST, REPO, free_port, loopback_server

pytestmark = pytest.mark.slow

PREFECT = str(Path(sys.executable).with_name("prefect"))


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect_server_home")
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    url = f"http://127.0.0.1:{port}/api"
    cmd = [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with loopback_server(cmd, f"{url}/health", home / "server.log", env=env):
        yield {**env, "PREFECT_API_URL": url}


def _prefect(env: dict, *args: str, timeout: float = 120) -> str:
    out = subprocess.run([PREFECT, "--no-prompt", *args], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, f"prefect {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def test_deploy_trigger_and_run_through_a_worker(prefect_server, tmp_path):
    env = prefect_server
    spec = yaml.safe_load((REPO / "deployment" / "prefect.yaml").read_text())
    names = {d["name"]: d for d in spec["deployments"]}
    assert {"on-demand", "nightly"} <= set(names)
    assert names["nightly"]["schedules"][0]["cron"]
    pool = names["on-demand"]["work_pool"]["name"]

    _prefect(env, "work-pool", "create", pool, "--type", "process")
    _prefect(env, "deploy", "--all", "--prefect-file", "deployment/prefect.yaml")
    overrides = FAST + ["eval.max_examples=2", f"output_dir={tmp_path / 'run'}",
                        f"registry.local_dir={tmp_path / 'mlflow'}"]
    _prefect(env, "deployment", "run", "hammer-pipeline/on-demand", "--param", f"overrides={json.dumps(overrides)}")

    worker = subprocess.run([PREFECT, "worker", "start", "--pool", pool, "--run-once"], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert worker.returncode == 0, worker.stdout[-3000:] + worker.stderr[-3000:]

    body = json.dumps({"deployments": {"name": {"any_": ["on-demand"]}}}).encode()
    req = urllib.request.Request(f"{env['PREFECT_API_URL']}/flow_runs/filter", data=body,
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        (run,) = json.loads(r.read())
    assert run["state"]["type"] == "COMPLETED", run["state"]
    reg = json.loads((tmp_path / "run" / "register" / "registry.json").read_text())
    assert reg["version"] == 1 and reg["model_name"] == "hammer-fc"
