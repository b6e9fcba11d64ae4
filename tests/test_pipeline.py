"""End to end, with real parts: a Prefect flow run, Parquet artifacts, a sqlite MLflow store."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from hammer_core.artifacts import open_artifact, sha256_file
from hammer_core.mlflow_store import use_tracking_uri
from hammer_core.schema import EXAMPLE_SCHEMA

from .conftest import DEMO_CONFIG, REPO

pytestmark = pytest.mark.slow


def test_flow_runs_every_stage_and_writes_artifacts(pipeline_run):
    result, run_dir, _ = pipeline_run
    for stage in ("ingest", "prepare", "train", "export", "eval", "register"):
        assert (run_dir / stage).is_dir(), stage
    ingest = json.loads((run_dir / "ingest" / "summary.json").read_text())
    assert ingest["records"] == ingest["examples"] == ingest["kept"] + ingest["rejected"] == 400
    assert ingest["rejected"] > 0
    assert set(ingest["by_task"]) == {"travel", "finance"}

    # every Parquet artifact reads back, matches its manifest, and chains to its parent
    examples = open_artifact(run_dir / "ingest" / "examples.parquet")
    assert examples.read().num_rows == ingest["kept"]
    assert sha256_file(examples.path) == examples.content_hash
    train = open_artifact(run_dir / "prepare" / "train.parquet")
    assert train.manifest["parents"] == [examples.content_hash]
    table = train.read()
    assert table.schema.remove_metadata().equals(EXAMPLE_SCHEMA.remove_metadata())
    variants = set(table.column("variant").to_pylist())
    assert {"original", "original+masked"} <= variants
    assert any(v.startswith("irrelevance") for v in variants)
    tokens = open_artifact(run_dir / "prepare" / "train_tokens.parquet")
    assert tokens.manifest["parents"] == [train.content_hash]
    assert tokens.read().num_rows == table.num_rows


def test_training_loss_goes_down(pipeline_run):
    _, run_dir, _ = pipeline_run
    history = [json.loads(line) for line in (run_dir / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == list(range(1, 7))
    assert history[-1]["loss"] < history[0]["loss"]
    assert (run_dir / "train" / "loss.png").stat().st_size > 1000
    assert (run_dir / "train" / "adapter" / "cgc_lora.safetensors").exists()


def test_export_writes_one_peft_adapter_per_task(pipeline_run):
    _, run_dir, _ = pipeline_run
    manifest = json.loads((run_dir / "export" / "export_manifest.json").read_text())
    assert sorted(manifest["tasks"]) == ["finance", "travel"]
    for task, rel in manifest["adapters"].items():
        cfg = json.loads((run_dir / "export" / rel / "adapter_config.json").read_text())
        assert cfg["peft_type"] == "LORA" and cfg["r"] == manifest["rank"]
        assert (run_dir / "export" / rel / "adapter_model.safetensors").exists()


def test_eval_metrics_are_written_and_consistent(pipeline_run):
    result, run_dir, _ = pipeline_run
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert metrics == result["metrics"]
    assert metrics["eval_rows"] == 6
    for key in ("exact_match", "call_accuracy", "irrelevance_accuracy", "parse_failure_rate"):
        assert 0.0 <= metrics[key] <= 1.0
    preds = pq.read_table(run_dir / "eval" / "predictions.parquet").to_pylist()
    assert len(preds) == 6
    assert metrics["exact_match"] == sum(p["correct"] for p in preds) / 6


def test_model_is_registered_in_mlflow_with_lineage(pipeline_run):
    import mlflow
    from mlflow import MlflowClient

    result, run_dir, _ = pipeline_run
    reg = result["registry"]
    assert reg["tracking_uri"].startswith("sqlite:///")
    client = MlflowClient(tracking_uri=reg["tracking_uri"], registry_uri=reg["tracking_uri"])
    mv = client.get_model_version("hammer-fc", str(reg["version"]))
    assert mv.tags["hammer.examples_hash"].startswith("sha256:")
    assert client.get_model_version_by_alias("hammer-fc", "candidate").version == mv.version
    run = client.get_run(reg["run_id"])
    assert run.data.params["adapter.n_common"] == "2"
    assert "eval/exact_match" in run.data.metrics
    assert len(client.get_metric_history(reg["run_id"], "train/loss")) == 6

    with use_tracking_uri(reg["tracking_uri"]):  # (mlflow.set_tracking_uri would export it to later tests)
        model = mlflow.pyfunc.load_model("models:/hammer-fc@candidate")
    assert "MLFLOW_TRACKING_URI" not in os.environ
    tools = [{"name": "get_weather", "description": "Current weather for a city.",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
    out = model.predict([{"query": "Weather in Oslo?", "tools": tools, "task": "travel"}])
    assert isinstance(out, list) and len(out) == 1
    assert isinstance(out[0]["calls"], list) and isinstance(out[0]["raw"], str)
    with pytest.raises(Exception, match="unknown task"):
        model.predict([{"query": "x", "tools": tools, "task": "nope"}])


def test_cli_help_and_clear_config_errors(tmp_path):
    out = subprocess.run([sys.executable, "-m", "flows.cli", "--help"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0
    for cmd in ("ingest", "prepare", "train", "export", "eval", "register", "run", "demo"):
        assert cmd in out.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEMO_CONFIG.read_text().replace("  max_steps:", "  max_stepz:"))
    out = subprocess.run([sys.executable, "-m", "flows.cli", "run", str(bad)], capture_output=True, text=True,
                         cwd=REPO)
    assert out.returncode == 2
    assert "train.max_stepz" in out.stderr and "unknown key" in out.stderr
    assert "Traceback" not in out.stderr


def test_every_demo_config_validates_and_an_unknown_demo_model_is_one_line(tmp_path):
    from hammer_core.config import load_config
    from hammer_core.paths import DEMO_CONFIGS

    names = {load_config(path).registry.model_name for path in DEMO_CONFIGS.values()}
    assert len(names) == len(DEMO_CONFIGS)  # each base model registers under its own name
    assert load_config(DEMO_CONFIGS["smollm2-135m"]).model.name_or_path == "smollm2-135m"
    out = subprocess.run([sys.executable, "-m", "flows.cli", "demo", "--model", "gpt-9"], capture_output=True,
                         text=True, cwd=REPO)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "no demo for that model" in out.stderr and "smollm2-135m" in out.stderr


def test_the_demo_asks_the_registered_model_new_questions(pipeline_run, capsys):
    from flows.cli import _ask
    from hammer_core.paths import DEMO_QUESTIONS

    result, _, _ = pipeline_run
    _ask(result["registry"], DEMO_QUESTIONS)
    out = capsys.readouterr().out
    questions = [json.loads(line) for line in DEMO_QUESTIONS.read_text().splitlines()]
    assert result["registry"]["registered_uri"] in out
    assert out.count("\n  Q  ") == len(questions) == out.count("\n  A  ")
    for q in questions:
        assert q["query"] in out and q["about"] in out


def test_stages_publish_artifacts_and_progress(pipeline_run):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter

    keys = ["hammer-pipeline-progress", "hammer-ingest", "hammer-ingest-rejects", "hammer-ingest-sources",
            "hammer-prepare", "hammer-train", "hammer-export", "hammer-eval", "hammer-eval-metrics",
            "hammer-register"]
    found: dict[str, list] = {}
    with get_client(sync_client=True) as client:
        for a in client.read_artifacts(artifact_filter=ArtifactFilter(key={"any_": keys})):
            found.setdefault(a.key, []).append(a)
    assert set(keys) <= set(found), sorted(set(keys) - set(found))
    assert any(float(a.data) == 100.0 for a in found["hammer-pipeline-progress"])
    ingest = json.loads((pipeline_run[1] / "ingest" / "summary.json").read_text())
    tables = [{r["reason"]: r["rows"] for r in json.loads(a.data)} for a in found["hammer-ingest-rejects"]]
    assert ingest["by_reason"] in tables


def _stage_states(flow_state) -> dict[str, str]:
    """Stage -> state name of the stage task runs of a pipeline run (its subflows included)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    root = flow_state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        subflows = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[root])))
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [root, *(r.id for r in subflows)]}))
    names = {f"{s}_task": s for s in ("ingest", "prepare", "train", "export", "register")} | {"eval_task": "eval"}
    return {names[k]: r.state.name for r in runs if (k := r.task_key.rsplit("-", 1)[0]) in names}


