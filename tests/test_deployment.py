"""The path users take: a real Prefect server on loopback, `prefect deploy --all` from
deployment/prefect.yaml, `prefect deployment run`, and a process worker that executes it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from .conftest import FAST, REPO

pytestmark = pytest.mark.slow

PREFECT = str(Path(sys.executable).with_name("prefect"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError("prefect server did not become healthy")


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect_server_home")
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    log = open(home / "server.log", "w")
    proc = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        _wait_healthy(url, proc)
        yield {**env, "PREFECT_API_URL": url}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


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
