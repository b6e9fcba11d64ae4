"""The champion gate (hammer_core.registry.promotion.promote) on a real MLflow sqlite store.

Versions are registered from plain MLflow runs that carry ``eval/*`` metrics (what the
register stage logs), so every gate decision is exercised without a pipeline run; the gate
inside ``register()`` is covered by test_registry / test_pipeline."""

from __future__ import annotations

import itertools

import pytest

from hammer_core.config import PipelineConfig
from hammer_core.mlflow_store import resolve_tracking_uri
from hammer_core.registry.promotion import CHAMPION, DECISION_TAG, REASON_TAG, promote

_names = itertools.count()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One sqlite store for the module (creating one costs seconds); each test has its own model."""
    return tmp_path_factory.mktemp("promotion_store")


@pytest.fixture
def model(store, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    name = f"gate-{next(_names)}"

    def cfg(**promotion) -> PipelineConfig:
        return PipelineConfig(registry={"local_dir": str(store), "model_name": name, "promotion": promotion})

    from mlflow import MlflowClient

    uri = resolve_tracking_uri(cfg())
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.get_experiment_by_name("gate") or None
    exp_id = exp.experiment_id if exp else client.create_experiment("gate", artifact_location=(store / "art").as_uri())
    client.create_registered_model(name)

    def version(base: str | None = None, **metrics: float) -> int:
        run = client.create_run(exp_id)
        for k, v in metrics.items():
            client.log_metric(run.info.run_id, f"eval/{k}", v)
        client.set_terminated(run.info.run_id)
        tags = {"hammer.base_model": base} if base else None
        return int(client.create_model_version(name, source=run.info.artifact_uri, run_id=run.info.run_id,
                                               tags=tags).version)

    def champion() -> int | None:
        try:
            return int(client.get_model_version_by_alias(name, CHAMPION).version)
        except Exception:  # noqa: BLE001 - no alias yet
            return None

    return cfg, version, champion, client, name


def test_first_version_becomes_champion_and_the_decision_is_tagged(model):
    cfg, version, champion, client, name = model
    v1 = version(call_accuracy=0.2, irrelevance_accuracy=0.5)
    res = promote(cfg(), v1)
    assert res["promoted"] and res["champion_before"] is None and res["champion_after"] == v1
    assert "first version" in res["reason"]
    assert champion() == v1
    tags = client.get_model_version(name, str(v1)).tags
    assert tags[DECISION_TAG] == "promoted" and "first version" in tags[REASON_TAG]
    assert [r["metric"] for r in res["table"]] == ["call_accuracy", "irrelevance_accuracy"]
    assert "| call_accuracy |" in res["markdown"]


def test_better_on_every_metric_is_promoted(model):
    cfg, version, champion, client, name = model
    v1 = version(call_accuracy=0.2, irrelevance_accuracy=0.5)
    promote(cfg(), v1)
    v2 = version(call_accuracy=0.3, irrelevance_accuracy=0.6)
    res = promote(cfg(), f"{v2}")
    assert res["promoted"] and res["champion_before"] == v1 and res["champion_after"] == v2
    assert champion() == v2
    assert all(r["passes"] for r in res["table"])
    assert res["table"][0]["delta"] == pytest.approx(0.1)
    assert f"beats champion version {v1}" in res["reason"]
    assert client.get_model_version(name, str(v1)).tags["hammer.promotion.replaced_by"] == str(v2)


def test_a_tie_or_one_worse_metric_keeps_the_champion_and_says_why(model):
    cfg, version, champion, client, name = model
    v1 = version(call_accuracy=0.2, irrelevance_accuracy=0.5)
    promote(cfg(), v1)
    tie = version(call_accuracy=0.2, irrelevance_accuracy=0.5)
    res = promote(cfg(), tie)
    assert not res["promoted"] and res["champion_after"] == v1 and champion() == v1
    assert "call_accuracy ties at 0.2" in res["reason"] and "irrelevance_accuracy ties" in res["reason"]
    mixed = version(call_accuracy=0.9, irrelevance_accuracy=0.4)
    res = promote(cfg(), mixed)
    assert not res["promoted"] and champion() == v1
    assert [r["passes"] for r in res["table"]] == [True, False]
    assert "irrelevance_accuracy 0.4 vs 0.5" in res["reason"] and "call_accuracy" not in res["reason"]
    tags = client.get_model_version(name, str(mixed)).tags
    assert tags[DECISION_TAG] == "rejected" and tags["hammer.promotion.champion_before"] == str(v1)


def test_min_delta_and_min_direction(model):
    cfg, version, champion, _, _ = model
    gate = {"metrics": {"call_accuracy": "max", "parse_failure_rate": "min"}, "min_delta": 0.05}
    v1 = version(call_accuracy=0.2, parse_failure_rate=0.5)
    promote(cfg(**gate), v1)
    small = version(call_accuracy=0.24, parse_failure_rate=0.3)      # +0.04 is not more than 0.05
    res = promote(cfg(**gate), small)
    assert not res["promoted"] and "needs higher by more than 0.05" in res["reason"]
    worse_rate = version(call_accuracy=0.4, parse_failure_rate=0.6)  # lower is better: 0.6 loses
    res = promote(cfg(**gate), worse_rate)
    assert not res["promoted"] and "needs lower" in res["reason"]
    good = version(call_accuracy=0.4, parse_failure_rate=0.3)
    res = promote(cfg(**gate), good)
    assert res["promoted"] and champion() == good
    assert res["table"][1]["delta"] == pytest.approx(-0.2) and res["table"][1]["passes"]


def test_a_missing_metric_blocks_promotion_and_force_overrides(model):
    cfg, version, champion, client, name = model
    v1 = version(call_accuracy=0.2, irrelevance_accuracy=0.5)
    promote(cfg(), v1)
    partial = version(call_accuracy=0.9)
    res = promote(cfg(), partial)
    assert not res["promoted"] and champion() == v1
    assert "irrelevance_accuracy is missing on the candidate" in res["reason"]
    assert res["table"][1]["candidate"] is None and res["table"][1]["delta"] is None
    res = promote(cfg(), partial, force=True)
    assert res["promoted"] and res["reason"].startswith("forced") and champion() == partial
    assert client.get_model_version(name, str(partial)).tags[DECISION_TAG] == "forced"
    # the champion itself: nothing to do
    res = promote(cfg(), "@champion")
    assert not res["promoted"] and res["champion_after"] == partial and "already the champion" in res["reason"]


def test_promote_command_prints_the_decision_and_exits_1_when_the_gate_says_no(model, tmp_path, capsys):
    import yaml

    from flows.cli import main

    cfg, version, champion, client, name = model
    v1 = version(call_accuracy=0.5, irrelevance_accuracy=0.5)
    v2 = version(call_accuracy=0.4, irrelevance_accuracy=0.9)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg().model_dump(mode="json")))
    assert main(["promote", "--config", str(path), "--version", str(v1)]) == 0
    assert champion() == v1 and "first version" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["promote", "--config", str(path), "--version", str(v2)])
    assert exit_.value.code == 1 and champion() == v1
    out = capsys.readouterr().out
    assert "call_accuracy" in out and "| call_accuracy |" in out
    assert main(["promote", "--config", str(path), "--version", str(v2), "--force"]) == 0
    assert champion() == v2
    assert main(["promote", "--config", str(path), "--version", "99"]) == 2  # unknown version: one line
    assert "cannot promote" in capsys.readouterr().err


def test_a_champion_of_another_base_model_is_not_compared(model):
    """A tiny random-init champion that always says "no call" (irrelevance 1.0) must neither block
    nor be beaten by a real model's scores: the gate compares like with like."""
    cfg, version, champion, client, name = model
    tiny = version(base="hammer-tiny-qwen2", call_accuracy=0.0, irrelevance_accuracy=1.0)
    promote(cfg(), tiny)
    real = version(base="smollm2-135m", call_accuracy=0.7, irrelevance_accuracy=0.9)
    res = promote(cfg(), real)
    assert not res["promoted"] and champion() == tiny
    assert "'hammer-tiny-qwen2'" in res["reason"] and "registry.model_name" in res["reason"]
    same = version(base="hammer-tiny-qwen2", call_accuracy=0.1, irrelevance_accuracy=1.0)
    assert not promote(cfg(), same)["promoted"]  # same base: the usual gate (a tie on irrelevance)
    assert promote(cfg(), real, force=True)["promoted"] and champion() == real
