"""Which rows train together: task-balanced, length-grouped, deterministic batch plans.

Training draws *global micro-batches* of ``G = world_size * per_process_batch`` rows from one
seeded stream; rank ``r`` of ``W`` takes the ``r``-th contiguous slice of each (see
:func:`rank_slice`). The stream is a function of the seed and ``G`` only, so 2 processes with
batch ``b`` see exactly the rows 1 process with batch ``2b`` sees, and a resumed run sees the
rows the interrupted run would have seen (its position is ``(epoch, index)``).

One *epoch* of the stream is built from scratch out of ``(seed, epoch)``:

1. **Task quotas (temperature sampling).** With ``n_t`` rows in task ``t`` the epoch holds
   ``E = ceil(N / G) * G`` samples, task ``t`` getting ``E * p_t`` of them (largest-remainder
   rounding, every task at least one) with ``p_t ∝ n_t ** (1 / T)``. ``T = 1`` keeps the
   natural mix, ``T → ∞`` is uniform over tasks; small tasks are up-sampled (a task's rows are
   cycled through fresh permutations), large ones down-sampled.
2. **Mixed-task order.** All samples are shuffled together, so micro-batches mix tasks (the
   CGC-LoRA gate takes one task id per row).
3. **Length grouping** (optional). Consecutive windows of ``window * G`` samples are sorted by
   length and cut into micro-batches, so rows in a micro-batch have similar lengths (little
   padding); then the order of the micro-batches is shuffled, so lengths do not follow a
   pattern over the epoch.

Everything here is pure (NumPy ``PCG64`` generators seeded from ``(seed, epoch, purpose)``),
so the plan is reproducible across machines and processes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# Purposes of the per-epoch generators (part of the seed, so they never share a stream).
_TASK_ROWS, _MIX, _BATCH_ORDER = 1, 2, 3


def task_probabilities(sizes: Mapping[str, int], temperature: float) -> dict[str, float]:
    """``p_t ∝ n_t ** (1 / T)`` over the tasks with rows (sorted by name)."""
    if temperature <= 0 or not math.isfinite(temperature):
        raise ValueError(f"temperature must be a positive finite number, got {temperature}")
    live = {t: n for t, n in sorted(sizes.items()) if n > 0}
    if not live:
        raise ValueError("no task has any rows")
    weights = {t: float(n) ** (1.0 / temperature) for t, n in live.items()}
    total = sum(weights.values())
    return {t: w / total for t, w in weights.items()}


def task_quotas(sizes: Mapping[str, int], temperature: float, total: int) -> dict[str, int]:
    """Split ``total`` samples over tasks by :func:`task_probabilities` (largest remainder).

    Every task with rows gets at least one sample when ``total`` allows it; the quotas sum to
    ``total`` exactly. Ties are broken by task name, so the split is deterministic.
    """
    probs = task_probabilities(sizes, temperature)
    exact = {t: p * total for t, p in probs.items()}
    quotas = {t: int(math.floor(x)) for t, x in exact.items()}
    if total >= len(quotas):
        for t in quotas:  # no task starves
            quotas[t] = max(quotas[t], 1)
    left = total - sum(quotas.values())
    by_remainder = sorted(quotas, key=lambda t: (-(exact[t] - math.floor(exact[t])), t))
    while left > 0:  # hand out what flooring left over, largest remainders first
        for t in by_remainder[:left]:
            quotas[t] += 1
        left = total - sum(quotas.values())
    while left < 0:  # take back what the minimum of one added, smallest remainders first
        t = next(t for t in reversed(by_remainder) if quotas[t] > 1)
        quotas[t] -= 1
        left += 1
    return quotas


def _rng(seed: int, epoch: int, purpose: int, extra: int = 0) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch, purpose, extra])))


def _take_cycled(rows: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` rows: consecutive fresh permutations of ``rows``, truncated (up- or down-sampling)."""
    reps = -(-k // len(rows))
    return np.concatenate([rng.permutation(rows) for _ in range(reps)])[:k]


@dataclass(frozen=True)
class SamplingSpec:
    """How the stream is built. ``global_batch`` is rows per global micro-batch (all ranks)."""

    global_batch: int
    seed: int = 0
    temperature: float = 1.0
    group_by_length: bool = True
    window: int = 8

    def __post_init__(self) -> None:
        if self.global_batch < 1 or self.window < 1:
            raise ValueError(f"global_batch and window must be >= 1, got {self.global_batch}, {self.window}")


def epoch_plan(tasks: Sequence[str], lengths: Sequence[int], spec: SamplingSpec, epoch: int) -> list[list[int]]:
    """The global micro-batches (lists of row indices) of epoch ``epoch``; all have ``G`` rows."""
    if len(tasks) != len(lengths):
        raise ValueError(f"{len(tasks)} task labels for {len(lengths)} rows")
    if not tasks:
        raise ValueError("no rows to sample from")
    g = spec.global_batch
    by_task: dict[str, list[int]] = {}
    for i, t in enumerate(tasks):
        by_task.setdefault(t, []).append(i)
    names = sorted(by_task)
    n_batches = -(-len(tasks) // g)
    quotas = task_quotas({t: len(by_task[t]) for t in names}, spec.temperature, n_batches * g)
    picked = np.concatenate([
        _take_cycled(np.asarray(by_task[t], dtype=np.int64), quotas[t], _rng(spec.seed, epoch, _TASK_ROWS, k))
        for k, t in enumerate(names) if quotas[t] > 0
    ])
    order = _rng(spec.seed, epoch, _MIX).permutation(picked)
    if spec.group_by_length:
        lens = np.asarray(lengths, dtype=np.int64)
        span = spec.window * g
        order = np.concatenate([
            chunk[np.argsort(lens[chunk], kind="stable")]
            for chunk in (order[i: i + span] for i in range(0, len(order), span))
        ])
    batches = order.reshape(n_batches, g)
    if spec.group_by_length:
        batches = batches[_rng(spec.seed, epoch, _BATCH_ORDER).permutation(n_batches)]
    return [b.tolist() for b in batches]


def rank_slice(batch: Sequence[int], rank: int, world_size: int) -> list[int]:
    """Rank ``rank``'s contiguous share of a global micro-batch (sizes differ by at most 1)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} out of range for world size {world_size}")
    n = len(batch)
    start, stop = rank * n // world_size, (rank + 1) * n // world_size
    return list(batch[start:stop])


@dataclass
class Position:
    """Where the stream stands: the next micro-batch is ``epoch_plan(..., epoch)[index]``."""

    epoch: int = 0
    index: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}


class BatchStream:
    """Endless global micro-batches from a resumable :class:`Position`.

    ``next()`` returns the next global micro-batch and advances the position; save
    ``stream.position.to_dict()`` in a checkpoint and pass it back to resume exactly there.
    """

    def __init__(self, tasks: Sequence[str], lengths: Sequence[int], spec: SamplingSpec,
                 position: Position | None = None) -> None:
        self.tasks, self.lengths, self.spec = list(tasks), list(lengths), spec
        self.position = Position(**(position.to_dict() if position else {}))
        self._epoch: int | None = None
        self._plan: list[list[int]] = []

    def _plan_for(self, epoch: int) -> list[list[int]]:
        if self._epoch != epoch:
            self._plan, self._epoch = epoch_plan(self.tasks, self.lengths, self.spec, epoch), epoch
        return self._plan

    def next(self) -> list[int]:
        plan = self._plan_for(self.position.epoch)
        if self.position.index >= len(plan):
            self.position = Position(self.position.epoch + 1, 0)
            plan = self._plan_for(self.position.epoch)
        batch = plan[self.position.index]
        self.position = Position(self.position.epoch, self.position.index + 1)
        return batch

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            yield self.next()
