"""CGC-LoRA layers: the task gate, the task-id context and the adapted linear layer.

For an input ``x`` of task ``t`` an adapted linear layer computes::

    h = W0 x + (alpha / r) * sum_{i in common ∪ specific(t)} w_{t,i} B_i A_i x
    w_t = softmax over the admissible experts of G(embed(t))

All ``E`` experts are stored stacked: ``lora_A`` is ``[E * r, in]`` and ``lora_B`` is
``[out, E * r]`` (expert ``i`` owns rows/columns ``i*r .. (i+1)*r - 1``), so the mixture is a
single pair of matmuls with the per-sample gate weight of each expert repeated over its ``r``
ranks in between::

    y = W0 x + scaling * ((dropout(x) @ A.T) * w_expanded) @ B.T

Non-admissible experts have weight exactly 0, so a batch may mix tasks freely.

Hot path: the per-row weights ``scaling * w_t`` expanded over the ranks (``[batch, E * r]``)
depend only on the task ids and the gate, so :class:`TaskContext` computes them once per
gate and per forward pass (shared gate: once for the whole model) and every layer reuses
them. A layer then costs one matmul into the stacked rank space, one broadcast multiply on
``[batch, seq, E * r]`` and one ``addmm`` that adds the up-projection onto the base output
without materializing the delta -- no loop over experts or tasks.

"1 + N" export: for a fixed task ``w_t`` is a constant, hence ``B diag(w_t ⊗ 1_r) A`` restricted
to the admissible experts is an ordinary LoRA of rank ``(n_common + n_specific) * r``; see
:mod:`hammer_core.model.cgc_lora.export`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

from .config import CGCLoraConfig

LINEAR_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, Conv1D)
"""Layers CGC-LoRA can adapt: ``nn.Linear`` and transformers' ``Conv1D`` (GPT-2 style, weight
stored transposed as ``[in, out]``)."""


def linear_features(module: nn.Module) -> tuple[int, int]:
    """``(in_features, out_features)`` of an ``nn.Linear`` or a transformers ``Conv1D``."""
    if isinstance(module, Conv1D):
        n_in, n_out = module.weight.shape
        return int(n_in), int(n_out)
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    raise TypeError(f"CGC-LoRA adapts nn.Linear or transformers Conv1D layers, got {type(module).__name__}")


def admissible_mask(config: CGCLoraConfig) -> torch.Tensor:
    """Bool ``[n_tasks, E]``: ``True`` where task ``t`` may use expert ``i`` (common ∪ specific(t))."""
    mask = torch.zeros(config.n_tasks, config.n_experts, dtype=torch.bool)
    mask[:, : config.n_common] = True
    for t in range(config.n_tasks):
        start = config.n_common + t * config.n_specific
        mask[t, start : start + config.n_specific] = True
    return mask


class TaskContext:
    """Holds the task ids of the batch currently running through the model.

    One instance is shared by every :class:`CGCLoraLinear` of a model; :class:`CGCLoraModel`
    fills it around each ``forward`` / ``generate`` call (see :meth:`use`).

    Within one :meth:`use` block the per-row gate weights are computed once per gate and
    cached (:meth:`row_weights`); the block must therefore not span an optimizer step. A
    nested :meth:`use` (as activation-checkpoint recomputation does) starts its own cache.
    """

    def __init__(self) -> None:
        self.task_ids: torch.Tensor | None = None
        self._row_weights: dict[tuple[object, ...], torch.Tensor] = {}

    @contextmanager
    def use(self, task_ids: torch.Tensor | None) -> Iterator[None]:
        """Set ``task_ids`` (with a fresh weight cache) for the block, then restore the previous state."""
        previous = (self.task_ids, self._row_weights)
        self.task_ids, self._row_weights = task_ids, {}
        try:
            yield
        finally:
            self.task_ids, self._row_weights = previous

    def clear(self) -> None:
        self.task_ids = None
        self._row_weights = {}

    def for_batch(self, batch_size: int) -> torch.Tensor:
        """Task ids for an input of ``batch_size`` rows.

        When the model input was expanded (``num_beams`` / ``num_return_sequences`` in
        ``generate`` repeat every row ``k`` times in place), the ids are repeat-interleaved.
        """
        task_ids = self.task_ids
        if task_ids is None:
            raise RuntimeError(
                "CGC-LoRA layer called without task ids: pass task_ids=... to CGCLoraModel.forward / "
                "CGCLoraModel.generate (a LongTensor of shape [batch], or a list of task ids or task "
                "names) instead of calling the wrapped base model directly. If you run the model "
                "under a custom activation-checkpointing function, use the base model's "
                "activation/gradient_checkpointing_enable() so that recomputation sees the task ids."
            )
        n = task_ids.shape[0]
        if batch_size == n:
            return task_ids
        if n > 0 and batch_size % n == 0:
            return task_ids.repeat_interleave(batch_size // n)
        raise RuntimeError(
            f"CGC-LoRA got {n} task ids for an input batch of {batch_size} rows; the batch size must "
            f"be a multiple of the number of task ids"
        )

    def row_weights(
        self,
        gate: CGCGate,
        batch_size: int,
        r_expert: int,
        scaling: float,
        dtype: torch.dtype,
        device: torch.device,
    ) -> torch.Tensor:
        """``scaling * w_{t(row)}`` repeated over each expert's ranks: ``[batch_size, E * r_expert]``.

        Computed on first use within the current :meth:`use` block and then shared by every
        layer that uses the same gate (part of the autograd graph when grad is enabled).
        """
        key = (id(gate), batch_size, r_expert, scaling, dtype, device, torch.is_grad_enabled())
        weights = self._row_weights.get(key)
        if weights is None:
            task_ids = self.for_batch(batch_size).to(device)
            per_row = gate()[task_ids] * scaling  # [batch, E], fp32
            weights = per_row.to(dtype).repeat_interleave(r_expert, dim=-1)
            self._row_weights[key] = weights
        return weights


class CGCGate(nn.Module):
    """Task gate: ``embed(t) -> Linear -> mask non-admissible experts with -inf -> softmax``.

    ``forward()`` returns the weights of every task, ``[n_tasks, E]``; rows sum to 1 and are
    exactly 0 on experts outside ``common ∪ specific(t)``. The projection starts at zero, so
    each task initially mixes its admissible experts uniformly. With a single admissible
    expert per task (``n_common + n_specific == 1``, the LoRA baselines) the weight is the
    constant 1, so the gate's parameters are frozen: there is nothing to learn.
    """

    admissible: torch.Tensor

    def __init__(self, config: CGCLoraConfig) -> None:
        super().__init__()
        self.n_tasks = config.n_tasks
        self.n_experts = config.n_experts
        self.task_embedding = nn.Embedding(config.n_tasks, config.gate_dim)
        self.proj = nn.Linear(config.gate_dim, config.n_experts)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.register_buffer("admissible", admissible_mask(config), persistent=False)
        if config.n_common + config.n_specific == 1:
            self.requires_grad_(False)

    def forward(self, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Gate weights (fp32) of ``task_ids`` (``[len, E]``), or of all tasks (``[n_tasks, E]``)."""
        if task_ids is None:
            embedding = self.task_embedding.weight
            mask = self.admissible
        else:
            embedding = self.task_embedding(task_ids)
            mask = self.admissible[task_ids]
        logits = self.proj(embedding).float()
        logits = logits.masked_fill(~mask, float("-inf"))
        return torch.softmax(logits, dim=-1)

    def extra_repr(self) -> str:
        return f"n_tasks={self.n_tasks}, n_experts={self.n_experts}"


