"""A training killed with SIGKILL mid-run and started again with the same command continues
from its last checkpoint and ends with the weights of an uninterrupted run (2 processes,
ZeRO-2 with the optimizer offloaded: the optimizer state is sharded and must be re-sharded)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from hammer_core.train import checkpoint as ckpt
from hammer_core.artifacts import open_artifact
from hammer_core.config import load_config
from hammer_core.train.trainer import train

from .conftest import REPO
from .test_training import (adapter_weights, history, make_tokens, max_abs_diff,  # noqa: F401
                            steady_workers, train_config)

pytestmark = pytest.mark.slow

KILL_AT = 8  # kill as soon as this step's checkpoint is complete
STEPS = 24


def _hammer_train(config: Path, prepare_dir: Path, out: Path, console: Path) -> subprocess.Popen:
    """``hammer train`` as a user runs it, in its own process group (so it can be killed whole)."""
    with open(console, "ab") as f:
        return subprocess.Popen([sys.executable, "-m", "flows.cli", "train", "--config", str(config), "--input",
                                 str(prepare_dir), "--out", str(out), "--nproc", "2"],
                                cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=f)


def _workers_of(job: Path) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if str(job) in " ".join(p.info["cmdline"] or []) and p.is_running() and p.status() != "zombie":
                found.append(p)
        except psutil.Error:
            continue
    return found


def test_sigkill_then_the_same_command_resumes_to_the_uninterrupted_weights(tmp_path, steady_workers):  # noqa: F811
    prepare_dir = tmp_path / "prep"
    tokens = make_tokens(prepare_dir / "train_tokens.parquet", n=48)
    cfg = train_config(tmp_path, max_steps=STEPS, batch_size=2, checkpoint_every=KILL_AT, keep_checkpoints=2,
                       deepspeed={"zero_stage": 2, "offload_optimizer": "cpu"})
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))

    # the reference: the same config, uninterrupted (untracked: tracking changes nothing computed)
    ref_cfg = load_config(config, ["train.nproc=2", "train.track=false", f"output_dir={tmp_path / 'reference'}"])
    reference = ref_cfg.stage_dir("train")
    train(ref_cfg, open_artifact(tokens.path), reference, progress=False)

    out = tmp_path / "run" / "train"
    console = tmp_path / "console.txt"
    proc = _hammer_train(config, prepare_dir, out, console)
    marker = out / ckpt.CHECKPOINTS / ckpt.step_name(KILL_AT) / ckpt.STATE_NAME
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert proc.poll() is None, f"hammer train ended before step {KILL_AT}: {console.read_text()[-2000:]}"
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and torchrun; the workers die with torchrun
    proc.wait()
    pointer_before = json.loads((out / "mlflow_run.json").read_text())

    # it really died mid-training: no outputs, not all steps checkpointed, no worker left behind
    assert not (out / "train_summary.json").exists()
    steps_done = [s for s, _ in ckpt.list_checkpoints(out)]
    assert KILL_AT in steps_done and max(steps_done) < STEPS
    job = out / "logs" / "job.json"
    deadline = time.monotonic() + 30
    while _workers_of(job):
        assert time.monotonic() < deadline, f"orphaned workers: {[p.pid for p in _workers_of(job)]}"
        time.sleep(0.2)

    # the same command again
    proc = _hammer_train(config, prepare_dir, out, console)
    assert proc.wait(timeout=600) == 0, console.read_text()[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["resumed_from_step"] == max(steps_done)
    assert summary["world_size"] == 2 and summary["steps"] == STEPS

    assert max_abs_diff(adapter_weights(out), adapter_weights(reference)) <= 1e-6
    assert [(h["step"], h["loss"]) for h in history(out)] == [(h["step"], h["loss"]) for h in history(reference)]
    # the MLflow run of the killed training went on, rather than a second one starting
    assert json.loads((out / "mlflow_run.json").read_text())["run_id"] == pointer_before["run_id"]
    assert summary["mlflow_run_id"] == pointer_before["run_id"]
