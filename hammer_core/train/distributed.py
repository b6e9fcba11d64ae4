"""Running training in worker processes: the launcher, the process group, DeepSpeed glue.

**One code path for 1 and N processes.** :func:`launch` always starts the training in child
processes, ``torchrun`` (default) or the ``deepspeed`` launcher running
``python -m hammer_core.train.worker --job <job.json>``, also for a single process. The caller
(the CLI, a Prefect task, a test) therefore never holds a process group or a GPU context of
its own; it waits, streams the workers' console (the progress bar of rank 0) through, keeps
the whole output in ``<train dir>/logs/launch.log`` and, when a worker fails, raises
:class:`TrainingError` with the last lines of that output. On success it returns the summary
rank 0 wrote.

**Backends.** On a CPU-only machine the workers use the gloo backend, fp32 and one
``OMP_NUM_THREADS = cores // processes`` share of the cores; on GPUs NCCL, one GPU per process
and bf16 (``train.precision: auto``): the frozen base computes in bf16, the CGC-LoRA
parameters and their optimizer state stay fp32 (see :func:`deepspeed_config`).

**DeepSpeed.** :func:`deepspeed_config` maps ``train.deepspeed`` (ZeRO stage 0-3, optimizer and
parameter offload) and the batch settings onto a DeepSpeed config; DeepSpeed averages the
gradients over the processes and clips the averaged gradient (``gradient_clipping``). The
optimizer is always AdamW (``torch.optim.AdamW``; DeepSpeed's CPU Adam when the optimizer is
offloaded on a GPU machine), so :func:`get_moments` / :func:`set_moments` can read and write
its state per parameter, gathered across ZeRO partitions (DeepSpeed's tensor-fragment API),
and checkpoints stay framework-free (see :mod:`hammer_core.train.checkpoint`).

**Several nodes.** ``train.nnodes > 1``: run the same command on every node; torchrun meets at
``train.rdzv_endpoint``, the deepspeed launcher reads ``train.hostfile``. Rank 0 writes the
outputs, so the train folder must be on a file system every node shares.
"""

from __future__ import annotations

import collections
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from hammer_core.artifacts import Artifact, atomic_write_json
from hammer_core.config import PipelineConfig, TrainConfig

WORKER_MODULE = "hammer_core.train.worker"
JOB_NAME = "job.json"
LAUNCH_LOG = "launch.log"
TAIL_LINES = 25
_PACKAGE_ROOT = Path(__file__).resolve().parents[1]


class TrainingError(RuntimeError):
    """The training workers failed; the message holds their last console lines."""


# ------------------------------------------------------------------------------ launching
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher_command(t: TrainConfig, job_path: Path, run_id: str = "hammer") -> list[str]:
    """The command line that starts ``t.nproc`` workers per node for ``job_path``.

    ``run_id`` names the multi-node rendezvous (the same on every node).
    """
    worker = ["--job", str(job_path)]
    if t.launcher == "deepspeed":
        cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(t.nproc), "--no_local_rank",
               "--master_port", str(_free_port())]
        if t.nnodes > 1:
            cmd += ["--num_nodes", str(t.nnodes), "--hostfile", str(t.hostfile)]
        return cmd + ["--module", WORKER_MODULE, *worker]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(t.nproc)]
    if t.nnodes > 1:
        cmd += ["--nnodes", str(t.nnodes), "--rdzv-backend", "c10d", "--rdzv-endpoint", str(t.rdzv_endpoint),
                "--rdzv-id", run_id]
    else:
        cmd += ["--standalone"]
    return cmd + ["-m", WORKER_MODULE, *worker]


def worker_env(t: TrainConfig) -> dict[str, str]:
    """The workers' environment: importable package, quiet tokenizers, a fair share of threads."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // t.nproc)))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _pump(src: IO[bytes], echo: IO[str] | None, log_path: Path, tail: collections.deque[bytes]) -> None:
    """Copy the workers' output to the console (if ``echo``) and the log; keep the tail."""
    with open(log_path, "ab") as log:
        for chunk in iter(lambda: src.read1(65536), b""):  # type: ignore[attr-defined]
            log.write(chunk)
            log.flush()
            tail.append(chunk)
            if echo is not None:
                echo.write(chunk.decode("utf-8", errors="replace"))
                echo.flush()


def error_path(out_dir: Path, rank: int) -> Path:
    """Where worker ``rank`` records the exception that stopped it."""
    return Path(out_dir) / "logs" / f"error-rank-{rank:05d}.json"


def _worker_errors(out_dir: Path) -> list[str]:
    errors = []
    for path in sorted((Path(out_dir) / "logs").glob("error-rank-*.json")):
        try:
            e = json.loads(path.read_text())
            errors.append(f"rank {e['rank']}: {e['type']}: {e['message']}")
        except (OSError, ValueError, KeyError):
            continue
    return errors


