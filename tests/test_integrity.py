"""Runs that share a folder, and runs that died: a folder lock per run (real processes holding
real flocks) and artifacts checked against their manifests (real Parquet files)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from hammer_core.locking import LOCK_NAME, folder_lock, run_lock, stage_lock

from .conftest import DEMO_CONFIG, FAST, REPO

SAMPLE = REPO / "data" / "sample" / "travel.jsonl"
HOLD = ("import sys; from hammer_core.locking import {fn}; "
        "lock = {fn}(sys.argv[1]); lock.__enter__(); print('held', flush=True); sys.stdin.read()")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "HAMMER_LOCK_TIMEOUT"}
    return {**env, "PYTHONPATH": str(REPO), **extra}


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, cwd=REPO,
                          env=_env(**env), timeout=300)


def _hold(folder: Path, fn: str = "folder_lock") -> subprocess.Popen:
    """Another process that holds ``folder``'s lock until its stdin closes (or it is killed)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD.format(fn=fn), str(folder)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=REPO, env=_env())
    assert proc.stdout.readline().strip() == "held"
    return proc


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


# ------------------------------------------------------------------------------ folder locks
def test_a_stage_on_a_folder_another_run_holds_stops_with_one_line(tmp_path):
    out = tmp_path / "ingest"
    holder = _hold(out)
    try:
        res = _cli("ingest", "--input", str(SAMPLE), "--task", "travel", "--out", str(out))
        assert res.returncode == 2
        line = _one_line(res.stderr)
        assert line.startswith(f"hammer: {out} is in use by another run (pid {holder.pid}, host ")
        assert "HAMMER_LOCK_TIMEOUT=SECONDS" in line
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # it wrote nothing
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_a_second_run_waits_for_the_holder_and_a_killed_holder_leaves_no_stale_lock(tmp_path):
    out = tmp_path / "ingest"
    holder = _hold(out)
    waiter = subprocess.Popen([sys.executable, "-m", "flows.cli", "ingest", "--input", str(SAMPLE), "--task", "travel",
                               "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=REPO, env=_env(HAMMER_LOCK_TIMEOUT="120"))
    try:
        first = waiter.stderr.readline()
        assert first.startswith(f"hammer: waiting for the run holding {out / LOCK_NAME} (pid {holder.pid}, host ")
        assert "since 20" in first and "at most 120 s" in first
        time.sleep(1.0)
        assert waiter.poll() is None and not (out / "examples.parquet").exists()  # still waiting
        os.kill(holder.pid, signal.SIGKILL)  # the OS releases a dead process's lock
        holder.wait(timeout=30)
        stdout, stderr = waiter.communicate(timeout=300)
        assert waiter.returncode == 0, stderr
        assert json.loads(stdout)["kept"] == 195 and (out / "examples.parquet").exists()
    finally:
        waiter.kill()
        holder.kill()
    # and with the holder gone for good, the next run does not wait at all
    res = _cli("ingest", "--input", str(SAMPLE), "--task", "travel", "--out", str(out))
    assert res.returncode == 0 and res.stderr == ""


def test_a_stage_folder_inside_a_running_pipelines_folder_is_covered_by_its_lock(tmp_path):
    run_dir = tmp_path / "run"
    holder = _hold(run_dir, "run_lock")  # a pipeline run holding its output_dir
    try:
        res = _cli("ingest", "--input", str(SAMPLE), "--task", "travel", "--out", str(run_dir / "ingest"))
        assert res.returncode == 2
        assert _one_line(res.stderr).startswith(f"hammer: {run_dir} is in use by another run (pid {holder.pid}")
        assert not (run_dir / "ingest").exists()
        # a pipeline run on it stops before Prefect starts
        res = _cli("run", str(DEMO_CONFIG), "--set", f"output_dir={run_dir}",
                   "--set", f"registry.local_dir={tmp_path / 'mlflow'}")
        assert res.returncode == 2
        assert _one_line(res.stderr).startswith(f"hammer: {run_dir} is in use by another run (pid {holder.pid}")
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_a_stage_run_alone_holds_off_a_pipeline_run_on_its_parent_folder(tmp_path):
    run_dir = tmp_path / "run"
    holder = _hold(run_dir / "train", "stage_lock")  # `hammer train --out run/train` before run/ had a lock
    try:
        res = _cli("run", str(DEMO_CONFIG), "--set", f"output_dir={run_dir}",
                   "--set", f"registry.local_dir={tmp_path / 'mlflow'}")
        assert res.returncode == 2
        assert _one_line(res.stderr).startswith(f"hammer: {run_dir / 'train'} is in use by another run "
                                                f"(pid {holder.pid}")
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_locks_are_reentrant_within_a_process(tmp_path):
    run_dir = tmp_path / "run"
    with run_lock(run_dir):
        with stage_lock(run_dir / "ingest"), folder_lock(run_dir), run_lock(run_dir):
            holder = json.loads((run_dir / LOCK_NAME).read_text())
            assert holder["pid"] == os.getpid()
        res = _cli("ingest", "--input", str(SAMPLE), "--task", "travel", "--out", str(run_dir / "ingest"))
        assert res.returncode == 2 and f"(pid {os.getpid()}, host " in res.stderr  # still held after the inner exits
    assert (run_dir / LOCK_NAME).read_text() == ""  # released: no holder recorded
    res = _cli("ingest", "--input", str(SAMPLE), "--task", "travel", "--out", str(run_dir / "ingest"))
    assert res.returncode == 0, res.stderr


# ------------------------------------------------------------------------------ artifacts vs manifests
def test_a_data_file_left_beside_another_runs_manifest_is_refused(tmp_path):
    ingest, prepare = tmp_path / "ingest", tmp_path / "prepare"
    assert _cli("ingest", "--input", str(SAMPLE), "--task", "travel", "--out", str(ingest)).returncode == 0
    manifest = json.loads((ingest / "examples.manifest.json").read_text())
    assert manifest["rows"] == 195
    # a later ingest that crashed after renaming its data file into place, before its manifest
    five = pq.read_table(ingest / "examples.parquet").slice(0, 5)
    pq.write_table(five, tmp_path / "crashed.parquet", compression="zstd")
    os.replace(tmp_path / "crashed.parquet", ingest / "examples.parquet")

    res = _cli("prepare", "--input", str(ingest), "--out", str(prepare))
    assert res.returncode == 2
    line = _one_line(res.stderr)
    assert line.startswith(f"hammer: {ingest / 'examples.parquet'} does not match its manifest (hash sha256:")
    assert f"!= {manifest['content_hash'][:19]}..." in line
    assert line.endswith("it was left by a run that did not finish; rerun the stage that writes it")
    assert not (prepare / "train.parquet").exists()

    # rerunning the stage that writes it gives a good pair again, and prepare runs on it
    assert _cli("ingest", "--input", str(SAMPLE), "--task", "travel", "--out", str(ingest)).returncode == 0
    res = _cli("prepare", "--input", str(ingest), "--out", str(prepare))
    assert res.returncode == 0, res.stderr
    assert json.loads((prepare / "train.manifest.json").read_text())["parents"] == [manifest["content_hash"]]


def test_a_pipeline_run_refuses_a_stale_data_file_with_one_line(tmp_path):
    """The same crash seen from a flow: the stage after ingest fails the flow run with one line."""
    from hammer_core import stages
    from hammer_core.artifacts import ArtifactError, open_artifact
    from hammer_core.config import load_config

    cfg = load_config(DEMO_CONFIG, [f"output_dir={tmp_path / 'run'}"])
    stages.ingest(cfg, cfg.stage_dir("ingest"))
    examples = cfg.stage_dir("ingest") / "examples.parquet"
    assert open_artifact(examples).rows > 5
    stale = tmp_path / "stale.parquet"
    pq.write_table(pq.read_table(examples).slice(0, 5), stale, compression="zstd")
    os.replace(stale, examples)
    try:
        stages.prepare(cfg, cfg.stage_dir("ingest"), cfg.stage_dir("prepare"))
    except ArtifactError as err:
        assert "does not match its manifest" in str(err)
    else:
        raise AssertionError("prepare ran on a data file its manifest does not describe")


# ------------------------------------------------------------------------------ concurrent pipeline runs (slow)
@pytest.mark.slow
def test_concurrent_pipeline_runs_on_one_folder_never_mislabel_a_version(tmp_path):
    """Three `hammer run` on one output_dir, seeds 1, 2, 3: seed 2 waits for seed 1, seed 3
    (no waiting) stops with one line; every registered version's tags match its artifacts."""
    import mlflow
    from mlflow import MlflowClient

    from hammer_core.config import load_config
    from hammer_core.mlflow_store import use_tracking_uri
    from hammer_core.registry.registration import tree_hash

    run_dir, store = tmp_path / "run", tmp_path / "mlflow"
    sets = [a for o in FAST + [f"output_dir={run_dir}", f"registry.local_dir={store}"] for a in ("--set", o)]

    def start(seed: int, timeout: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "flows.cli", "run", str(DEMO_CONFIG), "--seed", str(seed),
                                 *sets], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                                env=_env(HAMMER_LOCK_TIMEOUT=timeout))

    first = start(1, "0")
    deadline = time.monotonic() + 120
    while f'"pid": {first.pid},' not in ((run_dir / LOCK_NAME).read_text() if (run_dir / LOCK_NAME).exists() else ""):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.2)
    second = start(2, "600")
    third = start(3, "0")
    _, err3 = third.communicate(timeout=120)
    assert third.returncode == 2
    assert _one_line(err3).startswith(f"hammer: {run_dir} is in use by another run (pid {first.pid}, host ")
    out1, err1 = first.communicate(timeout=600)
    assert first.returncode == 0, err1[-3000:]
    out2, err2 = second.communicate(timeout=600)
    assert second.returncode == 0, err2[-3000:]
    assert f"hammer: waiting for the run holding {run_dir / LOCK_NAME} (pid {first.pid}, host " in err2

    uri = f"sqlite:///{store / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions = sorted(client.search_model_versions("name = 'hammer-fc'"), key=lambda v: int(v.version))
    assert len(versions) == 2
    for seed, mv in zip((1, 2), versions):
        cfg = load_config(DEMO_CONFIG, FAST + [f"output_dir={run_dir}", f"registry.local_dir={store}", f"seed={seed}"])
        assert mv.tags["hammer.config_hash"] == cfg.fingerprint()
        got = Path(client.download_artifacts(mv.run_id, "", str(tmp_path / f"v{mv.version}")))
        examples = json.loads((got / "ingest" / "examples.manifest.json").read_text())
        train = json.loads((got / "prepare" / "train.manifest.json").read_text())
        assert mv.tags["hammer.examples_hash"] == examples["content_hash"]
        assert mv.tags["hammer.train_hash"] == train["content_hash"] and train["extra"]["seed"] == seed
        assert train["parents"] == [examples["content_hash"]]
        with use_tracking_uri(uri):
            model = Path(mlflow.artifacts.download_artifacts(mv.source, dst_path=str(tmp_path / f"m{mv.version}")))
        assert mv.tags["hammer.export_hash"] == tree_hash(model / "artifacts" / "export")
    assert versions[0].tags["hammer.train_hash"] != versions[1].tags["hammer.train_hash"]


