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

"1 + N" export: for a fixed task ``w_t`` is a constant, hence ``B diag(w_t ⊗ 1_r) A`` restricted
to the admissible experts is an ordinary LoRA of rank ``(n_common + n_specific) * r``; see
:mod:`hammer_core.cgc_lora.export`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .config import CGCLoraConfig


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
    """

    def __init__(self) -> None:
        self.task_ids: torch.Tensor | None = None

    @contextmanager
    def use(self, task_ids: torch.Tensor | None) -> Iterator[None]:
        """Set ``task_ids`` for the duration of the block, then restore the previous value."""
        previous = self.task_ids
        self.task_ids = task_ids
        try:
            yield
        finally:
            self.task_ids = previous

    def clear(self) -> None:
        self.task_ids = None

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


class CGCGate(nn.Module):
    """Task gate: ``embed(t) -> Linear -> mask non-admissible experts with -inf -> softmax``.

    ``forward()`` returns the weights of every task, ``[n_tasks, E]``; rows sum to 1 and are
    exactly 0 on experts outside ``common ∪ specific(t)``. The projection starts at zero, so
    each task initially mixes its admissible experts uniformly.
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
    """A frozen ``nn.Linear`` plus a task-gated mixture of LoRA experts.

    Args:
        base_layer: the linear layer to adapt (kept as ``self.base_layer``, like PEFT).
        config: the CGC-LoRA config.
        context: the task-id context shared by all layers of the model.
        gate: the gate to use. With ``owns_gate=True`` it is registered as the submodule
            ``gate`` (one gate per layer); otherwise it is only referenced (shared gate,
            registered once on the model) so its parameters are not duplicated in state dicts.
        adapter_dtype: dtype of the expert weights (``None``: the base weight's dtype).
    """

    def __init__(
        self,
        base_layer: nn.Linear,
        config: CGCLoraConfig,
        context: TaskContext,
        gate: CGCGate,
        *,
        owns_gate: bool,
        adapter_dtype: torch.dtype | None = torch.float32,
    ) -> None:
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(f"CGCLoraLinear wraps nn.Linear, got {type(base_layer).__name__}")
        self.base_layer = base_layer
        self.in_features = base_layer.in_features
        self.out_features = base_layer.out_features
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
        batch = x.shape[0]
        task_ids = self._context.for_batch(batch).to(self.lora_A.device)
        dtype = self.lora_A.dtype
        # [batch, E] -> [batch, E * r] -> [batch, 1, ..., E * r] (broadcast over the sequence).
        weights = self.gate_weights()[task_ids].to(dtype)
        weights = weights.repeat_interleave(self.r_expert, dim=-1)
        weights = weights.view(batch, *([1] * (x.dim() - 2)), weights.shape[-1])
        hidden = F.linear(self.lora_dropout(x.to(dtype)), self.lora_A)
        delta = F.linear(hidden * weights, self.lora_B) * self.scaling
        return result + delta.to(result.dtype)

    def extra_repr(self) -> str:
        return f"n_experts={self.n_experts}, r_expert={self.r_expert}, scaling={self.scaling:g}"


__all__ = ["CGCGate", "CGCLoraLinear", "TaskContext", "admissible_mask"]
