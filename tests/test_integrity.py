"""Runs that died: artifacts checked against their manifests (real Parquet files, the real CLI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from .conftest import DEMO_CONFIG, REPO

SAMPLE = REPO / "data" / "sample" / "travel.jsonl"


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, cwd=REPO,
                          env=_env(**env), timeout=300)


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


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