class CGCLoraLinear(nn.Module):
    """A frozen linear layer plus a task-gated mixture of LoRA experts.

    Args:
        base_layer: the ``nn.Linear`` (or transformers ``Conv1D``) to adapt, kept as
            ``self.base_layer`` like PEFT.
        config: the CGC-LoRA config.
        context: the task-id context shared by all layers of the model.
        gate: the gate to use. With ``owns_gate=True`` it is registered as the submodule
            ``gate`` (one gate per layer); otherwise it is only referenced (shared gate,
            registered once on the model) so its parameters are not duplicated in state dicts.
        adapter_dtype: dtype of the expert weights (``None``: the base weight's dtype).
    """

    def __init__(
        self,
        base_layer: nn.Module,
        config: CGCLoraConfig,
        context: TaskContext,
        gate: CGCGate,
        *,
        owns_gate: bool,
        adapter_dtype: torch.dtype | None = torch.float32,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = linear_features(base_layer)
        self.base_layer = base_layer
        # Conv1D stores its weight as [in, out] (PEFT's ``fan_in_fan_out``); the adapter does not care.
        self.fan_in_fan_out = isinstance(base_layer, Conv1D)
        self.n_experts = config.n_experts
        self.r_expert = config.r_expert
        self.scaling = config.scaling
        self.lora_dropout: nn.Module = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()

        weight = base_layer.weight
        factory = {"device": weight.device, "dtype": adapter_dtype or weight.dtype}
        rank = self.n_experts * self.r_expert
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, **factory))
        self.lora_B = nn.Parameter(torch.empty(self.out_features, rank, **factory))
        self.reset_lora_parameters()

        # Plain attributes (not registered): the context is shared state, and a shared gate
        # is registered once by the model.
        self._context = context
        self._gate_ref = (gate,)
        if owns_gate:
            self.gate = gate

    def reset_lora_parameters(self) -> None:
        """PEFT's LoRA init: A kaiming-uniform (like ``nn.Linear``), B zeros (delta starts at 0)."""
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    # PEFT-style passthroughs so code that inspects ``module.weight`` keeps working.
    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias

    def get_gate(self) -> CGCGate:
        return self._gate_ref[0]

    def gate_weights(self) -> torch.Tensor:
        """This layer's gate weights for every task, ``[n_tasks, E]`` (fp32)."""
        return self.get_gate()()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2:
            raise RuntimeError(f"CGCLoraLinear expects a batched input [batch, ..., in], got shape {tuple(x.shape)}")
        result = self.base_layer(x)
        lora_a, lora_b = self.lora_A, self.lora_B
        dtype = lora_a.dtype
        weights = self._context.row_weights(
            self.get_gate(), x.shape[0], self.r_expert, self.scaling, dtype, lora_a.device
        )  # [batch, E * r]: gate weight * scaling per row and rank, zero outside common ∪ specific(t)
        hidden = F.linear(self.lora_dropout(x.to(dtype)), lora_a)  # [batch, ..., E * r]
        hidden = hidden * weights.view(x.shape[0], *([1] * (x.dim() - 2)), weights.shape[-1])
        if result.dtype == hidden.dtype and result.device == hidden.device:
            # result + hidden @ B.T in one kernel: the [.., out] delta is never materialized.
            flat = torch.addmm(
                result.reshape(-1, self.out_features), hidden.reshape(-1, hidden.shape[-1]), lora_b.t()
            )
            return flat.view(result.shape)
        return result + F.linear(hidden, lora_b).to(result.dtype)

    def extra_repr(self) -> str:
        return f"n_experts={self.n_experts}, r_expert={self.r_expert}, scaling={self.scaling:g}"


__all__ = ["LINEAR_TYPES", "CGCGate", "CGCLoraLinear", "TaskContext", "admissible_mask", "linear_features"]
