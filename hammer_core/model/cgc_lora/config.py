"""Configuration of CGC-LoRA (Customized Gate Control LoRA).

CGC-LoRA is a mixture of LoRA experts whose mixing weights are chosen per *task*, following
the Customized Gate Control block of PLE (Progressive Layered Extraction). Every adapted
linear layer ``W0`` gets ``E = n_common + n_tasks * n_specific`` rank-``r`` experts
``(A_i, B_i)``; expert order is the ``n_common`` shared experts first, then the
``n_specific`` experts of task 0, of task 1, and so on. For an input ``x`` of task ``t``::

    h = W0 x + (alpha / r) * sum_{i in common ∪ specific(t)} w_{t,i} B_i A_i x
    w_t = softmax over the admissible experts of G(embed(t))

where ``embed`` is a learned task embedding of size ``gate_dim`` and ``G`` a linear map to
``E`` logits; experts outside ``common ∪ specific(t)`` get weight exactly 0.

"1 + N" export: for a fixed task the gate weights are constants, so task ``t``'s admissible
experts collapse into one ordinary LoRA of rank ``(n_common + n_specific) * r`` with the
weights and the scaling baked into ``A``. One base model plus N standard PEFT adapters then
reproduces the multi-task model exactly (see :mod:`hammer_core.model.cgc_lora.export`).

Ablation baselines are special cases of the same layer, built from the same hyper-parameters
by :meth:`CGCLoraConfig.for_variant`; all three export ``N`` PEFT LoRAs of the same rank
``R = (n_common + n_specific) * r_expert`` and so cost the same to serve:

* ``"cgc"`` -- CGC-LoRA as configured.
* ``"multitask_lora"`` -- one plain LoRA shared by every task: a single common expert of
  rank ``R`` (``n_common=1, n_specific=0, r_expert=R``). Its gate weight is identically 1.
* ``"per_task_lora"`` -- one independent plain LoRA per task: a single specific expert of
  rank ``R`` per task (``n_common=0, n_specific=1, r_expert=R``); again the weight is 1.

``alpha`` is kept, so a baseline's scaling is ``alpha / R``: exactly CGC-LoRA's effective
scaling at init, when the gate mixes the ``K = n_common + n_specific`` admissible experts
uniformly (``(alpha / r) * (1 / K) = alpha / R``). Trainable parameters per adapted layer
(``E`` experts of rank ``r`` cost ``E * r * (in + out)``): CGC ``(n_common + T * n_specific) * r``
ranks, multi-task LoRA ``R``, per-task LoRA ``T * R``.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, get_args

ALL_LINEAR = "all-linear"

Variant = Literal["cgc", "multitask_lora", "per_task_lora"]
VARIANTS: tuple[str, ...] = get_args(Variant)
_BASELINE_SHAPES = {"multitask_lora": (1, 0), "per_task_lora": (0, 1)}  # (n_common, n_specific)


@dataclass
class CGCLoraConfig:
    """Hyper-parameters of a CGC-LoRA adapter.

    Args:
        tasks: task names; a task's id is its index in this list.
        n_common: experts shared by all tasks.
        n_specific: experts owned by each task.
        r_expert: rank of every expert.
        alpha: LoRA alpha; the delta is scaled by ``alpha / r_expert``.
        dropout: dropout on the adapter input (``0.0`` disables it).
        target_modules: which linear modules (``nn.Linear``, or transformers' ``Conv1D`` in the
            GPT-2 family) to adapt: a list of module-name suffixes (``["q_proj", "v_proj"]``), a
            regex matched with :func:`re.fullmatch` against the full module name, or
            ``"all-linear"`` (every linear module except the output head).
        gate_dim: size of the task embedding that feeds the gate.
        shared_gate: one gate shared by all adapted layers (``True``) or one gate per layer.
        variant: ``"cgc"``, or the ablation baseline this config encodes (``"multitask_lora"``
            / ``"per_task_lora"``, see :meth:`for_variant`); recorded in saved checkpoints.
    """

    tasks: list[str]
    n_common: int = 2
    n_specific: int = 1
    r_expert: int = 4
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] | str = ALL_LINEAR
    gate_dim: int = 16
    shared_gate: bool = True
    variant: Variant = "cgc"

    def __post_init__(self) -> None:
        if isinstance(self.tasks, str) or not isinstance(self.tasks, (list, tuple)):
            raise ValueError(f"tasks must be a list of task names, got {self.tasks!r}")
        self.tasks = list(self.tasks)
        if not self.tasks:
            raise ValueError("tasks must contain at least one task name")
        for name in self.tasks:
            if not isinstance(name, str) or not name:
                raise ValueError(f"every task name must be a non-empty string, got {name!r}")
        duplicates = sorted({name for name in self.tasks if self.tasks.count(name) > 1})
        if duplicates:
            raise ValueError(f"task names must be unique, duplicated: {duplicates}")

        for name in ("n_common", "n_specific", "r_expert", "gate_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an int, got {value!r}")
        if self.n_common < 0 or self.n_specific < 0:
            raise ValueError(
                f"n_common and n_specific must be >= 0, got n_common={self.n_common}, "
                f"n_specific={self.n_specific}"
            )
        if self.n_common + self.n_specific == 0:
            raise ValueError("n_common + n_specific must be >= 1: every task needs at least one expert")
        if self.r_expert <= 0:
            raise ValueError(f"r_expert must be positive, got {self.r_expert}")
        if self.gate_dim <= 0:
            raise ValueError(f"gate_dim must be positive, got {self.gate_dim}")

        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)):
            raise ValueError(f"alpha must be a number, got {self.alpha!r}")
        self.alpha = float(self.alpha)
        if not math.isfinite(self.alpha) or self.alpha <= 0:
            raise ValueError(f"alpha must be a positive finite number, got {self.alpha}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)):
            raise ValueError(f"dropout must be a number, got {self.dropout!r}")
        self.dropout = float(self.dropout)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not isinstance(self.shared_gate, bool):
            raise ValueError(f"shared_gate must be a bool, got {self.shared_gate!r}")

        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {list(VARIANTS)}, got {self.variant!r}")
        if self.variant in _BASELINE_SHAPES:
            n_common, n_specific = _BASELINE_SHAPES[self.variant]
            if (self.n_common, self.n_specific) != (n_common, n_specific):
                raise ValueError(
                    f"variant {self.variant!r} needs n_common={n_common}, n_specific={n_specific}, got "
                    f"n_common={self.n_common}, n_specific={self.n_specific}; build it with "
                    f"CGCLoraConfig.for_variant({self.variant!r}, ...)"
                )

        if isinstance(self.target_modules, str):
            if self.target_modules != ALL_LINEAR:
                try:
                    re.compile(self.target_modules)
                except re.error as exc:
                    raise ValueError(f"target_modules regex {self.target_modules!r} is invalid: {exc}") from exc
        elif isinstance(self.target_modules, (list, tuple)):
            self.target_modules = list(self.target_modules)
            if not self.target_modules:
                raise ValueError("target_modules must not be empty")
            for name in self.target_modules:
                if not isinstance(name, str) or not name:
                    raise ValueError(f"target_modules entries must be non-empty strings, got {name!r}")
        else:
            raise ValueError(
                f"target_modules must be a list of module-name suffixes, a regex string or "
                f"{ALL_LINEAR!r}, got {self.target_modules!r}"
            )

    @classmethod
    def for_variant(cls, variant: str, *, tasks: list[str], **hyper: Any) -> CGCLoraConfig:
        """CGC-LoRA (``"cgc"``) or an ablation baseline, from the same hyper-parameters.

        ``hyper`` are the CGC-LoRA fields (``n_common``, ``n_specific``, ``r_expert``, ``alpha``,
        ``dropout``, ``target_modules``, ``gate_dim``, ``shared_gate``). The baselines keep the
        per-task rank ``R = (n_common + n_specific) * r_expert`` and ``alpha``:

        * ``"multitask_lora"``: ``n_common=1, n_specific=0, r_expert=R`` (one LoRA for all tasks);
        * ``"per_task_lora"``: ``n_common=0, n_specific=1, r_expert=R`` (one LoRA per task).
        """
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {list(VARIANTS)}, got {variant!r}")
        if "variant" in hyper:
            raise ValueError("pass the variant as the first argument of for_variant, not as a keyword")
        config = cls(tasks=tasks, **hyper)  # validates the CGC hyper-parameters first
        if variant == "cgc":
            return config
        n_common, n_specific = _BASELINE_SHAPES[variant]
        data = config.to_dict()
        data.update(n_common=n_common, n_specific=n_specific, r_expert=config.export_rank, variant=variant)
        return cls(**data)

    # ----------------------------------------------------------------------------- derived
    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    @property
    def n_experts(self) -> int:
        """``E = n_common + n_tasks * n_specific``."""
        return self.n_common + self.n_tasks * self.n_specific

    @property
    def scaling(self) -> float:
        """``alpha / r_expert``."""
        return self.alpha / self.r_expert

    @property
    def export_rank(self) -> int:
        """Rank of one task's collapsed LoRA: ``(n_common + n_specific) * r_expert``."""
        return (self.n_common + self.n_specific) * self.r_expert

    def task_index(self, task: int | str) -> int:
        """Task id of ``task`` (a name or an id), with a clear error when unknown."""
        if isinstance(task, str):
            try:
                return self.tasks.index(task)
            except ValueError:
                raise ValueError(f"unknown task {task!r}; known tasks: {self.tasks}") from None
        if isinstance(task, bool) or not isinstance(task, numbers.Integral):
            raise ValueError(f"a task must be a name or an int id, got {task!r}")
        task = int(task)
        if not 0 <= task < self.n_tasks:
            raise ValueError(f"task id {task} out of range [0, {self.n_tasks}); tasks: {self.tasks}")
        return task

    def admissible_experts(self, task: int | str) -> list[int]:
        """Expert indices task ``task`` may use: the common experts, then its own specific ones."""
        t = self.task_index(task)
        start = self.n_common + t * self.n_specific
        return list(range(self.n_common)) + list(range(start, start + self.n_specific))

    # ------------------------------------------------------------------------ serialization
    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict (round-trips through :meth:`from_dict`)."""
        data = asdict(self)
        data["tasks"] = list(self.tasks)
        if isinstance(self.target_modules, list):
            data["target_modules"] = list(self.target_modules)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CGCLoraConfig:
        """Build a config from :meth:`to_dict` output; unknown keys raise ``ValueError``."""
        if not isinstance(data, dict):
            raise ValueError(f"expected a dict, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown CGCLoraConfig keys: {unknown}; known keys: {sorted(known)}")
        if "tasks" not in data:
            raise ValueError("CGCLoraConfig dict is missing 'tasks'")
        return cls(**data)


__all__ = ["ALL_LINEAR", "VARIANTS", "CGCLoraConfig", "Variant"]
