"""The train stage: CGC-LoRA fine-tuning of a causal LM, data-parallel under DeepSpeed.

:func:`train` (what the CLI and the Prefect task call) starts ``train.nproc`` worker processes
per node through :mod:`hammer_core.train.distributed` (also for one process) and returns the summary;
each worker runs :func:`run_worker`. Reads ``train_tokens.parquet`` rows ``{id, task,
input_ids, n_prompt}`` from the prepare stage and injects CGC-LoRA with one task per task
cluster found in the data.

**Exact data parallelism.** Every optimizer step consumes ``grad_accum`` global
micro-batches of ``G = processes * batch_size`` rows from one seeded stream
(:mod:`hammer_core.train.sampling`); rank ``r`` trains on its slice of each. The loss is the sum of
next-token cross-entropies over the answer tokens of the *global* batch divided by their
*global* count; every rank knows that count (it holds all rows' lengths), so each rank
backpropagates ``sum(its token losses) / global_count * processes`` and DeepSpeed's gradient
average gives exactly the gradient of the global loss: 2 processes with batch ``b`` train like
1 process with batch ``2b``. DeepSpeed clips the averaged gradient; AdamW with warmup and a
cosine / linear / constant schedule.

**Checkpoints and resume.** Every ``checkpoint_every`` steps and at the end, a checkpoint
(:mod:`hammer_core.train.checkpoint`: adapter, gate, AdamW state, scheduler, RNG states of every
process, data position, metrics so far) is written atomically; the newest
``keep_checkpoints`` stay. Started again with the same command (same config, same data), the
training continues from the newest checkpoint and ends with the weights an uninterrupted run
would have had. A checkpoint of another config or another data set is removed, with a warning.

**Tracking.** Rank 0 logs to one MLflow run (:mod:`hammer_core.train.tracking`) and shows a progress
bar with ETA.

Output folder (written by rank 0, each file atomically):

* ``adapter/`` -- the full CGC-LoRA weights (safetensors, gathered under ZeRO-3) and config;
* ``base_model/`` + ``tokenizer/`` -- for the tiny preset, the exact random-init base (so the
  adapters can be applied to it anywhere); for a hub model only a reference is kept;
* ``metrics.jsonl`` -- one line per logged step; ``loss.png`` -- the curve;
* ``checkpoints/``, ``logs/`` (the launch command, the workers' console), ``mlflow_run.json``;
* ``train_summary.json`` -- written last.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from hammer_core.train import checkpoint as ckpt
from hammer_core.artifacts import Artifact, atomic_write_json, atomic_write_text, open_artifact
from hammer_core.model.cgc_lora import CGCLoraConfig, CGCLoraModel, save_cgc_lora
from hammer_core.model.cgc_lora.export import CGC_WEIGHTS_NAME
from hammer_core.config import ConfigError, PipelineConfig, config_from_dict
from hammer_core.train.sampling import BatchStream, Position, SamplingSpec, rank_slice

IGNORE_INDEX = -100

log = logging.getLogger("hammer.train")


@dataclass
class TrainResult:
    out_dir: Path
    summary: dict[str, Any]


def train(cfg: PipelineConfig, train_tokens: Artifact, out_dir: str | Path, progress: bool = True) -> TrainResult:
    """Train in ``cfg.train.nproc`` worker processes (per node); returns the summary."""
    from hammer_core.train.distributed import launch

    if pq.read_metadata(train_tokens.path).num_rows == 0:
        raise ConfigError(f"{train_tokens.path} has no rows to train on: prepare kept no training row "
                          "(see the reasons in its summary.json and in the ingest stage's rejects)")
    return TrainResult(Path(out_dir), launch(cfg, train_tokens, Path(out_dir), progress=progress))


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------------- data
@dataclass
class TokenRows:
    """Tokenized rows held as one flat token array plus offsets (cheap to slice, any size)."""

    tasks: list[str]  # sorted task names; a task's id is its index
    task_ids: np.ndarray
    n_prompt: np.ndarray
    offsets: np.ndarray
    values: np.ndarray

    @classmethod
    def read(cls, path: Path) -> "TokenRows":
        table = pq.read_table(path, columns=["task", "input_ids", "n_prompt"])
        names = table.column("task").to_pylist()
        tasks = sorted(set(names))
        index = {t: i for i, t in enumerate(tasks)}
        ids = table.column("input_ids").combine_chunks()
        return cls(tasks=tasks, task_ids=np.asarray([index[t] for t in names], dtype=np.int64),
                   n_prompt=table.column("n_prompt").to_numpy().astype(np.int64),
                   offsets=ids.offsets.to_numpy().astype(np.int64), values=ids.values.to_numpy())

    def __len__(self) -> int:
        return len(self.task_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def row_tasks(self) -> list[str]:
        return [self.tasks[i] for i in self.task_ids]

    def answer_tokens(self, indices: list[int]) -> int:
        """Positions whose next token is an answer token (the loss is summed over these)."""
        idx = np.asarray(indices, dtype=np.int64)
        return int(np.maximum(self.lengths[idx] - np.maximum(self.n_prompt[idx], 1), 0).sum())


def collate(data: TokenRows, indices: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a micro-batch; labels are -100 on the prompt and on padding."""
    width = max(int(data.lengths[i]) for i in indices)
    ids = torch.full((len(indices), width), pad_id, dtype=torch.long)
    labels = torch.full((len(indices), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(indices), width), dtype=torch.long)
    for k, i in enumerate(indices):
        seq = torch.from_numpy(data.values[data.offsets[i]: data.offsets[i + 1]].astype(np.int64))
        n, p = len(seq), int(data.n_prompt[i])
        ids[k, :n] = seq
        mask[k, :n] = 1
        labels[k, p:n] = seq[p:]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels,
            "task_ids": torch.from_numpy(data.task_ids[indices])}


