"""Export and serialization of CGC-LoRA: "1 + N" per-task LoRA export, merging, save/load.

An adapted layer computes, for a row of task ``t``::

    h = W0 x + (alpha / r) * sum_{i in common ∪ specific(t)} w_{t,i} B_i A_i x
    w_t = softmax over the admissible experts of G(embed(t))

For a fixed task the gate weights ``w_t`` are constants, so the task's delta is an ordinary
low-rank product. Stacking the ``K = n_common + n_specific`` admissible experts gives a LoRA of
rank ``R = K * r``::

    A_t = [scaling * w_{t,i} * A_i  for i in common ∪ specific(t)]   # [R, in]
    B_t = [B_i                       for i in common ∪ specific(t)]   # [out, R]
    delta W_t = B_t @ A_t                                             # exactly the gated delta

"1 + N": one base model plus N standard PEFT LoRA adapters (``lora_alpha = r = R``, so PEFT's
own scaling is 1) reproduce the multi-task model exactly, and can be served by any multi-LoRA
server; :func:`merge_task_into_base` instead folds one task into a plain copy of the base
(:func:`save_merged_task` writes it as an ordinary HF model folder).

:func:`save_cgc_lora` / :func:`load_cgc_lora` store the full multi-task adapter
(``cgc_lora_config.json`` + ``cgc_lora.safetensors``). All files are written atomically
(temporary file in the target directory, then :func:`os.replace`); weights never use pickle.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .config import CGCLoraConfig
from .layer import LINEAR_TYPES, CGCLoraLinear
from .model import CGCLoraModel, inject_cgc_lora

CGC_CONFIG_NAME = "cgc_lora_config.json"
CGC_WEIGHTS_NAME = "cgc_lora.safetensors"
PEFT_CONFIG_NAME = "adapter_config.json"
PEFT_WEIGHTS_NAME = "adapter_model.safetensors"
PEFT_KEY_PREFIX = "base_model.model."


# ------------------------------------------------------------------------------ file I/O
def _temp_prefix(path: str | os.PathLike[str]) -> str:
    """``.<name>.<pid>-<host>.``: hammer_core.artifacts.temp_prefix's naming (this package
    imports nothing of hammer_core), so a later stage run can tell a killed writer's leftovers."""
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())
    return f".{os.path.basename(os.path.abspath(path))}.{os.getpid()}-{host}."


