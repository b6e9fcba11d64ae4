"""Orchestration with real Prefect runs: content-keyed caching, retries, the Dask task runner,
per-source ingest shards, and one-line errors for a bad config or an unreachable service."""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest
import yaml

from flows.cli import main as cli
from hammer_core import caching
from hammer_core.config import ConfigError, load_config
from hammer_core.train.distributed import TrainingError
from hammer_core.data.formats import RowError
from hammer_core.data.ingest import SourceSpec, ingest, ingest_shard, merge_shards

from .conftest import DEMO_CONFIG, REPO, free_port

SAMPLE = REPO / "data" / "sample"
FIXTURES = REPO / "tests" / "fixtures"
DATA_FILES = ["examples.parquet", "examples.manifest.json", "rejects.parquet", "rejects.manifest.json",
              "summary.json"]


def _config(tmp_path: Path, sources: list[dict], **extra) -> Path:
    raw = yaml.safe_load(DEMO_CONFIG.read_text())
    raw["data"] = {"sources": sources}
    raw["prepare"]["max_length"] = 2048
    raw["output_dir"] = str(tmp_path / "run")
    raw["registry"] = {"local_dir": str(tmp_path / "mlflow")}
    raw.update(extra)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _task_states(flow_state) -> dict[str, str]:
    """Task name -> state name of the task runs of one flow run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [flow_state.state_details.flow_run_id]}))
    return {r.task_key.rsplit("-", 1)[0]: r.state.name for r in runs}


def _same_files(a: Path, b: Path, names: list[str]) -> bool:
    return all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)


# ------------------------------------------------------------------------------ caching
@pytest.mark.slow
def test_data_flow_is_cached_by_content(tmp_path):
    from flows.stages import hammer_data

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("travel.jsonl", "finance.jsonl"):
        (corpus / name).write_bytes((SAMPLE / name).read_bytes())
    cfg_path = _config(tmp_path, [{"path": str(corpus / "travel.jsonl"), "task": "travel"},
                                  {"path": str(corpus / "finance.jsonl"), "task": "finance"}])
    run = tmp_path / "run"

    first = hammer_data(config_path=str(cfg_path), return_state=True)
    assert first.is_completed(), first
    assert _task_states(first) == {"ingest_task": "Completed", "prepare_task": "Completed"}
    snapshot = tmp_path / "first"
    for stage in ("ingest", "prepare"):
        (snapshot / stage).mkdir(parents=True)
        for f in (run / stage).iterdir():
            if f.is_file():
                (snapshot / stage / f.name).write_bytes(f.read_bytes())
    prepare_files = sorted(f.name for f in (run / "prepare").iterdir() if f.is_file() and f.name != caching.STAMP)

    # unchanged corpus and config: both stages come from the cache, the outputs stay as they were
    second = hammer_data(config_path=str(cfg_path), return_state=True)
    assert _task_states(second) == {"ingest_task": "Cached", "prepare_task": "Cached"}
    assert second.result() == first.result()
    assert _same_files(run / "ingest", snapshot / "ingest", DATA_FILES)
    assert _same_files(run / "prepare", snapshot / "prepare", prepare_files)

    # a changed masking seed: ingest stays cached, prepare runs again and writes other bytes
    third = hammer_data(config_path=str(cfg_path), overrides=["prepare.seed=12345"], return_state=True)
    assert _task_states(third) == {"ingest_task": "Cached", "prepare_task": "Completed"}
    assert _same_files(run / "ingest", snapshot / "ingest", DATA_FILES)
    assert not filecmp.cmp(run / "prepare" / "train.parquet", snapshot / "prepare" / "train.parquet", shallow=False)

    # a prepare output edited behind the cache's back: the stale entry is not served
    (run / "prepare" / "train.parquet").write_bytes(b"not what the stage wrote")
    fourth = hammer_data(config_path=str(cfg_path), overrides=["prepare.seed=12345"], return_state=True)
    assert _task_states(fourth) == {"ingest_task": "Cached", "prepare_task": "Completed"}
    assert caching.verify_stamp(run / "prepare", json.loads((run / "prepare" / caching.STAMP).read_text())["key"])

    # an edited corpus (same path, new bytes: a repeated row): ingest runs again; its examples are
    # the same bytes (the row is a duplicate), so prepare, keyed on them, stays cached
    with open(corpus / "finance.jsonl", "a") as f:
        f.write((SAMPLE / "finance.jsonl").read_text().splitlines()[0] + "\n")
    fifth = hammer_data(config_path=str(cfg_path), overrides=["prepare.seed=12345"], return_state=True)
    assert _task_states(fifth) == {"ingest_task": "Completed", "prepare_task": "Cached"}
    summary = json.loads((run / "ingest" / "summary.json").read_text())
    assert summary["examples"] == 401 and summary["duplicates"] == first.result()["ingest"]["duplicates"] + 1

    # a row less: new examples, so both run
    lines = (corpus / "travel.jsonl").read_text().splitlines(keepends=True)
    (corpus / "travel.jsonl").write_text("".join(lines[:-1]))
    sixth = hammer_data(config_path=str(cfg_path), overrides=["prepare.seed=12345"], return_state=True)
    assert _task_states(sixth) == {"ingest_task": "Completed", "prepare_task": "Completed"}


def test_cache_keys_follow_what_each_stage_reads(tmp_path):
    cfg = load_config(DEMO_CONFIG, [f"output_dir={tmp_path}"])
    same = load_config(DEMO_CONFIG, [f"output_dir={tmp_path / 'elsewhere'}", "prepare.workers=3", "train.track=false",
                                     "eval.batch_size=2"])
    reseeded = load_config(DEMO_CONFIG, ["prepare.seed=99"])
    for stage in ("prepare", "train"):
        assert caching.stage_config(stage, cfg) == caching.stage_config(stage, same), stage
    assert caching.stage_config("eval", cfg) != caching.stage_config("eval", same)
    assert caching.stage_config("prepare", cfg) != caching.stage_config("prepare", reseeded)
    assert caching.stage_config("ingest", cfg) == caching.stage_config("ingest", reseeded)
    assert caching.stage_config("train", cfg) == caching.stage_config("train", reseeded)
    assert caching.stage_key("register", cfg) is None
    ingest_key = caching.stage_key("ingest", cfg)
    assert ingest_key == caching.stage_key("ingest", reseeded) and ingest_key.startswith("hammer-ingest-")
    with pytest.raises(FileNotFoundError, match="run the earlier stage first"):
        caching.stage_key("prepare", cfg, {"ingest": tmp_path / "nothing"})
    # the code a stage runs: its module and what it imports, not the whole package
    assert caching.code_version("ingest") != caching.code_version("train")


# ------------------------------------------------------------------------------ retries
def test_retry_classification():
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

    from tasks.retry import is_transient

    assert is_transient(ConnectionRefusedError("refused"))
    assert is_transient(TimeoutError("slow"))
    assert is_transient(OSError(5, "I/O error"))
    assert is_transient(urllib.error.HTTPError("http://x", 503, "unavailable", {}, None))
    assert is_transient(MlflowException("API request failed: Max retries exceeded"))  # 500
    wrapped = RuntimeError("register failed")
    wrapped.__cause__ = ConnectionResetError("reset")
    assert is_transient(wrapped)
    for err in (ConfigError("bad key"), RowError("bad_json", "line 3"), TrainingError("worker died"),
                ValueError("x"), KeyError("k"), TypeError("t"), FileNotFoundError("no such file"),
                urllib.error.HTTPError("http://x", 404, "not found", {}, None),
                MlflowException("no such model", error_code=RESOURCE_DOES_NOT_EXIST), RuntimeError("bug")):
        assert not is_transient(err), err


def test_retries_only_transient_failures():
    from prefect import flow, task

    from tasks.retry import retry_options

    cfg = load_config(DEMO_CONFIG, ["orchestration.retries=3", "orchestration.retry_delay_seconds=[0]"])
    calls = {"io": 0, "config": 0}

    @task
    def flaky_io() -> str:
        calls["io"] += 1
        if calls["io"] == 1:
            raise OSError(5, "transient I/O error")
        return "ok"

    @task
    def bad_config() -> str:
        calls["config"] += 1
        raise ConfigError("invalid config: train.max_stepz: unknown key")

    @flow
    def retrying() -> tuple:
        io = flaky_io.with_options(**retry_options(cfg))(return_state=True)
        conf = bad_config.with_options(**retry_options(cfg))(return_state=True)
        return io, conf

    io_state, config_state = retrying()
    assert io_state.is_completed() and io_state.result() == "ok"
    assert calls["io"] == 2
    assert config_state.is_failed()
    assert calls["config"] == 1


# ------------------------------------------------------------------------------ Dask + shards
def _mixed_sources() -> list[dict]:
    """Two tasks, a source repeated under another name (cross-source duplicates), and fixtures of
    several formats (duplicate ids, rejects of many reasons)."""
    return [{"path": str(SAMPLE / "travel.jsonl"), "task": "travel"},
            {"path": str(SAMPLE / "finance.jsonl"), "task": "finance"},
            {"path": str(SAMPLE / "travel.jsonl"), "task": "travel", "name": "travel_again"},
            {"path": str(FIXTURES / "glaive" / "glaive-function-calling-v2.json"), "task": "finance"},
            {"path": str(FIXTURES / "xlam" / "xlam_irrelevance.jsonl"), "task": "travel"}]


def test_merged_shards_are_byte_identical_to_one_process(tmp_path):
    specs = [SourceSpec(**s) for s in _mixed_sources()]
    whole = ingest(specs, tmp_path / "whole", batch_rows=7)
    assert whole.summary["duplicates"] > 0 and whole.summary["rejected"] > 0
    shards = [ingest_shard(s, tmp_path / "shards" / f"{i}.parquet", batch_rows=7) for i, s in enumerate(specs)]
    merged = merge_shards(specs, [a.path for a in shards], tmp_path / "merged", batch_rows=7)
    assert merged.summary == whole.summary and merged.sources == whole.sources
    assert _same_files(tmp_path / "whole", tmp_path / "merged", DATA_FILES)
    with pytest.raises(ValueError, match="not the ingest shard"):
        merge_shards(specs[::-1], [a.path for a in shards], tmp_path / "wrong")


def test_dask_task_runner_gives_the_same_artifacts(tmp_path):
    from distributed import LocalCluster
    from prefect import flow

    from flows.stages import run_ingest
    from hammer_core import stages

    @flow
    def ingest_only(config_path: str) -> dict:
        return run_ingest(load_config(config_path))

    cfg_path = _config(tmp_path, _mixed_sources())
    local = load_config(cfg_path)
    stages.ingest(local, tmp_path / "local")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        state = ingest_only(config_path=str(_config(tmp_path, _mixed_sources(), orchestration={
            "task_runner": "dask", "dask_address": cluster.scheduler_address})), return_state=True)
    assert state.is_completed(), state
    assert _same_files(tmp_path / "run" / "ingest", tmp_path / "local", DATA_FILES)
    assert not (tmp_path / "run" / "ingest" / stages.SHARDS_DIR).exists()


def test_dask_runner_without_prefect_dask_is_a_clear_error(tmp_path, monkeypatch):
    from tasks.orchestration import data_task_runner

    monkeypatch.setitem(sys.modules, "prefect_dask", None)  # as if it were not installed
    cfg = load_config(DEMO_CONFIG, ["orchestration.task_runner=dask"])
    with pytest.raises(ConfigError, match="prefect-dask is not installed: pip install prefect-dask"):
        data_task_runner(cfg)


# ------------------------------------------------------------------------------ errors
def test_flow_reports_a_bad_config_in_one_line(tmp_path):
    from flows.stages import hammer_data

    state = hammer_data(config_path=str(DEMO_CONFIG), overrides=["train.max_stepz=3"], return_state=True)
    assert state.is_failed()
    assert state.message.startswith("hammer: invalid config") and "\n" not in state.message
    with pytest.raises(ConfigError, match="train.max_stepz"):
        state.result()


def test_run_turns_off_the_temporary_servers_telemetry(tmp_path, monkeypatch):
    """`hammer run` sets the temporary Prefect server's settings before anything starts (here
    the run stops at an unreachable MLflow store, before the flow): without it, the server's
    telemetry heartbeat prints a 'database is locked' traceback at the start of every run. The
    server is a subprocess that reads its settings from the environment it inherits, as a fresh
    Settings() does."""
    from prefect.settings import Settings

    monkeypatch.delenv("PREFECT_SERVER_ANALYTICS_ENABLED", raising=False)  # conftest turns it off for tests
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    run = ["run", str(DEMO_CONFIG), "--set", f"output_dir={tmp_path / 'run'}"]
    assert Settings().server.analytics_enabled  # Prefect's default: on
    assert cli(run) == 2
    assert not Settings().server.analytics_enabled
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "true")  # a user's own choice is kept
    assert cli(run) == 2
    assert Settings().server.analytics_enabled


def _cli(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=120)


def test_cli_says_what_to_do_when_prefect_or_mlflow_is_unreachable(tmp_path):
    closed = f"http://127.0.0.1:{free_port()}"
    base = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")}
    demo = [f"--out={tmp_path / 'demo'}"]

    out = _cli(["demo", *demo], {**base, "PREFECT_API_URL": f"{closed}/api"})
    assert out.returncode == 2, out.stderr
    assert f"cannot reach the Prefect API at {closed}/api" in out.stderr
    assert "prefect server start" in out.stderr and "unset PREFECT_API_URL" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1

    for args in (["run", str(DEMO_CONFIG), "--set", f"output_dir={tmp_path / 'run'}"],
                 ["register", "--config", str(DEMO_CONFIG), "--input", str(tmp_path / "run")],
                 ["train", "--config", str(DEMO_CONFIG), "--input", str(tmp_path / "prep"),
                  "--out", str(tmp_path / "train")]):
        out = _cli(args, {**base, "MLFLOW_TRACKING_URI": closed})
        assert out.returncode == 2, out.stderr
        assert closed in out.stderr and "Traceback" not in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_cli_user_errors_are_one_line_and_exit_2(tmp_path):
    """Bad configs, clashing inputs, an empty training set and a file as --out: one line on
    stderr (``hammer: ...``), exit code 2, no traceback."""
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.jsonl").write_text((SAMPLE / "travel.jsonl").read_text())
    (tmp_path / "bad.jsonl").write_text("not json\n")
    (tmp_path / "a_file").write_text("")
    for name, text in {"empty_data": "data:\n", "inf": "train:\n  lr: .inf\n", "nan": "train:\n  lr: .nan\n",
                       "inf_gate": "registry:\n  promotion:\n    min_delta: .inf\n"}.items():
        (tmp_path / f"{name}.yaml").write_text(text)
    env = dict(os.environ)
    # an ingest and a prepare with no row at all: train has nothing to train on
    assert _cli(["ingest", "--input", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "ingest")],
                env).returncode == 0
    assert _cli(["prepare", "--input", str(tmp_path / "ingest"), "--out", str(tmp_path / "prepare")],
                env).returncode == 0

    cases = [
        (["ingest", "--config", str(tmp_path / "empty_data.yaml"), "--out", str(tmp_path / "o")],
         "empty_data.yaml: data: Input should be a valid dictionary"),
        (["ingest", "--input", str(tmp_path / "a" / "x.jsonl"), str(tmp_path / "b" / "x.jsonl"),
          "--out", str(tmp_path / "o")], "are both named 'x'"),
        (["train", "--input", str(tmp_path / "prepare"), "--out", str(tmp_path / "train"),
          "--set", "train.track=false"], "has no rows to train on"),
        (["ingest", "--input", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "a_file")],
         f"--out {tmp_path / 'a_file'}: {tmp_path / 'a_file'} is a file, not a folder"),
        (["prepare", "--input", str(tmp_path / "ingest"), "--out", str(tmp_path / "a_file" / "prepare")],
         f"{tmp_path / 'a_file'} is a file, not a folder"),
        (["ingest", "--config", str(tmp_path / "inf.yaml"), "--out", str(tmp_path / "o")],
         "inf.yaml: train.lr: Input should be a finite number"),
        (["ingest", "--config", str(tmp_path / "nan.yaml"), "--out", str(tmp_path / "o")],
         "nan.yaml: train.lr: Input should be a finite number"),
        (["ingest", "--config", str(tmp_path / "inf_gate.yaml"), "--out", str(tmp_path / "o")],
         "registry.promotion.min_delta: Input should be a finite number"),
    ]
    for args, expected in cases:
        out = _cli(args, env)
        assert out.returncode == 2, (args, out.stderr)
        assert out.stderr.startswith("hammer: ") and len(out.stderr.strip().splitlines()) == 1, (args, out.stderr)
        assert expected in out.stderr and "Traceback" not in out.stderr, (args, out.stderr)
    assert not (tmp_path / "o").exists() and not (tmp_path / "train").exists()
    assert (tmp_path / "a_file").read_text() == ""
