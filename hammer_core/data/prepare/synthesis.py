"""The irrelevance synthesis bookkeeping of the prepare stage: the pass-1 facts of each split
(:class:`_Facts`), the global choice of the rows to synthesize from (:func:`_plan_synthesis`),
the source rows kept for pass 2 (:class:`_Sources`) and pass 2's tasks (:func:`_synth_tasks`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from operator import attrgetter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from hammer_core.data.irrelevance import HARD_NEGATIVE, PLAIN_IRRELEVANCE, Eligibility, ToolPool, plan_counts, \
    ranks, select_rows
from hammer_core.data.prepare import blockio
from hammer_core.data.prepare.rows import SPLITS, Analysis

KEEP_INPUT_BYTES = 64 << 20  # inputs up to this decoded size are kept in memory between the passes

Plans = dict[int, tuple[str, tuple[str, list[str] | None]]]  # input row -> (split, (variant, replacements))


def _plan_synthesis(facts: dict[str, "_Facts"], p: Any, seed: int, pool: ToolPool | None
                    ) -> tuple[Plans, dict[str, Any]]:
    """The rows to synthesize from, by input position, and the irrelevance summary."""
    plans: Plans = {}
    summary = {}
    for split in SPLITS:
        f = facts[split]
        n_plain, n_hard = plan_counts(f.n, f.no_call, p.irrelevance_ratio, p.hard_negative_ratio)
        tools_of = (lambda j, f=f: [pool.tools[d] for d in f.tools[j]]) if pool is not None else None
        chosen = select_rows(f.ids, f.elig, n_plain, n_hard, seed, split, pool, tools_of, f.ranked())
        positions = np.concatenate(f.index) if f.index else np.zeros(0, np.int64)
        for j, (variant, reps) in chosen.items():
            plans[int(positions[j])] = (split, (variant, None if reps is None else [t.text for t in reps]))
        made = Counter(v for v, _ in chosen.values())
        summary[split] = {"asked": {"irrelevance": n_plain, "hard_negative": n_hard},
                          "made": {"irrelevance": made["irrelevance"], "hard_negative": made["hard_negative"]},
                          "eligible": {"irrelevance": f.eligible[PLAIN_IRRELEVANCE],
                                       "hard_negative": f.eligible[HARD_NEGATIVE]}}
    return plans, summary


def _synth_tasks(source_blocks: Iterator[tuple[np.ndarray, pa.Table]], plans: Plans) -> Iterator[tuple]:
    """Blocks of :data:`~hammer_core.data.prepare.blockio.BLOCK_ROWS` source rows to synthesize
    from, in input order, with their plans (``source_blocks``: (input positions, rows),
    ascending, holding every planned row)."""
    wanted = np.array(sorted(plans), dtype=np.int64)
    buf: list[pa.Table] = []
    meta: list[tuple[str, tuple[str, list[str] | None]]] = []
    for pos, table in source_blocks:
        lo, hi = np.searchsorted(wanted, [pos[0], pos[-1] + 1]) if len(pos) else (0, 0)
        if hi > lo:
            sel = wanted[lo:hi]
            buf.append(table.take(pa.array(np.searchsorted(pos, sel))))
            meta.extend(plans[int(j)] for j in sel)
        while len(meta) >= blockio.BLOCK_ROWS:
            yield _synth_task(buf, meta, blockio.BLOCK_ROWS)
            buf, meta = [pa.concat_tables(buf).slice(blockio.BLOCK_ROWS)], meta[blockio.BLOCK_ROWS:]
    if meta:
        yield _synth_task(buf, meta, len(meta))


def _synth_task(buf: list[pa.Table], meta: list, n: int) -> tuple:
    table = pa.concat_tables(buf).slice(0, n).combine_chunks()
    return ("synthesized", table, [s for s, _ in meta[:n]], [plan for _, plan in meta[:n]])


class _Facts:
    """Pass-1 analysis of one split, accumulated over blocks, with the rows' selection ranks
    (:func:`hammer_core.data.irrelevance.ranks`) for each synthesized variant the recipe asks for."""

    def __init__(self, seed: int, split: str, variants: Sequence[str]) -> None:
        self.seed, self.split = seed, split
        self.index: list[np.ndarray] = []
        self.ids: list[str] = []
        self.elig: list[Eligibility] = []
        self.tools: list[list[int]] = []
        self.no_call = 0
        self.ranks: dict[str, list[np.ndarray]] = {v: [] for v in variants}
        self.eligible: Counter = Counter()  # rows eligible for each variant (all variants)

    @property
    def n(self) -> int:
        return len(self.ids)

    def add(self, a: Analysis) -> None:
        self.index.append(a.index)
        self.ids.extend(a.ids)
        self.elig.extend(a.elig)
        self.no_call += a.no_call
        if a.tools is not None:
            self.tools.extend(a.tools)
        for variant, flag in _ELIGIBLE.items():
            self.eligible[variant] += sum(map(attrgetter(flag), a.elig))
        for variant, parts in self.ranks.items():  # made with the ids' other hashes in C, or here
            parts.append(a.ranks[variant] if a.ranks is not None
                         else ranks(self.seed, rank_purpose(variant, self.split), a.ids))

    def ranked(self) -> dict[str, np.ndarray]:
        return {v: np.concatenate(parts) if parts else np.zeros(0, np.uint64) for v, parts in self.ranks.items()}


def rank_purpose(variant: str, split: str) -> str:
    """The purpose of the selection ranks of ``variant`` in ``split`` (:func:`ranks`)."""
    return f"{variant}:{split}"


_ELIGIBLE = {PLAIN_IRRELEVANCE: "plain", HARD_NEGATIVE: "hard_negative"}  # Eligibility flag of each variant


class _Sources:
    """The source rows pass 2 will need, kept from pass 1 so that it does not read the input
    again. An input whose decoded size is at most :data:`KEEP_INPUT_BYTES` is kept whole.
    A larger one: each block's rows *likely* to be selected -- eligible and ranked below a
    threshold set from the split's running counts with a margin (selection takes the
    best-ranked eligible rows, and ranks are uniform hashes) -- while they fit in
    :data:`KEEP_INPUT_BYTES`. If the final selection needs a row that was not kept (a corpus
    whose later blocks differ, the memory bound), pass 2 reads the input again: only the
    speed depends on this, never the output."""

    MARGIN = {PLAIN_IRRELEVANCE: 1.15, HARD_NEGATIVE: 2.0}  # hard negatives: some candidates find no replacement

    def __init__(self, path: Path, decoded_bytes: int, ratio: float, hard_ratio: float) -> None:
        self.path, self.keep_all = path, decoded_bytes <= KEEP_INPUT_BYTES
        self.ratio, self.hard_ratio = ratio, hard_ratio
        self.kept: list[tuple[np.ndarray, pa.Table]] = []  # (input positions, rows)
        self.bytes = 0
        self.complete = True  # False once the memory bound dropped what was kept

    def add(self, start: int, table: pa.Table, analysis: dict[str, Analysis], facts: dict[str, _Facts]) -> None:
        if self.keep_all:
            self.kept.append((np.arange(start, start + table.num_rows, dtype=np.int64), table))
            return
        if not self.complete:
            return
        local: list[np.ndarray] = []
        for split, a in analysis.items():
            f = facts[split]
            n_plain, n_hard = plan_counts(f.n, f.no_call, self.ratio, self.hard_ratio)
            for variant, need in ((PLAIN_IRRELEVANCE, n_plain), (HARD_NEGATIVE, n_hard)):
                if not need:  # (a variant with rows to make has its ranks: its share is > 0)
                    continue
                share = min(1.0, self.MARGIN[variant] * need / max(1, f.eligible[variant]) + 0.005)
                below = np.flatnonzero(f.ranks[variant][-1] < np.uint64(min(share * 2.0 ** 64, 2.0 ** 64 - 4096)))
                flag = _ELIGIBLE[variant]
                hit = [j for j in below.tolist() if getattr(a.elig[j], flag)]
                if hit:
                    local.append(a.index[hit] - start)
        if not local:
            return
        rows = np.unique(np.concatenate(local))
        taken = table.take(pa.array(rows))
        self.bytes += taken.nbytes
        if self.bytes > KEEP_INPUT_BYTES:
            self.complete, self.kept = False, []
            return
        self.kept.append((rows + start, taken))

    def blocks(self, plans: "Plans") -> Iterator[tuple[np.ndarray, pa.Table]]:
        """(input positions, rows) holding every planned source row, in input order."""
        if self.complete and self.kept:
            wanted = np.fromiter(plans, dtype=np.int64, count=len(plans))
            if np.isin(wanted, np.concatenate([pos for pos, _ in self.kept])).all():
                yield from self.kept
                return
        self.kept = []  # read again: free the memory first
        for start, t in blockio._blocks(self.path):
            yield np.arange(start, start + t.num_rows, dtype=np.int64), t

