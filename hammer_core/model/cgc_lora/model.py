"""Injecting CGC-LoRA into a Hugging Face causal LM, and the wrapper that routes task ids.

:func:`inject_cgc_lora` freezes the base model and replaces each targeted ``nn.Linear`` (or
GPT-2-style ``Conv1D``) in place by a :class:`~hammer_core.model.cgc_lora.layer.CGCLoraLinear`
(module paths are unchanged, so ``<path>.lora_A`` / ``<path>.lora_B`` line up with PEFT's key
names). Each adapted layer computes for a row of task ``t``::

    h = W0 x + (alpha / r) * sum_{i in common ∪ specific(t)} w_{t,i} B_i A_i x
    w_t = softmax over the admissible experts of G(embed(t))

:class:`CGCLoraModel` carries the per-row task ids to every layer through a shared
:class:`~hammer_core.model.cgc_lora.layer.TaskContext` that is set for the duration of ``forward`` /
``generate`` (and re-set during activation-checkpoint recomputation).

"1 + N" export: after training, each task collapses into a plain LoRA (or a merged model):
one base model plus N standard adapters; see :mod:`hammer_core.model.cgc_lora.export`.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .config import ALL_LINEAR, CGCLoraConfig
from .layer import LINEAR_TYPES, CGCGate, CGCLoraLinear, TaskContext

SHARED_GATE_NAME = "cgc_gate"
"""Attribute (and adapter-state-dict key prefix) of the shared gate on :class:`CGCLoraModel`."""

TaskIds = torch.Tensor | int | str | Sequence[int | str]


# ------------------------------------------------------------------------------ targeting
def _output_embedding_ids(model: nn.Module) -> set[int]:
    get_output = getattr(model, "get_output_embeddings", None)
    if get_output is None:
        return set()
    try:
        head = get_output()
    except (NotImplementedError, AttributeError):
        return set()
    return {id(head)} if head is not None else set()


def find_target_modules(model: nn.Module, config: CGCLoraConfig) -> list[str]:
    """Names of the linear modules of ``model`` that ``config.target_modules`` selects.

    Linear modules are ``nn.Linear`` and transformers' ``Conv1D`` (GPT-2 family).
    """
    linears = [(name, m) for name, m in model.named_modules() if name and isinstance(m, LINEAR_TYPES)]
    targets = config.target_modules
    if targets == ALL_LINEAR:
        heads = _output_embedding_ids(model)
        selected = [n for n, m in linears if id(m) not in heads and n.rsplit(".", 1)[-1] != "lm_head"]
    elif isinstance(targets, str):
        selected = [n for n, _ in linears if re.fullmatch(targets, n)]
    else:
        selected = [n for n, _ in linears if any(n == t or n.endswith("." + t) for t in targets)]
    if not selected:
        names = [n for n, _ in linears]
        leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
        shown = names[:20] + ([f"... ({len(names) - 20} more)"] if len(names) > 20 else [])
        raise ValueError(
            f"target_modules={targets!r} matched no linear module (nn.Linear / Conv1D). Available leaf "
            f"names: {leaves}; linear modules: {shown}"
        )
    return selected


def _set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    parent_name, _, child = path.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def resolve_task_ids(config: CGCLoraConfig, task_ids: TaskIds) -> torch.Tensor:
    """Normalize ``task_ids`` (LongTensor, id, name, or a list of ids/names) to a 1-D LongTensor.

    A single task (an int, a name or a 0-d tensor) gives shape ``[1]`` and applies to every row.
    """
    if isinstance(task_ids, torch.Tensor):
        if task_ids.dtype.is_floating_point or task_ids.dtype.is_complex or task_ids.dtype == torch.bool:
            raise ValueError(f"task_ids must be an integer tensor, got dtype {task_ids.dtype}")
        if task_ids.dim() > 1:
            raise ValueError(f"task_ids must have shape [batch], got {tuple(task_ids.shape)}")
        ids = task_ids.reshape(-1).long()
        if ids.numel() == 0:
            raise ValueError("task_ids must not be empty")
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= config.n_tasks:
            raise ValueError(f"task_ids out of range [0, {config.n_tasks}): got min {lo}, max {hi}")
        return ids
    if isinstance(task_ids, (numbers.Integral, str)):
        return torch.tensor([config.task_index(task_ids)], dtype=torch.long)
    if isinstance(task_ids, Sequence):
        if len(task_ids) == 0:
            raise ValueError("task_ids must not be empty")
        return torch.tensor([config.task_index(t) for t in task_ids], dtype=torch.long)
    raise ValueError(f"task_ids must be a LongTensor, a task id/name or a list of them, got {task_ids!r}")


def _task_aware_checkpoint(checkpoint_fn: Callable[..., Any], context: TaskContext) -> Callable[..., Any]:
    """Wrap an HF ``_gradient_checkpointing_func`` so recomputation in backward sees the task ids.

    Backward runs after ``CGCLoraModel.forward`` has returned (and cleared the context), so the
    checkpointed function captures the ids current at forward time and re-installs them when
    it is re-run. Works for reentrant and non-reentrant checkpointing.
    """

    def checkpoint(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        task_ids = context.task_ids

        def run(*run_args: Any, **run_kwargs: Any) -> Any:
            with context.use(task_ids):
                return function(*run_args, **run_kwargs)

        return checkpoint_fn(run, *args, **kwargs)

    checkpoint._cgc_task_aware = True  # type: ignore[attr-defined]
    checkpoint.__wrapped__ = checkpoint_fn  # type: ignore[attr-defined]
    return checkpoint


# ---------------------------------------------------------------------------------- model
class CGCLoraModel(nn.Module):
    """A causal LM with CGC-LoRA layers injected; ``forward`` / ``generate`` take ``task_ids``.

    Attributes:
        base_model: the wrapped HF model (its targeted linears are now ``CGCLoraLinear``).
        config: the :class:`CGCLoraConfig`.
        task_context: the :class:`TaskContext` shared by all adapted layers.
        cgc_gate: the shared :class:`CGCGate` (only when ``config.shared_gate``).

    Unknown attributes are looked up on ``base_model`` (``device``, ``generation_config``, ...).
    """

    def __init__(
        self,
        base_model: nn.Module,
        config: CGCLoraConfig,
        *,
        adapter_dtype: torch.dtype | None = torch.float32,
    ) -> None:
        super().__init__()
        if any(isinstance(m, CGCLoraLinear) for m in base_model.modules()):
            raise ValueError("the model already contains CGC-LoRA layers; inject into a fresh base model")
        targets = find_target_modules(base_model, config)
        self.base_model = base_model
        self.config = config
        self.task_context = TaskContext()

        for param in base_model.parameters():
            param.requires_grad_(False)

        def new_gate(like: torch.Tensor) -> CGCGate:
            return CGCGate(config).to(device=like.device, dtype=adapter_dtype or like.dtype)

        shared: CGCGate | None = None
        if config.shared_gate:
            shared = new_gate(base_model.get_submodule(targets[0]).weight)
            self.cgc_gate = shared
        for path in targets:
            base_layer = base_model.get_submodule(path)
            layer = CGCLoraLinear(
                base_layer,
                config,
                self.task_context,
                shared if shared is not None else new_gate(base_layer.weight),
                owns_gate=shared is None,
                adapter_dtype=adapter_dtype,
            )
            _set_submodule(base_model, path, layer)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base_model":
                raise
            return getattr(self.base_model, name)

    # ------------------------------------------------------------------------ introspection
    def cgc_layers(self) -> dict[str, CGCLoraLinear]:
        """Adapted layers keyed by module path inside ``base_model``."""
        return {name: m for name, m in self.base_model.named_modules() if isinstance(m, CGCLoraLinear)}

    def gates(self) -> dict[str, CGCGate]:
        """The gate(s) keyed by their adapter-state-dict prefix."""
        if self.config.shared_gate:
            return {SHARED_GATE_NAME: self.cgc_gate}
        return {f"{path}.gate": layer.get_gate() for path, layer in self.cgc_layers().items()}

    def _adapter_parameters(self) -> dict[str, nn.Parameter]:
        params: dict[str, nn.Parameter] = {}
        for path, layer in self.cgc_layers().items():
            params[f"{path}.lora_A"] = layer.lora_A
            params[f"{path}.lora_B"] = layer.lora_B
        for prefix, gate in self.gates().items():
            for name, param in gate.named_parameters():
                params[f"{prefix}.{name}"] = param
        return params

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the CGC parameters (``lora_A``, ``lora_B``, gates), keyed by module path.

        Keys are ``<path>.lora_A``, ``<path>.lora_B`` and either ``cgc_gate.<param>`` (shared
        gate) or ``<path>.gate.<param>`` (per-layer gates); tensors are detached, not copied.
        """
        return {key: param.detach() for key, param in self._adapter_parameters().items()}

    def load_adapter_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Copy ``state`` into the CGC parameters; missing/unexpected keys or shape mismatches raise.
        A frozen parameter (the constant gate of a one-expert config) may be absent: the trainer
        saves what it trains."""
        params = self._adapter_parameters()
        missing = sorted(k for k in set(params) - set(state) if params[k].requires_grad)
        unexpected = sorted(set(state) - set(params))
        params = {k: p for k, p in params.items() if k in state}
        if missing or unexpected:
            raise ValueError(
                f"CGC-LoRA state dict does not match the model: missing keys {missing[:10]}"
                f"{' ...' if len(missing) > 10 else ''}, unexpected keys {unexpected[:10]}"
                f"{' ...' if len(unexpected) > 10 else ''}"
            )
        mismatched = [
            f"{key}: expected {tuple(param.shape)}, got {tuple(state[key].shape)}"
            for key, param in params.items()
            if tuple(state[key].shape) != tuple(param.shape)
        ]
        if mismatched:
            raise ValueError(f"CGC-LoRA state dict has shape mismatches: {mismatched[:10]}")
        with torch.no_grad():
            for key, param in params.items():
                param.copy_(state[key].to(device=param.device, dtype=param.dtype))

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters with ``requires_grad`` (the CGC parameters after injection)."""
        return [p for p in self.parameters() if p.requires_grad]

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())

    def num_parameters_total(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def print_trainable_parameters(self) -> None:
        trainable, total = self.num_trainable(), self.num_parameters_total()
        print(f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}")

    def unload(self) -> nn.Module:
        """Put the original ``nn.Linear`` modules back (dropping the adapter); return the base model."""
        for path, layer in self.cgc_layers().items():
            _set_submodule(self.base_model, path, layer.base_layer)
        return self.base_model

    # --------------------------------------------------------------------------- running
    def _task_ids_tensor(self, task_ids: TaskIds | None, caller: str) -> torch.Tensor:
        if task_ids is None:
            raise RuntimeError(
                f"CGCLoraModel.{caller} requires task_ids=...: a LongTensor of shape [batch] (or one id), "
                f"or a list of task ids / task names from {self.config.tasks}"
            )
        # Layers move the ids to their own device if the model is split across devices.
        device = next(self.base_model.parameters()).device
        return resolve_task_ids(self.config, task_ids).to(device)

    def _prepare_activation_checkpointing(self) -> None:
        """Make HF activation checkpointing (enabled before or after injection) task-aware."""
        active = False
        for module in self.base_model.modules():
            fn = getattr(module, "_gradient_checkpointing_func", None)
            if fn is not None and not getattr(fn, "_cgc_task_aware", False):
                module._gradient_checkpointing_func = _task_aware_checkpoint(fn, self.task_context)
            if getattr(module, "gradient_checkpointing", False) is True:
                active = True
        if (
            active
            and torch.is_grad_enabled()
            and hasattr(self.base_model, "enable_input_require_grads")
            and not getattr(self.base_model, "_require_grads_hooks", None)
            and not hasattr(self.base_model, "_require_grads_hook")
        ):
            # Reentrant checkpointing only back-propagates if a block input requires grad.
            self.base_model.enable_input_require_grads()

    def activation_checkpointing_enable(
        self, activation_checkpointing_kwargs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        """Enable activation checkpointing on the base model, task-aware, with input grads on.

        ``kwargs`` (e.g. ``every_n_layers`` / ``offload``, as ``transformers.Trainer`` passes
        them) go to the base model's own method.
        """
        enable = getattr(self.base_model, "activation_checkpointing_enable", None)
        if enable is not None:  # transformers >= 5 (gradient_checkpointing_enable is deprecated)
            enable(activation_checkpointing_kwargs=activation_checkpointing_kwargs, **kwargs)
        else:
            self.base_model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs=activation_checkpointing_kwargs, **kwargs
            )
        self._prepare_activation_checkpointing()

    def gradient_checkpointing_enable(
        self, gradient_checkpointing_kwargs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        """The transformers < 5 name of :meth:`activation_checkpointing_enable`."""
        self.activation_checkpointing_enable(gradient_checkpointing_kwargs, **kwargs)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *args: Any,
        task_ids: TaskIds | None = None,
        labels: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Run the base model with ``task_ids`` (one per row, or one for the whole batch).

        The usual causal-LM inputs are named in the signature (as in PEFT's wrappers) because
        ``transformers.Trainer`` keeps only the batch keys that ``forward`` names when
        ``remove_unused_columns`` is on: a collator that emits ``task_ids`` next to
        ``input_ids`` / ``attention_mask`` / ``labels`` reaches the layers unchanged. Other
        keyword arguments go to the base model as they are.
        """
        ids = self._task_ids_tensor(task_ids, "forward")
        named = {
            "labels": labels,
            "inputs_embeds": inputs_embeds,
            "position_ids": position_ids,
            "past_key_values": past_key_values,
        }
        kwargs.update({key: value for key, value in named.items() if value is not None})
        if args:  # extra positional inputs: keep the base model's own argument order
            args = (input_ids, attention_mask, *args)
        else:
            kwargs.update({key: value for key, value in (("input_ids", input_ids), ("attention_mask", attention_mask))
                           if value is not None})
        self._prepare_activation_checkpointing()
        with self.task_context.use(ids):
            return self.base_model(*args, **kwargs)

    def generate(self, *args: Any, task_ids: TaskIds | None = None, **kwargs: Any) -> Any:
        """``base_model.generate`` with ``task_ids``; beam/sample expansion is handled per layer."""
        ids = self._task_ids_tensor(task_ids, "generate")
        self._prepare_activation_checkpointing()
        with self.task_context.use(ids):
            return self.base_model.generate(*args, **kwargs)


def inject_cgc_lora(
    model: nn.Module,
    config: CGCLoraConfig,
    *,
    adapter_dtype: torch.dtype | None = torch.float32,
) -> CGCLoraModel:
    """Freeze ``model`` and inject CGC-LoRA layers into it in place; return the wrapper.

    ``adapter_dtype`` is the dtype of the new parameters (fp32 by default, also for a bf16 base:
    inputs are cast to it and outputs back); ``None`` uses each base weight's dtype.
    """
    return CGCLoraModel(model, config, adapter_dtype=adapter_dtype)


__all__ = [
    "SHARED_GATE_NAME",
    "CGCLoraModel",
    "find_target_modules",
    "inject_cgc_lora",
    "resolve_task_ids",
]