def token_loss_sums(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row sums of next-token cross-entropy over answer tokens, and per-row token counts."""
    shift_labels = labels[:, 1:]
    ce = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), shift_labels.reshape(-1),
                         ignore_index=IGNORE_INDEX, reduction="none").view(shift_labels.shape)
    mask = shift_labels != IGNORE_INDEX
    return (ce * mask).sum(dim=1), mask.sum(dim=1)


def answer_loss_sums(model: Any, batch: dict[str, torch.Tensor], min_prompt: int,
                     device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`token_loss_sums` of a collated batch, with logits computed only from the batch's
    first answer position on (``min_prompt``: its shortest prompt): the LM head over the prompts,
    most of each row, would cost time and vocab-sized memory for nothing."""
    keep = batch["input_ids"].shape[1] - min_prompt + 1
    out = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                task_ids=batch["task_ids"].to(device), logits_to_keep=keep)
    return token_loss_sums(out.logits, batch["labels"][:, -keep:].to(device))


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
    """The CGC-LoRA config of ``cfg.adapter`` -- or, per ``adapter.variant``, one of the ablation
    baselines (one LoRA for all tasks / one LoRA per task) built from the same numbers."""
    a = cfg.adapter
    return CGCLoraConfig.for_variant(a.variant, tasks=tasks, n_common=a.n_common, n_specific=a.n_specific,
                                     r_expert=a.r_expert, alpha=a.alpha, dropout=a.dropout,
                                     target_modules=a.target_modules, gate_dim=a.gate_dim,
                                     shared_gate=a.shared_gate)


# Train settings that do not change what is computed: a checkpoint stays valid across them.
BOOKKEEPING = {"log_every", "checkpoint_every", "keep_checkpoints", "resume", "track", "launcher",
               "rdzv_endpoint", "hostfile"}