@pytest.mark.slow
def test_a_moved_unchanged_run_is_served_from_the_cache_and_a_new_masking_seed_reruns_downstream_only(
        pipeline_run, tmp_path, monkeypatch):
    """Cache keys hold content hashes and config, not paths or run ids: a copy of the output folder
    re-runs from the cache elsewhere; a new prepare.seed reruns prepare and everything after it."""
    import shutil

    from flows.pipeline import hammer_pipeline

    first, run, overrides = pipeline_run
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # registry.local_dir below must win
    moved = tmp_path / "moved"
    shutil.copytree(run, moved)
    args = [o for o in overrides if not o.startswith(("output_dir=", "registry.local_dir="))]
    args += [f"output_dir={moved}", f"registry.local_dir={tmp_path / 'mlflow'}"]

    again = hammer_pipeline(config_path=str(DEMO_CONFIG), overrides=args, return_state=True)
    assert again.is_completed(), again
    assert _stage_states(again) == {"ingest": "Cached", "prepare": "Cached", "train": "Cached", "export": "Cached",
                                    "eval": "Cached", "register": "Completed"}
    assert again.result()["metrics"] == first["metrics"]
    v1 = again.result()["registry"]["version"]

    reseeded = hammer_pipeline(config_path=str(DEMO_CONFIG), overrides=args + ["prepare.seed=7"], return_state=True)
    assert reseeded.is_completed(), reseeded
    assert _stage_states(reseeded) == {"ingest": "Cached", "prepare": "Completed", "train": "Completed",
                                       "export": "Completed", "eval": "Completed", "register": "Completed"}
    assert (moved / "ingest" / "examples.parquet").read_bytes() == (run / "ingest" / "examples.parquet").read_bytes()
    assert (moved / "prepare" / "train.parquet").read_bytes() != (run / "prepare" / "train.parquet").read_bytes()
    reg = reseeded.result()["registry"]
    assert int(reg["version"]) == int(v1) + 1 and reg["tracking_uri"].startswith(f"sqlite:///{tmp_path / 'mlflow'}")
