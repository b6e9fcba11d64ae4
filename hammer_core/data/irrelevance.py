"""Irrelevance synthesis (Hammer): rows whose right function is missing, labelled "no call".

Plain irrelevance (Hammer's construction)
    From a sampled row with calls, every ground-truth function is removed from the candidate
    tools and the target becomes ``[]``; the other candidates stay as distractors. A row is
    not eligible when nothing would remain, or when a remaining candidate could still serve
    the query -- same name after normalization as a removed one, or the same description and
    parameter set -- because then "no call" would be a wrong label.

Hard negatives (beyond Hammer)
    Each removed function is *replaced*, at its position, by a different function from the
    corpus's own tool pool that is lexically close to it: the most similar pool tool by
    cosine similarity of IDF-weighted word sets (name split at ``_``/``.``/camelCase, plus
    description), within ``[MIN_SIMILARITY, MAX_SIMILARITY)``. So the model learns to refuse
    near misses (``get_weather`` is gone, ``get_air_quality`` is there), not only rows where
    nothing is related. Guards keep the label right: the replacement must not be able to serve
    the query by the same rule as above (normalized name, or description + parameter set), must
    not already be among the row's tools, and must stay below ``MAX_SIMILARITY`` (near-copies
    with reworded descriptions are not negatives). Rows whose remaining tools could serve the
    query are skipped, as for plain irrelevance; a row with a single (gold) tool is eligible.

Shares and selection
    ``ratio`` is the target share of "no call" rows in the final mix (rows already labelled
    ``[]`` count), ``hard_negative_ratio`` (<= ``ratio``) the share of that mix made of hard
    negatives; the rest of the synthesized rows are plain. Rows are ranked by a hash of
    ``(seed, purpose, row id)``; hard negatives take the best-ranked eligible rows, plain rows
    the best-ranked eligible rows among the others, so each source row yields at most one
    synthesized row and the choice depends only on the rows and the seed -- never on batch
    size, order of processing or worker count. When too few rows are eligible, fewer rows are
    made (the summary reports the share reached).

Lineage: a synthesized row has id ``<parent>~irr`` (variant ``irrelevance``) or ``<parent>~hn``
(variant ``hard_negative``) and ``parent_id`` = the source row.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hammer_core.data.masking import CompiledTool, ToolCache, parse_json, row_keys

PLAIN_IRRELEVANCE = "irrelevance"  # the variant name of Hammer's plain irrelevance rows
HARD_NEGATIVE = "hard_negative"
SUFFIX = {PLAIN_IRRELEVANCE: "~irr", HARD_NEGATIVE: "~hn"}
MIN_SIMILARITY = 0.2  # a hard negative must be at least this close to the removed function
MAX_SIMILARITY = 0.8  # ... and less than this (closer is a reworded copy, not a negative)
NEIGHBOURS = 8  # candidates kept per pool tool, best first


# --------------------------------------------------------------------------- eligibility

@dataclass(frozen=True, slots=True)
class Eligibility:
    """What a row allows: ``plain`` (Hammer's irrelevance) and ``hard_negative`` *before* a
    replacement is found; ``gold`` are the positions of the ground-truth tools."""

    plain: bool
    hard_negative: bool
    gold: tuple[int, ...]


NOT_ELIGIBLE = Eligibility(False, False, ())


def can_serve(candidate: CompiledTool, removed: Iterable[CompiledTool]) -> bool:
    """Could ``candidate`` answer a query meant for one of ``removed``? (same normalized name,
    or the same description and parameter set)."""
    return any(candidate.norm_name == r.norm_name or candidate.signature == r.signature for r in removed)


def eligibility(tools: Sequence[CompiledTool], calls: Sequence[dict[str, Any]]) -> Eligibility:
    """Eligibility of a row with compiled ``tools`` and parsed ``calls``."""
    if not calls:
        return NOT_ELIGIBLE
    gold_names = {c["name"] for c in calls}
    gold = tuple([i for i, t in enumerate(tools) if t.name in gold_names])
    if len(gold) == len(tools):  # nothing would remain: only a hard negative can be made
        return Eligibility(plain=False, hard_negative=bool(gold), gold=gold)
    norms = {tools[i].norm_name for i in gold}
    sigs = {tools[i].signature for i in gold}
    for t in tools:
        if t.name not in gold_names and (t.norm_name in norms or t.signature in sigs):
            return NOT_ELIGIBLE  # a remaining candidate could still serve the query
    return Eligibility(plain=True, hard_negative=bool(gold), gold=gold)


def synthesize_tools(tools: Sequence[CompiledTool], gold: Sequence[int],
                     replacements: Sequence[CompiledTool] | None = None) -> str:
    """The ``tools`` JSON of a synthesized row: gold tools removed, or replaced in place."""
    out, reps = [], iter(replacements or ())
    for i, t in enumerate(tools):
        if i not in gold:
            out.append(t.text)
        elif replacements is not None:
            out.append(next(reps).text)
    return "[" + ",".join(out) + "]"


def synthesized_row(row: dict[str, Any], variant: str, tools_text: str) -> dict[str, Any]:
    """A synthesized canonical row ("no call") from its source ``row``."""
    return {**row, "id": row["id"] + SUFFIX[variant], "tools": tools_text, "calls": "[]",
            "parent_id": row.get("parent_id") or row["id"], "variant": variant}


def strip_gold_tools(row: dict[str, Any], cache: ToolCache | None = None) -> dict[str, Any] | None:
    """The plain irrelevance version of canonical ``row``, or None if it is not eligible."""
    cache = cache or ToolCache()
    tools = cache.split(row["tools"])
    e = eligibility(tools, parse_json(row["calls"]))
    return synthesized_row(row, PLAIN_IRRELEVANCE, synthesize_tools(tools, e.gold)) if e.plain else None


# --------------------------------------------------------------------------- how many, which

def count_for_ratio(n_rows: int, n_no_call: int, ratio: float) -> int:
    """How many rows to add so that no-call rows are ``ratio`` of ``n_rows + added``."""
    if ratio <= 0:
        return 0
    need = (ratio * n_rows - n_no_call) / (1.0 - ratio)
    return max(0, round(need))


def plan_counts(n_rows: int, n_no_call: int, ratio: float, hard_negative_ratio: float) -> tuple[int, int]:
    """(plain rows, hard negatives) to synthesize: no-call rows are ``ratio`` of the final mix,
    hard negatives ``hard_negative_ratio`` of it (capped by what ``ratio`` leaves)."""
    added = count_for_ratio(n_rows, n_no_call, ratio)
    hard = min(added, round(hard_negative_ratio * (n_rows + added)))
    return added - hard, hard


def ranks(seed: int, purpose: str, row_ids: Sequence[str]) -> np.ndarray:
    """The selection order of rows (smaller first): a hash of ``(seed, purpose, id)``."""
    return row_keys(seed, row_ids, purpose)


def rank_order(rank: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """Indices of the eligible rows, best-ranked first (ties, which need a hash collision,
    broken by position)."""
    idx = np.flatnonzero(eligible)
    return idx[np.argsort(rank[idx], kind="stable")]  # stable: equal ranks keep their (position) order


# --------------------------------------------------------------------------- hard negatives

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_WORD = re.compile(r"[a-z0-9]+")


def lexical_words(tool: CompiledTool) -> set[str]:
    """The words of a tool's name (split at ``_``, ``.``, camelCase) and description."""
    desc = tool.spec.get("description", "")
    text = _CAMEL.sub(" ", tool.name) + " " + (desc if isinstance(desc, str) else "")
    return set(_WORD.findall(text.lower()))


class ToolPool:
    """The distinct tools of a corpus, with a lexical nearest-neighbour index."""

    def __init__(self, tools: Iterable[CompiledTool] = ()) -> None:
        self.tools: dict[int, CompiledTool] = {}
        self._index: Any = None
        self._neighbours: dict[int, list[tuple[int, float]]] = {}
        for t in tools:
            self.add(t)

    def add(self, tool: CompiledTool) -> None:
        if tool.digest not in self.tools:
            self.tools[tool.digest] = tool
            self._index = None
            self._neighbours.clear()

    def __len__(self) -> int:
        return len(self.tools)

    def neighbours(self, digest: int) -> list[tuple[int, float]]:
        """Pool tools in ``[MIN_SIMILARITY, MAX_SIMILARITY)`` of tool ``digest``, closest first
        (at most :data:`NEIGHBOURS`), as ``(digest, similarity)``."""
        if digest not in self._neighbours:
            self.prefetch([digest])
        return self._neighbours.get(digest, [])

    def _build_index(self) -> Any:
        """Digests (sorted), squared norms, the matrix of shared words (dense when small)."""
        from scipy import sparse

        digests = sorted(self.tools)  # a fixed order: the index does not depend on insertion
        vocab: dict[str, int] = {}
        rows, cols = [], []
        for i, d in enumerate(digests):
            for w in sorted(lexical_words(self.tools[d])):
                rows.append(i)
                cols.append(vocab.setdefault(w, len(vocab)))
        n = len(digests)
        rows_a, cols_a = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
        df = np.bincount(cols_a, minlength=len(vocab))
        # IDF weights on a 1/64 grid: every dot product below is then an exact sum, whatever
        # the summation order (BLAS threads), so the neighbours are the same on any machine.
        idf = np.round((np.log((1 + n) / (1 + df)) + 1.0) * 64) / 64
        weights = idf[cols_a]
        sq = np.bincount(rows_a, weights=weights * weights, minlength=n)  # squared norms
        shared = df[cols_a] > 1  # a word of one tool only adds to its norm, never to a dot product
        _, cols_s = np.unique(cols_a[shared], return_inverse=True)
        x = sparse.csr_matrix((weights[shared], (rows_a[shared], cols_s)), dtype=np.float64,
                              shape=(n, int(cols_s.max()) + 1 if len(cols_s) else 1))
        fill = x.nnz / max(1, x.shape[0] * x.shape[1])
        dense = x.toarray() if fill > 0.02 and x.shape[0] * x.shape[1] <= 20_000_000 else None
        position = {d: i for i, d in enumerate(digests)}
        return digests, position, np.maximum(sq, 1e-12), x, dense

    def prefetch(self, digests: Iterable[int]) -> None:
        """Compute the neighbours of pool tools ``digests`` (in chunks; cached)."""
        todo = [d for d in dict.fromkeys(digests) if d not in self._neighbours and d in self.tools]
        if not todo:
            return
        if self._index is None:
            self._index = self._build_index()
        pool, position, sq, x, dense = self._index
        n = len(pool)
        k = min(NEIGHBOURS, n - 1)
        step = max(1, 4_000_000 // n)
        for start in range(0, len(todo), step):
            chunk = todo[start:start + step]
            q = np.array([position[d] for d in chunk])
            dots = dense[q] @ dense.T if dense is not None else (x[q] @ x.T).toarray()
            sims = dots / np.sqrt(np.outer(sq[q], sq))
            r = np.arange(len(q))
            sims[r, q] = -1.0  # not its own neighbour
            sims[(sims < MIN_SIMILARITY) | (sims >= MAX_SIMILARITY)] = -1.0
            top = (np.argpartition(-sims, k - 1, axis=1)[:, :k] if 0 < k < n
                   else np.tile(np.arange(n), (len(q), 1)))
            for d, s, cand in zip(chunk, sims, top):
                cand = cand[s[cand] >= 0]
                cand = cand[np.lexsort((cand, -s[cand]))]
                self._neighbours[d] = [(pool[j], float(s[j])) for j in cand.tolist()]

    def replacements(self, tools: Sequence[CompiledTool], gold: Sequence[int]) -> list[CompiledTool] | None:
        """For each gold tool of a row, the closest pool tool that is a safe hard negative
        (see the module doc); None when some gold tool has none."""
        removed = [tools[i] for i in gold]
        taken = {t.norm_name for t in tools}
        out = []
        for g in removed:
            for digest, _sim in self.neighbours(g.digest):
                c = self.tools[digest]
                if c.norm_name in taken or can_serve(c, removed):
                    continue
                out.append(c)
                taken.add(c.norm_name)
                break
            else:
                return None
        return out


# --------------------------------------------------------------------------- selection

Plan = tuple[str, list[CompiledTool] | None]  # (variant, replacement tools for a hard negative)


def select_rows(ids: Sequence[str], elig: Sequence[Eligibility], n_plain: int, n_hard: int, seed: int,
                purpose: str, pool: ToolPool | None = None,
                tools_of: Callable[[int], Sequence[CompiledTool]] | None = None,
                ranked: dict[str, np.ndarray] | None = None) -> dict[int, Plan]:
    """``{row index: (variant, replacements)}`` of the rows to synthesize from (see the module
    doc). Hard negatives need the ``pool`` and ``tools_of(i)``, the compiled tools of row ``i``
    (only asked for the rows tried, best-ranked first). ``ranked``: the rows' :func:`ranks`
    for ``PLAIN_IRRELEVANCE`` / ``HARD_NEGATIVE``, when already computed (the others are computed
    here)."""
    chosen: dict[int, Plan] = {}

    def rank(variant: str) -> np.ndarray:
        given = (ranked or {}).get(variant)
        return given if given is not None else ranks(seed, f"{variant}:{purpose}", ids)

    if n_hard:
        if pool is None or tools_of is None:
            raise ValueError("hard negatives need the tool pool and the rows' tools")
        hn_ok = np.array([e.hard_negative for e in elig], dtype=bool)
        order = rank_order(rank(HARD_NEGATIVE), hn_ok).tolist()
        for w in range(0, len(order), 1024):  # windows: neighbours are computed in batches
            window = [(i, tools_of(i)) for i in order[w:w + 1024]]
            pool.prefetch(tools[g].digest for i, tools in window for g in elig[i].gold)
            for i, tools in window:
                reps = pool.replacements(tools, elig[i].gold)
                if reps is not None:
                    chosen[i] = (HARD_NEGATIVE, reps)
                    if len(chosen) == n_hard:
                        break
            if len(chosen) == n_hard:
                break
    if n_plain:
        plain_ok = np.array([e.plain for e in elig], dtype=bool)
        plain_ok[list(chosen)] = False
        for i in rank_order(rank(PLAIN_IRRELEVANCE), plain_ok)[:n_plain].tolist():
            chosen[i] = (PLAIN_IRRELEVANCE, None)
    return chosen


def synthesize(row: dict[str, Any], tools: Sequence[CompiledTool], gold: Sequence[int], plan: Plan) -> dict[str, Any]:
    """The synthesized row of ``plan`` from its source ``row`` (with compiled ``tools``)."""
    variant, reps = plan
    return synthesized_row(row, variant, synthesize_tools(tools, gold, reps))


def synthesize_irrelevance(rows: list[dict[str, Any]], ratio: float, seed: int,
                           hard_negative_ratio: float = 0.0, purpose: str = "train",
                           pool: ToolPool | None = None) -> list[dict[str, Any]]:
    """New "no call" rows (to be added to ``rows``) so that they are ``ratio`` of the mix,
    ``hard_negative_ratio`` of it hard negatives; in source order. Returns fewer rows than
    asked if not enough rows are eligible. ``pool`` defaults to the tools of ``rows``. (The
    prepare stage runs the same selection over streamed blocks.)"""
    cache = ToolCache()
    parsed = [(cache.split(r["tools"]), parse_json(r["calls"])) for r in rows]
    elig = [eligibility(t, c) for t, c in parsed]
    if pool is None and hard_negative_ratio > 0:
        pool = ToolPool(t for tools, _ in parsed for t in tools)
    n_plain, n_hard = plan_counts(len(rows), sum(not c for _, c in parsed), ratio, hard_negative_ratio)
    chosen = select_rows([r["id"] for r in rows], elig, n_plain, n_hard, seed, purpose, pool,
                         lambda i: parsed[i][0])
    return [synthesize(rows[i], parsed[i][0], elig[i].gold, plan) for i, plan in sorted(chosen.items())]


__all__ = ["HARD_NEGATIVE", "MAX_SIMILARITY", "MIN_SIMILARITY", "PLAIN_IRRELEVANCE", "Eligibility", "Plan", "ToolPool",
           "can_serve", "count_for_ratio", "eligibility", "lexical_words", "plan_counts", "rank_order",
           "ranks", "select_rows", "strip_gold_tools", "synthesize", "synthesize_irrelevance",
           "synthesize_tools", "synthesized_row"]