# ------------------------------------------------------------------------------ what a version is registered with
def test_register_refuses_stage_folders_that_were_not_made_one_from_the_other(tmp_path):
    """A version's tags must describe its data and weights: prepare output of another seed, or a
    train folder trained on other tokens, stops `hammer register` with one line."""
    run_dir = tmp_path / "run"
    store = [f"--set=registry.local_dir={tmp_path / 'mlflow'}"]
    assert _cli("ingest", "--input", str(SAMPLE), "--task", "travel", "--out", str(run_dir / "ingest")).returncode == 0
    res = _cli("prepare", "--config", str(DEMO_CONFIG), "--seed", "2", "--input", str(run_dir / "ingest"),
               "--out", str(run_dir / "prepare"))
    assert res.returncode == 0, res.stderr
    for stage in ("train", "export", "eval"):
        (run_dir / stage).mkdir()

    res = _cli("register", "--config", str(DEMO_CONFIG), "--seed", "1", "--input", str(run_dir), *store)
    assert res.returncode == 2
    assert _one_line(res.stderr) == (f"hammer: {run_dir / 'prepare'} was made with another data recipe than this "
                                     "config's (prepare seed 2 vs 1): register with the config the run used, or "
                                     "rerun the pipeline with this one")

    finance = REPO / "data" / "sample" / "finance.jsonl"  # ingest again, on another corpus, after prepare
    assert _cli("ingest", "--input", str(finance), "--task", "travel", "--out", str(run_dir / "ingest")).returncode == 0
    res = _cli("register", "--config", str(DEMO_CONFIG), "--seed", "2", "--input", str(run_dir), *store)
    assert res.returncode == 2
    assert _one_line(res.stderr).startswith(f"hammer: {run_dir / 'prepare' / 'train.parquet'} was not made from "
                                            f"{run_dir / 'ingest' / 'examples.parquet'} (its parent sha256:")
    assert _cli("ingest", "--input", str(SAMPLE), "--task", "travel", "--out", str(run_dir / "ingest")).returncode == 0

    tokens = json.loads((run_dir / "prepare" / "train_tokens.manifest.json").read_text())["content_hash"]
    (run_dir / "train" / "train_summary.json").write_text(json.dumps({"train_tokens_hash": "sha256:" + "0" * 64}))
    res = _cli("register", "--config", str(DEMO_CONFIG), "--seed", "2", "--input", str(run_dir), *store)
    assert res.returncode == 2
    assert _one_line(res.stderr) == (f"hammer: {run_dir / 'train'} was trained on other tokens than "
                                     f"{run_dir / 'prepare' / 'train_tokens.parquet'} holds (sha256:{'0' * 64} != "
                                     f"{tokens}): rerun train and the stages after it")
