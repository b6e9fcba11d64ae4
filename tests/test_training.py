"""The train stage: batches and the globally normalized loss, checkpoints on disk, config,
MLflow tracking, and real launched runs (worker processes, DeepSpeed, resume, failures)."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch
from safetensors.torch import load_file

from hammer_core.train import checkpoint as ckpt
from hammer_core.artifacts import Artifact, write_table
from hammer_core.config import ConfigError, config_from_dict, load_config
from hammer_core.train.trainer import TokenRows, answer_loss_sums, collate, token_loss_sums

from .conftest import DEMO_CONFIG

TOKENS_SCHEMA = pa.schema([("id", pa.string(), False), ("task", pa.string(), False),
                           ("input_ids", pa.list_(pa.int32()), False), ("n_prompt", pa.int32(), False)])


def make_tokens(path: Path, n: int = 48, seed: int = 0, min_len: int = 12, max_len: int = 40) -> Artifact:
    """A small ``train_tokens.parquet`` of random token rows over three tasks of unequal size."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        length = int(rng.integers(min_len, max_len))
        rows.append({"id": f"r{i}", "task": "travel" if i % 5 == 0 else ["travel", "finance", "weather"][i % 3],
                     "input_ids": rng.integers(10, 8000, length).astype(np.int32).tolist(),
                     "n_prompt": int(rng.integers(4, length - 2))})
    return write_table(pa.Table.from_pylist(rows, schema=TOKENS_SCHEMA), path, kind="tokens")


def train_config(root: Path, **train: Any):
    """A config for the tiny preset with a local MLflow store under ``root``."""
    base = {"max_steps": 8, "batch_size": 4, "lr": 0.01, "warmup_steps": 2, "log_every": 1, "checkpoint_every": 4}
    return config_from_dict({"seed": 0, "output_dir": str(root / "run"), "train": {**base, **train},
                             "registry": {"local_dir": str(root / "mlflow")}})


