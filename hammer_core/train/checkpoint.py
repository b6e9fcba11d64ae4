"""Training checkpoints on disk: safetensors for tensors, JSON for everything else, no pickle.

Layout of one checkpoint, ``<train dir>/checkpoints/step-00000040/``::

    adapter/cgc_lora.safetensors      the full CGC-LoRA adapter, fp32 (gathered, never a shard)
    adapter/cgc_lora_config.json
    optimizer.safetensors             full AdamW moments per adapter parameter:
                                      "<param>::exp_avg", "<param>::exp_avg_sq"
    rng/rank-00000.json ...           each process's RNG states (python, numpy, torch CPU/CUDA)
    state.json                        step, AdamW step count and hyper-parameters, the LR
                                      scheduler's state, the data position, the metrics history,
                                      the resume key (what must match to continue from it)

Optimizer state is stored *unsharded*, whatever the ZeRO stage, so a checkpoint is readable
without DeepSpeed and independent of how many processes wrote it.

Atomic: a checkpoint is assembled in ``checkpoints/.tmp-step-N`` and renamed into place, so a
process killed at any moment leaves either a complete checkpoint or none (leftover temp
folders are swept by :func:`sweep_partial`). Only ``state.json``-bearing folders count;
:func:`commit` keeps the newest ``keep`` of them.
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from hammer_core.artifacts import atomic_write_json

CHECKPOINTS = "checkpoints"
STATE_NAME = "state.json"
OPTIMIZER_NAME = "optimizer.safetensors"
ADAPTER_DIR = "adapter"
FORMAT_VERSION = 1
_TMP_PREFIX = ".tmp-"
_KEY_SEP = "::"


def step_name(step: int) -> str:
    return f"step-{step:08d}"


def checkpoints_root(train_dir: Path) -> Path:
    return Path(train_dir) / CHECKPOINTS


def list_checkpoints(train_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first."""
    root = checkpoints_root(train_dir)
    if not root.is_dir():
        return []
    found = []
    for d in root.iterdir():
        if d.name.startswith("step-") and (d / STATE_NAME).is_file():
            try:
                found.append((int(d.name.removeprefix("step-")), d))
            except ValueError:
                continue
    return sorted(found)


def latest_checkpoint(train_dir: Path) -> Path | None:
    found = list_checkpoints(train_dir)
    return found[-1][1] if found else None


def staging_dir(train_dir: Path, step: int) -> Path:
    """The temp folder a checkpoint is assembled in (same name on every rank)."""
    return checkpoints_root(train_dir) / f"{_TMP_PREFIX}{step_name(step)}"


def begin(train_dir: Path, step: int) -> Path:
    """Create an empty staging folder for ``step`` (rank 0 only)."""
    tmp = staging_dir(train_dir, step)
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "rng").mkdir(parents=True)
    return tmp


def commit(train_dir: Path, step: int, keep: int) -> Path:
    """Atomically publish the staged checkpoint of ``step`` and drop all but the newest ``keep``."""
    tmp, final = staging_dir(train_dir, step), checkpoints_root(train_dir) / step_name(step)
    if final.exists():  # re-running a finished step: replace it
        old = final.with_name(f"{_TMP_PREFIX}old-{final.name}")
        os.replace(final, old)
        shutil.rmtree(old)
    _fsync_tree(tmp)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    for _, d in list_checkpoints(train_dir)[:-keep]:
        shutil.rmtree(d, ignore_errors=True)
    return final


def sweep_partial(train_dir: Path) -> None:
    """Remove staging folders left by a killed run."""
    root = checkpoints_root(train_dir)
    if root.is_dir():
        for d in root.iterdir():
            if d.name.startswith(_TMP_PREFIX):
                shutil.rmtree(d, ignore_errors=True)


def remove_all(train_dir: Path) -> None:
    shutil.rmtree(checkpoints_root(train_dir), ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(Path(dirpath))


# ------------------------------------------------------------------------------- tensors
def write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(path),
              metadata={"format": "pt"})


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path), device="cpu")


def optimizer_tensors(moments: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """``{param: {"exp_avg": t, ...}}`` -> flat safetensors keys ``param::exp_avg``."""
    return {f"{p}{_KEY_SEP}{k}": t for p, states in moments.items() for k, t in states.items()}


def optimizer_moments(tensors: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        param, _, state_key = key.rpartition(_KEY_SEP)
        out.setdefault(param, {})[state_key] = t
    return out


# ----------------------------------------------------------------------------------- RNG
def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.numpy().tobytes()).decode("ascii")


def _unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8).clone()


def capture_rng() -> dict[str, Any]:
    """This process's RNG states as JSON-able values."""
    version, state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    cuda = [_b64(s) for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else []
    return {"python": [version, list(state), gauss],
            "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
            "torch_cpu": _b64(torch.get_rng_state()), "torch_cuda": cuda}


def restore_rng(states: dict[str, Any]) -> None:
    version, state, gauss = states["python"]
    random.setstate((version, tuple(state), gauss))
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(_unb64(states["torch_cpu"]))
    if states.get("torch_cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_unb64(s) for s in states["torch_cuda"]])


def rng_path(ckpt_dir: Path, rank: int) -> Path:
    return Path(ckpt_dir) / "rng" / f"rank-{rank:05d}.json"


def write_rng(ckpt_dir: Path, rank: int) -> None:
    atomic_write_json(rng_path(ckpt_dir, rank), capture_rng())


def read_rng(ckpt_dir: Path, rank: int) -> dict[str, Any] | None:
    path = rng_path(ckpt_dir, rank)
    return json.loads(path.read_text()) if path.exists() else None


# --------------------------------------------------------------------------------- state
def write_state(ckpt_dir: Path, state: dict[str, Any]) -> None:
    atomic_write_json(Path(ckpt_dir) / STATE_NAME, {"format": FORMAT_VERSION, **state})


def read_state(ckpt_dir: Path) -> dict[str, Any]:
    state = json.loads((Path(ckpt_dir) / STATE_NAME).read_text())
    if state.get("format") != FORMAT_VERSION:
        raise ValueError(f"{ckpt_dir}: checkpoint format {state.get('format')!r}, this hammer reads {FORMAT_VERSION}")
    return state


def jsonable_scheduler_state(state: dict[str, Any]) -> dict[str, Any]:
    """An LR scheduler's ``state_dict()`` made JSON-safe (its lambdas are rebuilt from config)."""
    return {k: v for k, v in state.items() if k != "lr_lambdas" and _is_json(v)}


def _is_json(v: Any) -> bool:
    try:
        json.dumps(v)
    except (TypeError, ValueError):
        return False
    return True
