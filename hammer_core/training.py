"""The train stage: CGC-LoRA fine-tuning of a causal LM on tokenized examples.

Reads ``train_tokens.parquet`` (from the prepare stage), injects CGC-LoRA with one task per
task cluster found in the data, and trains with AdamW, warmup and a cosine (or linear /
constant) schedule, gradient accumulation and clipping. Mixed-task micro-batches are the
norm: every row carries its task id to the gate.

Output folder:

* ``adapter/`` -- CGC-LoRA weights (safetensors) and config (JSON);
* ``base_model/`` + ``tokenizer/`` -- for the tiny preset, the exact random-init base (so the
  adapters can be applied to it anywhere); for a hub model only a reference is kept;
* ``metrics.jsonl`` -- one line per logged step; ``loss.png`` -- the curve;
* ``train_summary.json``.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm
from transformers import get_scheduler

from hammer_core.artifacts import Artifact, atomic_write_json, atomic_write_text
from hammer_core.cgc_lora import CGCLoraConfig, inject_cgc_lora, save_cgc_lora
from hammer_core.config import PipelineConfig
from hammer_core.modeling import is_tiny, load_base_model, load_tokenizer

IGNORE_INDEX = -100


@dataclass
class TrainResult:
    out_dir: Path
    summary: dict[str, Any]


def set_seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def collate(rows: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a micro-batch; labels are -100 on the prompt and on padding."""
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        seq = torch.tensor(r["input_ids"], dtype=torch.long)
        ids[i, : len(seq)] = seq
        mask[i, : len(seq)] = 1
        labels[i, r["n_prompt"]: len(seq)] = seq[r["n_prompt"]:]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels,
            "task_ids": torch.tensor([r["task_id"] for r in rows], dtype=torch.long)}


def batches(rows: list[dict[str, Any]], batch_size: int, seed: int):
    """Endless seeded shuffled micro-batches (a new permutation each epoch)."""
    gen = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(rows), generator=gen).tolist()
        for i in range(0, len(order) - batch_size + 1, batch_size):
            yield [rows[j] for j in order[i: i + batch_size]]
        if len(order) < batch_size:
            yield [rows[j] for j in order]


def plot_loss(history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot([h["step"] for h in history], [h["loss"] for h in history], marker=".")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("train loss (answer tokens)")
    ax.set_title("CGC-LoRA training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def adapter_config(cfg: PipelineConfig, tasks: list[str]) -> CGCLoraConfig:
    a = cfg.adapter
    return CGCLoraConfig(tasks=tasks, n_common=a.n_common, n_specific=a.n_specific, r_expert=a.r_expert,
                         alpha=a.alpha, dropout=a.dropout, target_modules=a.target_modules,
                         gate_dim=a.gate_dim, shared_gate=a.shared_gate)


def train(cfg: PipelineConfig, train_tokens: Artifact, out_dir: str | Path,
          on_log: Callable[[dict[str, Any]], None] | None = None, progress: bool = True) -> TrainResult:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t = cfg.train
    set_seed(cfg.seed)

    rows = pq.read_table(train_tokens.path).to_pylist()
    if not rows:
        raise ValueError(f"{train_tokens.path} has no rows to train on")
    tasks = sorted({r["task"] for r in rows})
    task_index = {name: i for i, name in enumerate(tasks)}
    for r in rows:
        r["task_id"] = task_index[r["task"]]

    tokenizer = load_tokenizer(cfg.model)
    base = load_base_model(cfg.model, tokenizer, seed=cfg.seed)
    if is_tiny(cfg.model):  # keep the exact random-init base: the adapters only make sense on it
        base.save_pretrained(out / "base_model", safe_serialization=True)
        base_ref = str((out / "base_model").resolve())
    else:
        base_ref = cfg.model.name_or_path
    model = inject_cgc_lora(base, adapter_config(cfg, tasks))
    if t.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.train()

    params = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in params)
    n_total = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    sched = get_scheduler(t.scheduler, opt, num_warmup_steps=t.warmup_steps, num_training_steps=t.max_steps)

    stream = batches(rows, t.batch_size, cfg.seed)
    history: list[dict[str, Any]] = []
    tokens_seen = 0
    start = time.perf_counter()
    bar = tqdm(range(1, t.max_steps + 1), desc="train", unit="step", disable=not progress)
    window_tokens, window_start = 0, time.perf_counter()
    for step in bar:
        loss_sum = 0.0
        for _ in range(t.grad_accum):
            batch = collate(next(stream), tokenizer.pad_token_id)
            out_ = model(**batch)
            (out_.loss / t.grad_accum).backward()
            loss_sum += out_.loss.item() / t.grad_accum
            n_tok = int(batch["attention_mask"].sum())
            tokens_seen += n_tok
            window_tokens += n_tok
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm))
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if not math.isfinite(loss_sum):
            raise FloatingPointError(f"loss became {loss_sum} at step {step}; lower train.lr")
        bar.set_postfix(loss=f"{loss_sum:.3f}")
        if step % t.log_every == 0 or step == 1 or step == t.max_steps:
            now = time.perf_counter()
            rec = {"step": step, "loss": round(loss_sum, 6), "lr": sched.get_last_lr()[0],
                   "grad_norm": round(grad_norm, 6),
                   "tokens_per_s": round(window_tokens / max(now - window_start, 1e-9), 1)}
            window_tokens, window_start = 0, now
            history.append(rec)
            if on_log:
                on_log(rec)
    seconds = time.perf_counter() - start

    model.eval()
    save_cgc_lora(model, out / "adapter")
    tokenizer.save_pretrained(out / "tokenizer")
    atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
    plot_loss(history, out / "loss.png")

    summary = {
        "steps": t.max_steps, "tasks": tasks, "base_model": base_ref,
        "first_loss": history[0]["loss"], "last_loss": history[-1]["loss"],
        "min_loss": min(h["loss"] for h in history),
        "trainable_params": n_trainable, "total_params": n_total,
        "tokens": tokens_seen, "seconds": round(seconds, 2),
        "tokens_per_s": round(tokens_seen / max(seconds, 1e-9), 1),
        "train_tokens_hash": train_tokens.content_hash,
    }
    atomic_write_json(out / "train_summary.json", summary)
    return TrainResult(out, summary)
