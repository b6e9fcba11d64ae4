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
    names = {(d["entrypoint"].rsplit(":", 1)[1], d["name"]): d for d in spec["deployments"]}
    assert {("hammer_pipeline", "on-demand"), ("hammer_pipeline", "nightly"), ("hammer_data", "on-demand"),
            ("hammer_train", "on-demand"), ("hammer_eval", "on-demand"), ("hammer_register", "on-demand")} <= set(names)
    assert names["hammer_pipeline", "nightly"]["schedules"][0]["cron"]
    pool = names["hammer_pipeline", "on-demand"]["work_pool"]["name"]

    _prefect(env, "work-pool", "create", pool, "--type", "process")
    _prefect(env, "deploy", "--all", "--prefect-file", "deployment/prefect.yaml")
    for deployment in ("hammer-pipeline/nightly", "hammer-data/on-demand", "hammer-train/on-demand",
                       "hammer-eval/on-demand", "hammer-register/on-demand"):
        _prefect(env, "deployment", "inspect", deployment)  # fails unless it was deployed
    overrides = FAST + ["eval.max_examples=2", f"output_dir={tmp_path / 'run'}",
                        f"registry.local_dir={tmp_path / 'mlflow'}"]
    _prefect(env, "deployment", "run", "hammer-pipeline/on-demand", "--param", f"overrides={json.dumps(overrides)}")

    worker = subprocess.run([PREFECT, "worker", "start", "--pool", pool, "--run-once"], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert worker.returncode == 0, worker.stdout[-3000:] + worker.stderr[-3000:]

    body = json.dumps({"deployments": {"name": {"any_": ["on-demand"]}},
                       "flows": {"name": {"any_": ["hammer-pipeline"]}}}).encode()
    req = urllib.request.Request(f"{env['PREFECT_API_URL']}/flow_runs/filter", data=body,
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        runs = json.loads(r.read())
    assert len(runs) == 1, [(x["name"], x["flow_id"], x["deployment_id"], x["parent_task_run_id"]) for x in runs]
    (run,) = runs
    assert run["state"]["type"] == "COMPLETED", run["state"]
    reg = json.loads((tmp_path / "run" / "register" / "registry.json").read_text())
    assert reg["version"] == 1 and reg["model_name"] == "hammer-fc"
