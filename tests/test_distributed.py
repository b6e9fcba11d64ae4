"""Data parallelism is exact: 2 worker processes with batch b train like 1 with batch 2b, and
ZeRO-3 (parameters sharded over the processes) still saves the full CGC-LoRA adapter."""

from __future__ import annotations

import pytest

from hammer_core.train import checkpoint as ckpt
from hammer_core.train.trainer import train

from .test_training import (adapter_weights, history, make_tokens, max_abs_diff,  # noqa: F401
                            steady_workers, train_config)

pytestmark = pytest.mark.slow


def test_two_processes_with_zero3_match_one_process_with_twice_the_batch(tmp_path, steady_workers):  # noqa: F811
    tokens = make_tokens(tmp_path / "prep" / "train_tokens.parquet", n=48)
    common = {"max_steps": 20, "track": False, "checkpoint_every": 0, "lr": 0.01}
    one_cfg = train_config(tmp_path / "one", batch_size=4, nproc=1, **common)
    two_cfg = train_config(tmp_path / "two", batch_size=2, nproc=2, deepspeed={"zero_stage": 3}, **common)
    one = train(one_cfg, tokens, one_cfg.stage_dir("train"), progress=False).summary
    two = train(two_cfg, tokens, two_cfg.stage_dir("train"), progress=False).summary
    assert (one["world_size"], two["world_size"], two["zero_stage"]) == (1, 2, 3)
    assert one["global_batch"] == two["global_batch"] == 4 and one["tokens"] == two["tokens"]

    h1, h2 = history(one_cfg.stage_dir("train")), history(two_cfg.stage_dir("train"))
    assert [h["step"] for h in h1] == [h["step"] for h in h2] == list(range(1, 21))
    for a, b in zip(h1, h2):
        assert abs(a["loss"] - b["loss"]) < 1e-4, (a, b)
        assert a["lr"] == b["lr"]
        assert abs(a["grad_norm"] - b["grad_norm"]) < 1e-3 * max(1.0, a["grad_norm"])
        for key in (k for k in a if k.startswith("loss/")):
            assert abs(a[key] - b[key]) < 1e-4
    assert h1[-1]["loss"] < h1[0]["loss"]  # it learned something: the comparison is not vacuous

    w1, w2 = adapter_weights(one_cfg.stage_dir("train")), adapter_weights(two_cfg.stage_dir("train"))
    assert {k: v.shape for k, v in w2.items()} == {k: v.shape for k, v in w1.items()}  # full, not a shard
    assert max_abs_diff(w1, w2) < 2e-4
    assert max(float(w.abs().max()) for k, w in w2.items() if "lora_B" in k) > 1e-3  # B moved off zero

    # the ZeRO-3 checkpoint holds full (unsharded) optimizer moments too
    state = ckpt.optimizer_moments(ckpt.read_tensors(ckpt.latest_checkpoint(two_cfg.stage_dir("train")) /
                                                     ckpt.OPTIMIZER_NAME))
    assert {k: m["exp_avg"].shape for k, m in state.items()} == {k: v.shape for k, v in w1.items()}