def _last_lines(chunks: collections.deque[bytes], n: int = TAIL_LINES) -> str:
    text = b"".join(chunks).decode("utf-8", errors="replace").replace("\r", "\n")
    return "\n".join([line for line in text.splitlines() if line.strip()][-n:])


def launch(cfg: PipelineConfig, train_tokens: Artifact, out_dir: Path, *, progress: bool = True) -> dict[str, Any]:
    """Train in ``cfg.train.nproc`` worker processes per node; returns ``train_summary.json``."""
    out = Path(out_dir).resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    job_path = out / "logs" / JOB_NAME
    atomic_write_json(job_path, {"config": cfg.model_dump(mode="json"), "out_dir": str(out), "progress": progress,
                                 "train_tokens": str(train_tokens.path.resolve())})
    summary_path = out / "train_summary.json"
    summary_path.unlink(missing_ok=True)  # a stale summary must not pass for this run's
    for stale in (out / "logs").glob("error-rank-*.json"):
        stale.unlink()
    cmd = launcher_command(cfg.train, job_path, run_id=f"hammer-{cfg.fingerprint()}")
    log_path = out / "logs" / LAUNCH_LOG
    with open(log_path, "a", encoding="utf-8") as f:  # one log for all attempts (a resumed run appends)
        f.write(f"\n[{time.strftime('%Y-%m-%d %H:%M:%S')}] $ {' '.join(cmd)}\n")
    tail: collections.deque[bytes] = collections.deque(maxlen=256)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=worker_env(cfg.train),
                            cwd=os.getcwd())
    pump = threading.Thread(target=_pump, args=(proc.stdout, sys.stderr if progress else None, log_path, tail),
                            daemon=True)
    pump.start()
    try:
        rc = proc.wait()
    finally:
        if proc.poll() is None:  # interrupted: take the workers down with us
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        pump.join(timeout=10)
    if rc != 0:
        errors = "\n".join(_worker_errors(out)) or "(no worker recorded an error; see the log)"
        raise TrainingError(f"training failed ({cfg.train.launcher} exited with {rc}):\n{errors}\n"
                            f"full log: {log_path}; its last lines:\n{_last_lines(tail)}")
    if not summary_path.exists():
        raise TrainingError(f"training exited cleanly but wrote no {summary_path}; last lines:\n{_last_lines(tail)}")
    return json.loads(summary_path.read_text())


# ------------------------------------------------------------------------- in the worker
def use_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_precision(t: TrainConfig) -> str:
    if t.precision == "auto":
        return "bf16" if use_cuda() else "fp32"
    return t.precision


def init_process_group() -> tuple[int, int]:
    """Join the launcher's process group (NCCL on GPUs, gloo on CPU); returns (rank, world)."""
    import deepspeed
    import torch

    if use_cuda():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "nccl"
    else:
        # DeepSpeed compiles a shared-memory all-reduce kernel for CPU inference the first time
        # its communication backend starts (minutes on a small machine); training never uses
        # it, so report no compiled ops as compatible on CPU.
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__ = {}
        backend = "gloo"
    deepspeed.init_distributed(dist_backend=backend)
    import torch.distributed as dist

    return dist.get_rank(), dist.get_world_size()


def deepspeed_config(t: TrainConfig, world_size: int) -> dict[str, Any]:
    """The DeepSpeed config for ``t`` on ``world_size`` processes.

    DeepSpeed's own bf16 mode stays off: with bf16 the *frozen base* is cast to bf16 before
    DeepSpeed sees the model, while the CGC-LoRA parameters -- all DeepSpeed optimizes -- stay
    fp32 (the adapter layers cast their input up and their output back). So there are no
    low-precision copies of trainable weights, and optimizer state and checkpoints are exact.
    """
    z = t.deepspeed
    zero: dict[str, Any] = {"stage": z.zero_stage}
    if z.offload_optimizer != "none":
        zero["offload_optimizer"] = {"device": z.offload_optimizer, "pin_memory": use_cuda()}
    if z.offload_param != "none":
        zero["offload_param"] = {"device": z.offload_param, "pin_memory": use_cuda()}
    if z.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = False  # we gather fp32 ourselves
    return {
        "train_micro_batch_size_per_gpu": t.batch_size,
        "gradient_accumulation_steps": t.grad_accum,
        "train_batch_size": t.batch_size * t.grad_accum * world_size,
        "gradient_clipping": t.max_grad_norm,
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


def make_optimizer(params: list[Any], t: TrainConfig) -> Any:
    """AdamW; DeepSpeed's CPU Adam when ZeRO offloads the optimizer next to a GPU."""
    import torch

    if t.deepspeed.offload_optimizer != "none" and use_cuda():
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(params, lr=t.lr, weight_decay=t.weight_decay, adamw_mode=True)
    return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)