def resume_key(cfg: PipelineConfig, train_tokens: Artifact) -> str:
    """What a checkpoint must match to be continued: the data and every setting that shapes
    the computation (model, adapter, seed, train settings but the :data:`BOOKKEEPING` ones)."""
    relevant = {"seed": cfg.seed, "model": cfg.model.model_dump(mode="json"),
                "adapter": cfg.adapter.model_dump(mode="json"),
                "train": cfg.train.model_dump(mode="json", exclude=BOOKKEEPING),
                "data": train_tokens.content_hash}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:20]


def trainable_by_key(model: CGCLoraModel) -> dict[str, torch.nn.Parameter]:
    """The adapter's trainable parameters under their adapter-state-dict keys (gates included;
    a one-expert gate, as in the multitask_lora baseline, is constant and frozen)."""
    params = {n.removeprefix("base_model."): p for n, p in model.named_parameters() if p.requires_grad}
    expected = {k for k, p in model._adapter_parameters().items() if p.requires_grad}
    if set(params) != expected:
        raise RuntimeError(f"trainable parameters do not match the adapter state: "
                           f"{sorted(set(params) ^ expected)[:5]}")
    return params


def total_grad_norm(params: Any) -> float:
    """The 2-norm of all (already averaged) gradients."""
    norms = [p.grad.detach().float().norm() for p in params if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


class GatheredAdapter:
    """What :func:`save_cgc_lora` reads from a model -- config and state -- from gathered tensors."""

    def __init__(self, config: CGCLoraConfig, state: dict[str, torch.Tensor]) -> None:
        self.config, self._state = config, state

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        return self._state


def _save_base_model(base: torch.nn.Module, dest: Path) -> None:
    """``save_pretrained`` into a temp folder, then swap it in (rank 0)."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    base.save_pretrained(tmp, safe_serialization=True)
    old = dest.with_name(f".{dest.name}.old")
    if dest.exists():
        dest.replace(old)
    tmp.replace(dest)
    shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- the worker
class Run:
    """One worker's share of a training run (all ranks run the same code, rank 0 writes)."""

    def __init__(self, cfg: PipelineConfig, tokens: Artifact, out: Path, progress: bool, rank: int, world: int) -> None:
        self.cfg, self.train_cfg, self.tokens, self.out = cfg, cfg.train, tokens, out
        self.progress, self.rank, self.world = progress, rank, world
        self.data = TokenRows.read(tokens.path)
        self.key = resume_key(cfg, tokens)
        self.history: list[dict[str, Any]] = []
        self.tokens_seen, self.seconds_before, self.start_step = 0, 0.0, 0
        self.resumed_from: int | None = None

    # -- helpers ---------------------------------------------------------------------------
    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    def _checkpoint_to_resume(self) -> Path | None:
        """The newest checkpoint of this very training, after clearing others (all ranks)."""
        latest = ckpt.latest_checkpoint(self.out)
        usable = None
        if latest is not None and self.train_cfg.resume:
            state = ckpt.read_state(latest)
            if state.get("resume_key") == self.key:
                usable = latest
            elif self.is_main:
                log.warning("checkpoints in %s belong to another config or data set; starting afresh",
                            ckpt.checkpoints_root(self.out))
        self.barrier()
        if self.is_main:
            ckpt.sweep_partial(self.out)
            if latest is not None and usable is None:
                ckpt.remove_all(self.out)
        self.barrier()
        return usable

    # -- set-up ----------------------------------------------------------------------------
    def load_base(self) -> tuple[Any, torch.nn.Module]:
        """The tokenizer and the base model (``benchmarks/bench_train.py`` supplies its own)."""
        from hammer_core.model.base import load_base_model
        from hammer_core.model.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(self.cfg.model)
        return tokenizer, load_base_model(self.cfg.model, tokenizer, seed=self.cfg.seed)

    def build(self) -> None:
        import deepspeed
        from transformers import get_scheduler

        from hammer_core.model.cgc_lora import inject_cgc_lora
        from hammer_core.train.distributed import deepspeed_config, make_optimizer, resolve_precision
        from hammer_core.model.base import is_tiny

        cfg, t = self.cfg, self.train_cfg
        self.resume_dir = self._checkpoint_to_resume()
        set_seed(cfg.seed)
        self.tokenizer, base = self.load_base()
        if is_tiny(cfg.model):  # keep the exact random-init base: the adapters only make sense on it
            if self.is_main:
                _save_base_model(base, self.out / "base_model")
            self.base_ref = str((self.out / "base_model").resolve())
        else:
            self.base_ref = cfg.model.name_or_path
        self.precision = resolve_precision(t)
        if self.precision == "bf16":  # the frozen base computes in bf16; the adapter stays fp32
            base.to(torch.bfloat16)
        self.model = inject_cgc_lora(base, adapter_config(cfg, self.data.tasks))
        self.params = trainable_by_key(self.model)
        self.n_trainable = sum(p.numel() for p in self.params.values())
        self.n_total = sum(p.numel() for p in self.model.parameters())
        if self.resume_dir is not None:  # weights first: DeepSpeed copies them into its fp32 partitions
            self.model.load_adapter_state_dict(ckpt.read_tensors(self.resume_dir / ckpt.ADAPTER_DIR /
                                                                 CGC_WEIGHTS_NAME))
        if t.gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        self.model.train()

        self.optimizer = make_optimizer(list(self.params.values()), t)
        self.scheduler = get_scheduler(t.scheduler, self.optimizer, num_warmup_steps=t.warmup_steps,
                                       num_training_steps=t.max_steps)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.engine, _, _, _ = deepspeed.initialize(model=self.model, optimizer=self.optimizer,
                                                        config=deepspeed_config(t, self.world))
        self.device = self.engine.device
        spec = SamplingSpec(global_batch=t.batch_size * self.world, seed=cfg.seed, temperature=t.task_temperature,
                            group_by_length=t.group_by_length, window=t.length_window)
        self.stream = BatchStream(self.data.row_tasks(), self.data.lengths.tolist(), spec)
        if self.resume_dir is not None:
            self._restore(self.resume_dir)

    def _restore(self, d: Path) -> None:
        from hammer_core.train.distributed import set_moments

        state = ckpt.read_state(d)
        set_moments(self.engine, self.params, ckpt.optimizer_moments(ckpt.read_tensors(d / ckpt.OPTIMIZER_NAME)),
                    state["adam_step"])
        sched_state = dict(state["scheduler"], lr_lambdas=[None] * len(self.scheduler.lr_lambdas))
        self.scheduler.load_state_dict(sched_state)
        for group, lr in zip(self.optimizer.param_groups, self.scheduler.get_last_lr()):
            group["lr"] = lr
        self.stream.position = Position(**state["data_position"])
        self.history = state["history"]
        self.tokens_seen, self.seconds_before = state["tokens_seen"], state["seconds"]
        self.start_step = self.resumed_from = state["step"]
        rng = ckpt.read_rng(d, self.rank)
        if rng is not None:
            ckpt.restore_rng(rng)
        else:  # not written by this layout of processes: reseed, reproducibly
            log.warning("checkpoint %s has no RNG state for rank %d; reseeding", d, self.rank)
            set_seed(self.cfg.seed + 1_000_003 * state["step"] + self.rank)

    # -- one optimizer step ----------------------------------------------------------------
    def step(self) -> dict[str, Any]:
        import torch.distributed as dist

        t, n_tasks = self.train_cfg, len(self.data.tasks)
        micro = [self.stream.next() for _ in range(t.grad_accum)]
        global_tokens = max(self.data.answer_tokens([i for b in micro for i in b]), 1)
        # per task: [loss sum, answer tokens]; then [input tokens of this rank]
        stats = torch.zeros(2 * n_tasks + 1, dtype=torch.float64, device=self.device)  # NCCL reduces on the GPU
        grad_norm = None
        for k_micro, batch_rows in enumerate(micro):
            mine = rank_slice(batch_rows, self.rank, self.world)
            batch = collate(self.data, mine, self.tokenizer.pad_token_id)
            row_loss, row_tokens = answer_loss_sums(self.engine, batch, int(self.data.n_prompt[mine].min()),
                                                    self.device)
            self.engine.backward(row_loss.sum() * (self.world / global_tokens), scale_wrt_gas=False)
            if k_micro == len(micro) - 1 and t.deepspeed.zero_stage == 0:
                # DeepSpeed keeps no norm for plain fp32 data parallelism: the averaged gradients are here
                grad_norm = total_grad_norm(self.params.values())
            self.engine.step()
            task_ids = batch["task_ids"].to(self.device)
            stats[:n_tasks].index_add_(0, task_ids, row_loss.detach().double())
            stats[n_tasks: 2 * n_tasks].index_add_(0, task_ids, row_tokens.double())
            stats[-1] += float(batch["attention_mask"].sum())
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        dist.all_reduce(stats)
        stats = stats.cpu()
        loss = float(stats[:n_tasks].sum() / global_tokens)
        if grad_norm is None:
            grad_norm = self.engine.get_global_grad_norm()
        rec: dict[str, Any] = {"loss": loss, "lr": lr,
                               "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
                               "tokens": int(stats[-1])}
        for k, name in enumerate(self.data.tasks):
            if stats[n_tasks + k] > 0:
                rec[f"loss/{name}"] = float(stats[k] / stats[n_tasks + k])
        return rec

    # -- checkpoints -----------------------------------------------------------------------
    def gather_adapter(self) -> dict[str, torch.Tensor]:
        from hammer_core.train.distributed import full_fp32

        return {k: full_fp32(p) for k, p in self.params.items()}  # collective: every rank

    def save_checkpoint(self, step: int, seconds: float) -> Path | None:
        from hammer_core.train.distributed import adam_step, get_moments

        adapter = self.gather_adapter()
        moments = get_moments(self.engine, self.params)
        if self.is_main:
            ckpt.begin(self.out, step)
        self.barrier()
        staging = ckpt.staging_dir(self.out, step)
        ckpt.write_rng(staging, self.rank)
        final = None
        if self.is_main:
            save_cgc_lora(GatheredAdapter(self.model.config, adapter), staging / ckpt.ADAPTER_DIR)
            ckpt.write_tensors(staging / ckpt.OPTIMIZER_NAME, ckpt.optimizer_tensors(moments))
        self.barrier()  # every rank's RNG file is in place
        if self.is_main:
            ckpt.write_state(staging, {
                "step": step, "adam_step": adam_step(self.engine), "resume_key": self.key,
                "world_size": self.world, "scheduler": ckpt.jsonable_scheduler_state(self.scheduler.state_dict()),
                "data_position": self.stream.position.to_dict(), "history": self.history,
                "tokens_seen": self.tokens_seen, "seconds": seconds,
            })
            final = ckpt.commit(self.out, step, self.train_cfg.keep_checkpoints)
        self.barrier()
        return final

    # -- the loop --------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        from tqdm.auto import tqdm

        from hammer_core.train.tracking import Tracker, config_params

        t = self.train_cfg
        tracker = Tracker.disabled()
        if self.is_main and t.track:
            tracker = Tracker.open(self.cfg, self.out, resuming=self.resumed_from is not None)
            tracker.log_params({**config_params(self.cfg), "run.world_size": self.world,
                                "run.precision": self.precision, "run.global_batch": t.batch_size * self.world
                                * t.grad_accum, "run.trainable_params": self.n_trainable})
            tracker.log_inputs(self.tokens)
        try:
            summary = self._loop(tracker, tqdm)
        except BaseException:
            tracker.close("FAILED")
            raise
        tracker.close()
        return summary

    def _loop(self, tracker: Any, tqdm: Any) -> dict[str, Any]:
        t = self.train_cfg
        started = time.perf_counter()
        bar = tqdm(total=t.max_steps, initial=self.start_step, desc="train", unit="step", dynamic_ncols=True,
                   disable=not (self.progress and self.is_main))
        last = window_start = time.perf_counter()
        window_tokens = 0
        for step in range(self.start_step + 1, t.max_steps + 1):
            rec = self.step()
            if not math.isfinite(rec["loss"]):
                raise FloatingPointError(f"loss became {rec['loss']} at step {step}; lower train.lr")
            now = time.perf_counter()
            step_tokens = rec.pop("tokens")
            self.tokens_seen += step_tokens
            window_tokens += step_tokens
            tracker.log_metrics({f"train/{k}": v for k, v in rec.items()}
                                | {"train/tokens_per_s": step_tokens / max(now - last, 1e-9)}, step=step)
            bar.update(1)
            bar.set_postfix(loss=f"{rec['loss']:.3f}")
            if step % t.log_every == 0 or step == 1 or step == t.max_steps:
                self.history.append({"step": step, **{k: round(v, 6) for k, v in rec.items()},
                                     "tokens_per_s": round(window_tokens / max(now - window_start, 1e-9), 1)})
                window_tokens, window_start = 0, now
            if step == t.max_steps or (t.checkpoint_every and step % t.checkpoint_every == 0):
                paused = time.perf_counter()
                final = self.save_checkpoint(step, self.seconds_before + paused - started)
                if final is not None:
                    tracker.log_artifacts(final, f"train/checkpoints/{final.name}")
                window_start += time.perf_counter() - paused  # checkpointing is not throughput
            last = time.perf_counter()
        bar.close()
        seconds = self.seconds_before + time.perf_counter() - started
        return self.finish(tracker, seconds)

    def finish(self, tracker: Any, seconds: float) -> dict[str, Any]:
        adapter = self.gather_adapter()
        if not self.is_main:
            self.barrier()
            return {}
        out, t = self.out, self.train_cfg
        save_cgc_lora(GatheredAdapter(self.model.config, adapter), out / "adapter")
        self.tokenizer.save_pretrained(out / "tokenizer")
        atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in self.history))
        plot_loss(self.history, out / "loss.png")
        summary = {
            "steps": t.max_steps, "tasks": self.data.tasks, "base_model": self.base_ref,
            "first_loss": self.history[0]["loss"], "last_loss": self.history[-1]["loss"],
            "min_loss": min(h["loss"] for h in self.history),
            "trainable_params": self.n_trainable, "total_params": self.n_total,
            "tokens": self.tokens_seen, "seconds": round(seconds, 2),
            "tokens_per_s": round(self.tokens_seen / max(seconds, 1e-9), 1),
            "tokens_per_s_per_process": round(self.tokens_seen / max(seconds, 1e-9) / self.world, 1),
            "train_tokens_hash": self.tokens.content_hash,
            "prompt_format": self.tokens.manifest.get("extra", {}).get("prompt_format", "hammer"),
            "world_size": self.world, "launcher": t.launcher, "zero_stage": t.deepspeed.zero_stage,
            "precision": self.precision, "global_batch": t.batch_size * t.grad_accum * self.world,
            "resumed_from_step": self.resumed_from, "mlflow_run_id": tracker.run_id,
        }
        tracker.log_artifacts(out / "adapter", "train/adapter")
        for name in ("metrics.jsonl", "loss.png"):
            tracker.log_artifact(out / name, "train")
        atomic_write_json(out / "train_summary.json", summary)
        tracker.log_artifact(out / "train_summary.json", "train")
        self.barrier()
        return summary


def run_worker(job: dict[str, Any], rank: int, world: int) -> dict[str, Any]:
    """The body of one worker process (see :mod:`hammer_core.train.worker`)."""
    cfg = config_from_dict(job["config"], origin="(train job)")
    run = Run(cfg, open_artifact(job["train_tokens"]), Path(job["out_dir"]), bool(job.get("progress", True)),
              rank, world)
    run.build()
    return run.fit()
