"""Shared fixtures: an isolated Prefect home and MLflow store per test session, and one real
end-to-end pipeline run (Prefect flow, sqlite MLflow) that several tests inspect."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "data" / "configs" / "demo.yaml"

# Small but real: every stage runs, on the bundled sample, in well under a minute of CPU.
FAST = [
    "prepare.max_length=2048",
    "train.max_steps=6",
    "train.batch_size=2",
    "train.log_every=1",
    "eval.max_examples=6",
    "eval.max_new_tokens=16",
]


def prepare_examples(cfg, examples, out_dir, **kwargs):
    """The prepare stage as :func:`hammer_core.stages.prepare` runs it: with the config's
    tokenizer (none with ``tokenize=False``)."""
    from hammer_core.data.prepare import prepare
    from hammer_core.model.tokenizer import load_tokenizer

    if kwargs.get("tokenize", True):
        kwargs.setdefault("tokenizer", load_tokenizer(cfg.model))
    return prepare(cfg, examples, out_dir, **kwargs)


@pytest.fixture(scope="session", autouse=True)
def _isolated_homes(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect_home")
    os.environ["PREFECT_HOME"] = str(home)
    os.environ.pop("PREFECT_API_URL", None)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry attempts offline
    # Prefect's temporary API server gets 20 s to start by default; a loaded 2-core CI box needs more.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    yield


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory):
    """One real Prefect flow run of the whole pipeline; returns (result, output dir, overrides)."""
    from prefect import flow  # noqa: F401  (import after PREFECT_HOME is set)

    from flows.pipeline import hammer_pipeline

    root = tmp_path_factory.mktemp("pipeline")
    overrides = FAST + [f"output_dir={root / 'run'}", f"registry.local_dir={root / 'mlflow'}"]
    state = hammer_pipeline(config_path=str(DEMO_CONFIG), overrides=overrides, return_state=True)
    assert state.is_completed(), state
    return state.result(), root / "run", overrides


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def loopback_server(cmd: list[str], health_url: str, log_path: Path, env: dict | None = None,
                    timeout: float = 120):
    """Run a server command, wait until ``health_url`` answers 200, stop it afterwards."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    with urllib.request.urlopen(health_url, timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"{cmd[0]} did not start:\n{log_path.read_text()[-2000:]}")
                    time.sleep(0.5)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