MOMENTS = ("exp_avg", "exp_avg_sq")


def _base_optimizer(engine: Any) -> Any:
    """The torch optimizer under DeepSpeed's wrappers (ZeRO / bf16 hold it as ``.optimizer``)."""
    opt = engine.optimizer
    return getattr(opt, "optimizer", opt)


def _updated_tensors(engine: Any) -> list[Any]:
    """The tensors AdamW updates, which key its state: ZeRO-3's flat fp32 partitions (it hands
    them to AdamW only while stepping), else whatever the optimizer's param groups hold."""
    z3 = getattr(engine.optimizer, "fp32_partitioned_groups_flat", None)
    if z3 is not None:
        return list(z3)
    return [p for group in _base_optimizer(engine).param_groups for p in group["params"]]


def _sharded(param: Any) -> bool:
    """Under ZeRO (or bf16) the fp32 copy lives in the optimizer's partitions. The attribute is
    on every rank, ``None`` where the rank holds no slice of the parameter; the gather is
    collective all the same."""
    return hasattr(param, "ds_id") or hasattr(param, "_hp_mapping")


def full_fp32(param: Any) -> Any:
    """A trainable parameter's full fp32 value (collective under ZeRO: call on every rank)."""
    from deepspeed.utils import safe_get_full_fp32_param

    value = safe_get_full_fp32_param(param) if _sharded(param) else None
    return (value if value is not None else param.detach()).float().cpu()


def adam_step(engine: Any) -> int:
    """AdamW's step count (0 before the first step)."""
    steps = [s["step"] for s in _base_optimizer(engine).state.values() if "step" in s]
    return int(max(float(s) for s in steps)) if steps else 0


def get_moments(engine: Any, params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Full AdamW moments per named parameter (collective under ZeRO: call on every rank)."""
    from deepspeed.utils import safe_get_full_optimizer_state

    base = _base_optimizer(engine)
    out: dict[str, dict[str, Any]] = {}
    for name, p in params.items():
        if _sharded(p):
            out[name] = {k: safe_get_full_optimizer_state(p, k).float().cpu() for k in MOMENTS}
        else:
            out[name] = {k: base.state[p][k].detach().float().cpu() for k in MOMENTS}
    return out


def set_moments(engine: Any, params: dict[str, Any], moments: dict[str, dict[str, Any]], step: int) -> None:
    """Install AdamW moments and step count before the first step of a resumed run.

    AdamW creates its state lazily at the first step, so the state of every tensor the optimizer
    updates (a ZeRO rank's flat fp32 partition, or the parameter itself without ZeRO) is created
    here first, then DeepSpeed's fragment API writes each parameter's slice.
    """
    import torch
    from deepspeed.utils import safe_set_full_optimizer_state

    missing = sorted(set(params) - set(moments))
    if missing:
        raise ValueError(f"checkpoint lacks optimizer state for {missing[:5]}")
    base = _base_optimizer(engine)
    # torch's AdamW counts steps in a CPU float tensor, DeepSpeed's CPU Adam in an int
    count = torch.tensor(float(step), dtype=torch.float32) if isinstance(base, torch.optim.Optimizer) and \
        type(base).__module__.startswith("torch.") else int(step)
    for flat in _updated_tensors(engine):
        if not base.state[flat]:
            base.state[flat] = {"step": count.clone() if isinstance(count, torch.Tensor) else count,
                                **{k: torch.zeros_like(flat, memory_format=torch.preserve_format) for k in MOMENTS}}
    link = getattr(engine.optimizer, "_lazy_init_hp_params_optimizer_state", None)
    if link is not None:  # ZeRO 1/2 and bf16: point each parameter's fragment at the new state
        link()
    for name, p in params.items():
        for k in MOMENTS:
            value = moments[name][k]
            if hasattr(p, "ds_id"):
                _set_zero3_slice(p, value, k)
            elif _sharded(p):
                safe_set_full_optimizer_state(p, value, k)
            else:
                base.state[p][k].copy_(value)


def _set_zero3_slice(param: Any, value: Any, key: str) -> None:
    """Write this rank's slice of a ZeRO-3 parameter's optimizer state ``key``.

    Same as DeepSpeed's ``safe_set_full_optimizer_state``, except that the last rank's slice
    of a parameter whose size does not divide by the world size (it is padded) works too.
    """
    opt = param._z3_optimizer
    part, _ = opt._get_fp32_opt_state_partition(param, release_swap_buffers=False, optim_state_key=key)
    start = part.numel() * opt._get_param_partition_rank(param)
    chunk = value.flatten()[start: start + part.numel()]
    part.zero_()
    part[: chunk.numel()].copy_(chunk)