def _atomic_write(path: str | os.PathLike[str], write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` on a temp file next to ``path``, then atomically rename it."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=_temp_prefix(path), suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _write_json(path: str | os.PathLike[str], data: dict[str, Any]) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(data, indent=2, sort_keys=True))
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())

    _atomic_write(path, write)


def _write_safetensors(
    path: str | os.PathLike[str], tensors: dict[str, torch.Tensor], metadata: dict[str, str]
) -> None:
    cpu = {key: t.detach().to("cpu").contiguous() for key, t in tensors.items()}
    _atomic_write(path, lambda tmp: save_file(cpu, tmp, metadata=metadata))


# -------------------------------------------------------------------------------- export
@torch.no_grad()
def task_lora_weights(model: CGCLoraModel, task: int | str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Task ``task``'s collapsed LoRA per adapted module: ``{path: (A_t [R, in], B_t [out, R])}``.

    ``R = (n_common + n_specific) * r_expert``; ``scaling * w_{t,i}`` is baked into ``A_t`` so that
    ``B_t @ A_t`` equals the gated CGC delta exactly. Tensors are fp32, on the adapter's device.
    """
    config = model.config
    t = config.task_index(task)
    experts = torch.tensor(config.admissible_experts(t), dtype=torch.long)
    r = config.r_expert
    rows = (experts[:, None] * r + torch.arange(r)).reshape(-1)  # [R]
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for path, layer in model.cgc_layers().items():
        device = layer.lora_A.device
        weights = layer.gate_weights()[t].to(device)  # [E]
        scale = (layer.scaling * weights[experts.to(device)]).repeat_interleave(r)  # [R]
        idx = rows.to(device)
        a_t = layer.lora_A.float().index_select(0, idx) * scale[:, None].float()
        b_t = layer.lora_B.float().index_select(1, idx)
        out[path] = (a_t.contiguous(), b_t.contiguous())
    return out


def _peft_target_modules(model: CGCLoraModel, paths: list[str]) -> list[str] | str:
    """Sorted unique leaf names, or an exact regex when leaf names would over-match in PEFT."""
    leaves = sorted({p.rsplit(".", 1)[-1] for p in paths})
    targeted = set(paths)
    over_match = [
        name
        for name, module in model.base_model.named_modules()
        if name not in targeted
        and name.rsplit(".", 1)[-1] in leaves
        and not isinstance(module, CGCLoraLinear)
        and not name.endswith(".base_layer")
    ]
    if not over_match:
        return leaves
    return "(?:" + "|".join(re.escape(p) for p in sorted(paths)) + ")"


def export_task_adapter(
    model: CGCLoraModel,
    task: int | str,
    out_dir: str | os.PathLike[str],
    base_model_name_or_path: str | None,
    *,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write task ``task`` as a standard PEFT LoRA adapter loadable by ``PeftModel.from_pretrained``.

    Writes ``adapter_config.json`` (``r = lora_alpha = R``, so PEFT's scaling is 1) and
    ``adapter_model.safetensors`` with keys ``base_model.model.<path>.lora_{A,B}.weight``.
    ``dtype`` defaults to the adapter's parameter dtype. Returns ``out_dir``.
    """
    from peft import LoraConfig  # local import: peft is only needed for export

    config = model.config
    weights = task_lora_weights(model, task)
    paths = list(weights)
    rank = config.export_rank
    layers = model.cgc_layers()
    fan_in_fan_out = {layers[p].fan_in_fan_out for p in paths}
    if len(fan_in_fan_out) > 1:
        raise ValueError(
            "cannot export one PEFT adapter over both nn.Linear and Conv1D layers (PEFT has one "
            "fan_in_fan_out flag per adapter); target only one kind of layer"
        )
    lora_config = LoraConfig(
        fan_in_fan_out=fan_in_fan_out.pop(),
        r=rank,
        lora_alpha=rank,
        target_modules=_peft_target_modules(model, paths),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
        base_model_name_or_path=base_model_name_or_path,
    )
    # Same JSON as LoraConfig.save_pretrained (sets become lists), sorted for determinism.
    config_dict = lora_config.to_dict()
    for key, value in config_dict.items():
        if isinstance(value, set):
            config_dict[key] = sorted(value)

    tensors: dict[str, torch.Tensor] = {}
    for path, (a_t, b_t) in weights.items():
        layer_dtype = dtype or model.base_model.get_submodule(path).lora_A.dtype
        tensors[f"{PEFT_KEY_PREFIX}{path}.lora_A.weight"] = a_t.to(layer_dtype)
        tensors[f"{PEFT_KEY_PREFIX}{path}.lora_B.weight"] = b_t.to(layer_dtype)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_safetensors(out / PEFT_WEIGHTS_NAME, tensors, metadata={"format": "pt"})
    _write_json(out / PEFT_CONFIG_NAME, config_dict)
    return out


@torch.no_grad()
def merge_task_into_base(model: CGCLoraModel, task: int | str) -> nn.Module:
    """A deep copy of the base model with task ``task`` merged: ``W = W0 + B_t @ A_t``.

    The copy holds the plain base layers (no adapter code or parameters); its parameters
    keep ``requires_grad=False`` as frozen by injection. The CGC model is left untouched.
    """
    weights = task_lora_weights(model, task)
    layers = model.cgc_layers()
    # Pre-seeding the deepcopy memo makes each CGCLoraLinear copy as (a copy of) its base layer,
    # so the adapter parameters, gates and task context are never copied.
    memo: dict[int, Any] = {}
    for layer in layers.values():
        memo[id(layer)] = copy.deepcopy(layer.base_layer, memo)  # shared memo keeps tied weights tied
    merged = copy.deepcopy(model.base_model, memo)
    for path, (a_t, b_t) in weights.items():
        linear = merged.get_submodule(path)
        assert isinstance(linear, LINEAR_TYPES) and not isinstance(linear, CGCLoraLinear)
        delta = (b_t @ a_t).to(linear.weight.device)  # [out, in]
        if layers[path].fan_in_fan_out:  # Conv1D: weight is [in, out]
            delta = delta.T
        linear.weight.copy_((linear.weight.float() + delta).to(linear.weight.dtype))
    return merged


def save_merged_task(model: CGCLoraModel, task: int | str, out_dir: str | os.PathLike[str]) -> Path:
    """Write task ``task`` merged into the base weights as a plain HF model folder (safetensors).

    The result loads with ``AutoModelForCausalLM.from_pretrained(out_dir)`` and runs at the cost
    of the base model. The folder is written under a temporary name beside ``out_dir`` and
    renamed into place, so readers never see a half-written model. Returns ``out_dir``.
    """
    merged = merge_task_into_base(model, task)
    if not hasattr(merged, "save_pretrained"):
        raise TypeError(f"the base model ({type(merged).__name__}) has no save_pretrained; save it yourself")
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=_temp_prefix(out), suffix=".tmp"))
    try:
        merged.save_pretrained(tmp, safe_serialization=True)
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# ---------------------------------------------------------------------------- save / load
def save_cgc_lora(model: CGCLoraModel, out_dir: str | os.PathLike[str]) -> Path:
    """Write ``cgc_lora_config.json`` and ``cgc_lora.safetensors`` (adapter params only)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_safetensors(out / CGC_WEIGHTS_NAME, model.adapter_state_dict(), metadata={"format": "pt"})
    _write_json(out / CGC_CONFIG_NAME, model.config.to_dict())
    return out


def load_cgc_lora(
    base_model: nn.Module,
    in_dir: str | os.PathLike[str],
    config: CGCLoraConfig | None = None,
    *,
    adapter_dtype: torch.dtype | None = torch.float32,
) -> CGCLoraModel:
    """Inject the saved CGC-LoRA into a fresh ``base_model`` and load its weights (strict).

    If ``config`` is given it must equal the saved config. Missing/unexpected keys or shape
    mismatches (e.g. a different base model) raise ``ValueError`` and leave ``base_model``
    unchanged.
    """
    src = Path(in_dir)
    with open(src / CGC_CONFIG_NAME, encoding="utf-8") as f:
        saved = CGCLoraConfig.from_dict(json.load(f))
    if config is not None and config.to_dict() != saved.to_dict():
        expected, got = config.to_dict(), saved.to_dict()
        diff = {k: (expected[k], got[k]) for k in expected if expected[k] != got[k]}
        raise ValueError(f"config does not match the saved CGC-LoRA config (given, saved): {diff}")
    state = load_file(str(src / CGC_WEIGHTS_NAME), device="cpu")
    requires_grad = {name: p.requires_grad for name, p in base_model.named_parameters()}
    model = inject_cgc_lora(base_model, saved, adapter_dtype=adapter_dtype)
    try:
        model.load_adapter_state_dict(state)
    except Exception:
        # Leave the caller's base model as it was.
        model.unload()
        for name, param in base_model.named_parameters():
            param.requires_grad_(requires_grad.get(name, param.requires_grad))
        raise
    return model


__all__ = [
    "CGC_CONFIG_NAME",
    "CGC_WEIGHTS_NAME",
    "export_task_adapter",
    "load_cgc_lora",
    "merge_task_into_base",
    "save_cgc_lora",
    "save_merged_task",
    "task_lora_weights",
]