def adapter_weights(train_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(train_dir / "adapter" / "cgc_lora.safetensors"))


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def history(train_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (train_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def steady_workers(monkeypatch):
    """Worker processes use one thread each (steady on a shared 2-core machine), and MLflow samples
    system metrics often enough for a run of a few seconds to have some."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    # mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI: an earlier in-process MLflow user
    # must not redirect these runs away from their own store
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


# ----------------------------------------------------------------------- batches and loss
def test_collate_masks_prompt_and_padding_and_counts_answer_tokens(tmp_path):
    data = TokenRows.read(make_tokens(tmp_path / "t.parquet", n=10).path)
    idx = [3, 0, 7]
    batch = collate(data, idx, pad_id=0)
    for k, i in enumerate(idx):
        n, p = int(data.lengths[i]), int(data.n_prompt[i])
        assert batch["attention_mask"][k].sum() == n
        assert (batch["labels"][k, :p] == -100).all() and (batch["labels"][k, n:] == -100).all()
        assert (batch["labels"][k, p:n] == batch["input_ids"][k, p:n]).all()
        assert data.tasks[int(batch["task_ids"][k])] == data.row_tasks()[i]
    logits = torch.randn(*batch["input_ids"].shape, 50)
    batch["labels"] = batch["labels"].clamp(max=49).masked_fill(batch["labels"] == -100, -100)
    sums, counts = token_loss_sums(logits, batch["labels"])
    assert int(counts.sum()) == data.answer_tokens(idx)
    mean = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 50), batch["labels"][:, 1:].reshape(-1))
    assert float(sums.sum() / counts.sum()) == pytest.approx(float(mean), rel=1e-5)


def test_answer_only_logits_give_the_full_logits_loss_and_gradient(tmp_path):
    """The train step computes logits from the batch's first answer position on: the same
    per-row losses, token counts and adapter gradients as logits over every position."""
    from hammer_core.model.cgc_lora import CGCLoraConfig, inject_cgc_lora
    from hammer_core.model.base import build_tiny_model

    data = TokenRows.read(make_tokens(tmp_path / "t.parquet", n=8).path)
    torch.manual_seed(0)
    model = inject_cgc_lora(build_tiny_model(8192, seed=0), CGCLoraConfig(tasks=data.tasks))
    for layer in model.cgc_layers().values():
        torch.nn.init.normal_(layer.lora_B, std=0.02)
    idx = [5, 1, 6]
    b = collate(data, idx, pad_id=0)
    assert len({int(data.n_prompt[i]) for i in idx}) > 1  # rows whose answers start apart

    def run(kept: bool):
        model.zero_grad()
        if kept:
            sums, counts = answer_loss_sums(model, b, int(data.n_prompt[idx].min()))
        else:
            out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], task_ids=b["task_ids"])
            sums, counts = token_loss_sums(out.logits, b["labels"])
        sums.sum().backward()
        return sums.detach(), counts, [p.grad.clone() for p in model.trainable_parameters()]

    (s_full, c_full, g_full), (s_kept, c_kept, g_kept) = run(False), run(True)
    assert torch.equal(c_full, c_kept) and int(c_kept.sum()) == data.answer_tokens(idx)
    assert torch.allclose(s_full, s_kept, rtol=1e-5, atol=1e-5)
    assert max(float((a - c).abs().max()) for a, c in zip(g_full, g_kept)) < 1e-5


def test_global_token_normalization_makes_shards_add_up_to_the_whole_batch(tmp_path):
    """The data-parallel identity: per-shard losses normalized by the global answer-token count
    sum to the whole batch's loss, so their gradients add up to the whole batch's gradient."""
    from hammer_core.model.cgc_lora import CGCLoraConfig, inject_cgc_lora
    from hammer_core.model.base import build_tiny_model

    data = TokenRows.read(make_tokens(tmp_path / "t.parquet", n=8).path)
    torch.manual_seed(0)
    model = inject_cgc_lora(build_tiny_model(8192, seed=0), CGCLoraConfig(tasks=data.tasks))
    for layer in model.cgc_layers().values():  # B starts at 0: give the adapter a real gradient
        torch.nn.init.normal_(layer.lora_B, std=0.02)
    rows, total = list(range(8)), data.answer_tokens(list(range(8)))

    def grads(shards: list[list[int]]) -> list[torch.Tensor]:
        model.zero_grad()
        for shard in shards:
            b = collate(data, shard, pad_id=0)
            out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], task_ids=b["task_ids"])
            (token_loss_sums(out.logits, b["labels"])[0].sum() / total).backward()
        return [p.grad.clone() for p in model.trainable_parameters()]

    whole, split = grads([rows]), grads([rows[:4], rows[4:]])
    assert max(float((a - b).abs().max()) for a, b in zip(whole, split)) < 1e-6
    assert max(float(g.abs().max()) for g in whole) > 1e-4


# ---------------------------------------------------------------------------- checkpoints
def test_rng_states_round_trip_through_json(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    ckpt.write_rng(tmp_path, rank=0)
    first = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    ckpt.restore_rng(ckpt.read_rng(tmp_path, rank=0))
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == first
    assert ckpt.read_rng(tmp_path, rank=1) is None
    assert json.loads(ckpt.rng_path(tmp_path, 0).read_text())["torch_cpu"]  # plain JSON, no pickle


def test_checkpoints_are_atomic_and_only_the_newest_are_kept(tmp_path):
    moments = {"layer.lora_A": {"exp_avg": torch.randn(4, 3), "exp_avg_sq": torch.rand(4, 3)}}
    for step in (10, 20, 30):
        staging = ckpt.begin(tmp_path, step)
        ckpt.write_tensors(staging / ckpt.OPTIMIZER_NAME, ckpt.optimizer_tensors(moments))
        assert ckpt.list_checkpoints(tmp_path)[-1:] != [(step, staging)]  # invisible until committed
        ckpt.write_state(staging, {"step": step})
        ckpt.commit(tmp_path, step, keep=2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [20, 30]
    latest = ckpt.latest_checkpoint(tmp_path)
    assert ckpt.read_state(latest)["step"] == 30
    back = ckpt.optimizer_moments(ckpt.read_tensors(latest / ckpt.OPTIMIZER_NAME))
    assert torch.equal(back["layer.lora_A"]["exp_avg_sq"], moments["layer.lora_A"]["exp_avg_sq"])
    ckpt.begin(tmp_path, 40)  # a run killed while writing step 40
    assert ckpt.latest_checkpoint(tmp_path) == latest
    ckpt.sweep_partial(tmp_path)
    assert sorted(p.name for p in ckpt.checkpoints_root(tmp_path).iterdir()) == ["step-00000020", "step-00000030"]


def test_scheduler_state_survives_json(tmp_path):
    from transformers import get_scheduler

    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    sched = get_scheduler("cosine", opt, num_warmup_steps=2, num_training_steps=10)
    for _ in range(4):
        opt.step(), sched.step()
    state = json.loads(json.dumps(ckpt.jsonable_scheduler_state(sched.state_dict())))
    opt2 = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    sched2 = get_scheduler("cosine", opt2, num_warmup_steps=2, num_training_steps=10)
    sched2.load_state_dict({**state, "lr_lambdas": [None]})
    for _ in range(3):
        opt.step(), sched.step(), opt2.step(), sched2.step()
        assert sched2.get_last_lr() == sched.get_last_lr()


# --------------------------------------------------------------------------------- config
def test_train_config_validates_distributed_settings():
    cfg = load_config(DEMO_CONFIG)
    assert cfg.train.nproc == 1 and cfg.train.deepspeed.zero_stage == 0 and cfg.train.resume
    with pytest.raises(ConfigError, match="offload_param"):
        config_from_dict({"train": {"deepspeed": {"zero_stage": 2, "offload_param": "cpu"}}})
    with pytest.raises(ConfigError, match="offload_optimizer"):
        config_from_dict({"train": {"deepspeed": {"offload_optimizer": "cpu"}}})
    with pytest.raises(ConfigError, match="rdzv_endpoint"):
        config_from_dict({"train": {"nnodes": 2}})
    with pytest.raises(ConfigError, match="train.deepspeed.zero_stage"):
        config_from_dict({"train": {"deepspeed": {"zero_stage": 4}}})


def test_launcher_commands_and_deepspeed_config():
    from hammer_core.train.distributed import deepspeed_config, launcher_command

    t = config_from_dict({"train": {"nproc": 2, "batch_size": 3, "grad_accum": 2}}).train
    cmd = launcher_command(t, Path("/x/job.json"))
    assert cmd[1:3] == ["-m", "torch.distributed.run"] and "--standalone" in cmd
    assert cmd[cmd.index("--nproc-per-node") + 1] == "2" and cmd[-4:] == ["-m", "hammer_core.train.worker",
                                                                          "--job", "/x/job.json"]
    multi = config_from_dict({"train": {"nnodes": 2, "rdzv_endpoint": "node0:29400"}}).train
    assert "node0:29400" in launcher_command(multi, Path("/x/job.json"))
    ds = config_from_dict({"train": {"launcher": "deepspeed", "nproc": 2}}).train
    assert launcher_command(ds, Path("/x/job.json"))[1:3] == ["-m", "deepspeed.launcher.runner"]
    z = config_from_dict({"train": {"batch_size": 3, "grad_accum": 2, "deepspeed": {
        "zero_stage": 3, "offload_optimizer": "cpu", "offload_param": "cpu"}}}).train
    conf = deepspeed_config(z, world_size=4)
    assert conf["train_batch_size"] == 24 and conf["gradient_clipping"] == 1.0
    assert conf["zero_optimization"]["stage"] == 3 and conf["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert "bf16" not in conf  # bf16 is the frozen base's dtype; what DeepSpeed optimizes stays fp32


# ------------------------------------------------------------------------------- tracking
def test_tracker_logs_inputs_and_reattaches_to_its_run(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from hammer_core.registry.registration import _training_run
    from hammer_core.train.tracking import POINTER_NAME, Tracker, config_params

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")  # unset (resolves to the local store) and restored after
    cfg = train_config(tmp_path)
    parent = make_tokens(tmp_path / "prep" / "train.parquet", n=6, seed=1)
    tokens = write_table(make_tokens(tmp_path / "prep" / "train_tokens.parquet", n=6).read(),
                         tmp_path / "prep" / "train_tokens.parquet", kind="tokens", parents=[parent])
    train_dir = cfg.stage_dir("train")
    tracker = Tracker.open(cfg, train_dir, resuming=False)
    tracker.log_params(config_params(cfg))
    tracker.log_inputs(tokens)
    tracker.log_metrics({"train/loss": 2.0}, step=1)
    tracker.close()
    assert os.environ["MLFLOW_TRACKING_URI"] == ""  # the closed run leaves the environment as it was
    pointer = json.loads((train_dir / POINTER_NAME).read_text())
    assert json.loads((Path(cfg.output_dir) / POINTER_NAME).read_text()) == pointer
    client = MlflowClient(tracking_uri=pointer["tracking_uri"])
    run = client.get_run(pointer["run_id"])
    assert run.data.params["train.max_steps"] == "8" and run.data.params["adapter.n_common"] == "2"
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"train_tokens", "train"}
    tags = {t.key: t.value for t in inputs["train_tokens"].tags}
    assert tags["content_hash"] == tokens.content_hash
    assert tokens.content_hash.removeprefix("sha256:").startswith(inputs["train_tokens"].dataset.digest)

    again = Tracker.open(cfg, train_dir, resuming=True)  # a resumed training continues the same run
    again.log_params(config_params(cfg))  # already there: no "changing param values" error
    again.log_metrics({"train/loss": 1.5}, step=2)
    again.close()
    assert again.run_id == pointer["run_id"]
    assert [m.value for m in client.get_metric_history(pointer["run_id"], "train/loss")] == [2.0, 1.5]
    assert _training_run(client, pointer["tracking_uri"], train_dir).info.run_id == pointer["run_id"]
    assert _training_run(client, "http://elsewhere", train_dir) is None
    fresh = Tracker.open(cfg, train_dir, resuming=False)
    fresh.close()
    assert fresh.run_id != pointer["run_id"]


# ------------------------------------------------------------------------ launched runs
@pytest.mark.slow
def test_launched_training_writes_outputs_tracks_and_reruns_as_a_resume(tmp_path, steady_workers):
    from mlflow import MlflowClient

    from hammer_core.model.trained import load_trained
    from hammer_core.train.trainer import train

    tokens = make_tokens(tmp_path / "prep" / "train_tokens.parquet")
    cfg = train_config(tmp_path, keep_checkpoints=1, deepspeed={"zero_stage": 1})
    out = cfg.stage_dir("train")
    res = train(cfg, tokens, out, progress=False)
    s = res.summary
    assert s["steps"] == 8 and s["world_size"] == 1 and s["zero_stage"] == 1 and s["resumed_from_step"] is None
    assert s["tasks"] == ["finance", "travel", "weather"] and s["tokens"] > 0
    assert [h["step"] for h in history(out)] == list(range(1, 9))
    assert all(np.isfinite(h["grad_norm"]) and h["grad_norm"] > 0 for h in history(out))
    assert [p.name for p in ckpt.checkpoints_root(out).iterdir()] == ["step-00000008"]  # keep_checkpoints=1
    for name in ("base_model/config.json", "tokenizer/tokenizer.json", "loss.png", "logs/launch.log"):
        assert (out / name).exists(), name
    model, _ = load_trained(out)  # what the eval and export stages read
    assert model.config.tasks == s["tasks"]

    pointer = json.loads((out / "mlflow_run.json").read_text())
    assert pointer["tracking_uri"] == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"  # the config's local store
    client = MlflowClient(tracking_uri=pointer["tracking_uri"])
    run = client.get_run(s["mlflow_run_id"])
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 8
    assert {"train/lr", "train/grad_norm", "train/tokens_per_s", "train/loss/finance"} <= set(run.data.metrics)
    assert any(k.startswith("system/") for k in run.data.metrics)
    assert run.data.params["run.world_size"] == "1"
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "train")}
    assert {"train/adapter", "train/checkpoints", "train/metrics.jsonl"} <= arts

    # the same command again (here through the deepspeed launcher, which changes nothing that is
    # computed): it continues from the final checkpoint, so trains no further, in the same run
    first = adapter_weights(out)
    cfg2 = config_from_dict({**cfg.model_dump(mode="json"),
                             "train": {**cfg.train.model_dump(mode="json"), "launcher": "deepspeed"}})
    s2 = train(cfg2, tokens, out, progress=False).summary
    assert s2["launcher"] == "deepspeed" and s2["resumed_from_step"] == 8
    assert max_abs_diff(adapter_weights(out), first) == 0.0
    assert s2["mlflow_run_id"] == s["mlflow_run_id"]
    assert len(history(out)) == 8


@pytest.mark.slow
def test_a_failing_worker_is_reported_with_its_error(tmp_path, steady_workers):
    from hammer_core.train.distributed import TrainingError
    from hammer_core.train.trainer import train

    tokens = make_tokens(tmp_path / "prep" / "train_tokens.parquet", n=8)
    cfg = train_config(tmp_path, max_steps=2, track=False)
    tokens.path.unlink()  # the data vanishes after the stage started
    with pytest.raises(FileNotFoundError):
        train(cfg, tokens, cfg.stage_dir("train"), progress=False)
    tokens = make_tokens(tmp_path / "prep" / "train_tokens.parquet", n=8)
    bad = config_from_dict({**cfg.model_dump(mode="json"), "model": {"name_or_path": str(tmp_path / "no-model")}})
    with pytest.raises(TrainingError, match=r"rank 0: ModelLoadError: could not load tokenizer") as err:
        train(bad, tokens, cfg.stage_dir("train"), progress=False)
    assert "launch.log" in str(err.value)


def test_the_multitask_lora_baseline_trains_through_the_launcher(tmp_path, steady_workers):
    """adapter.variant multitask_lora (one expert: its gate is constant and frozen) trains like
    CGC-LoRA does; the ablation arm of benchmarks/bench_quality.py runs exactly this."""
    from hammer_core.train.trainer import train

    tokens = make_tokens(tmp_path / "prep" / "train_tokens.parquet", n=12)
    cfg = config_from_dict({**train_config(tmp_path, max_steps=2, checkpoint_every=0, track=False).model_dump(),
                            "adapter": {"variant": "multitask_lora"}})
    res = train(cfg, tokens, cfg.stage_dir("train"), progress=False)
    assert res.summary["steps"] == 2
    weights = adapter_weights(cfg.stage_dir("train"))
    assert max(float(w.abs().max()) for k, w in weights.items() if k.endswith("lora_B")) > 0  # B trained
    from hammer_core.model.trained import load_trained
    model, _ = load_trained(cfg.stage_dir("train"))  # the saved adapter loads back (its gate is constant)
    assert model.config.variant == "multitask_lora"
