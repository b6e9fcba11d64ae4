"""The prepare stage: split, irrelevance synthesis, masking, rendering and tokenization, streamed.

Input: the canonical ``examples.parquet`` from ingestion. Output folder:

* ``train.parquet`` / ``eval.parquet`` -- canonical rows (train: originals + synthesized "no
  call" rows, ``copies`` times, masked per Hammer's recipe; eval: originals + synthesized rows,
  never masked, one copy);
* ``train_tokens.parquet`` / ``eval_tokens.parquet`` -- ``id, task, input_ids, n_prompt``, one
  row per row of ``train`` / ``eval`` (same order);
* ``rejects.parquet`` -- rows over the token budget, with the reason;
* ``summary.json``.

The split is by row id (hashed with the seed), decided before any synthesis, so no
irrelevance or masked variant of an eval row can leak into training.

How it runs
-----------
The input is read in blocks of :data:`BLOCK_ROWS` rows. Pass 1 hands each block to an
:class:`Engine` (the first one in this process, the others to forked workers, which thereby
start with its compiled tools and cached tokens; or, with ``dask=True``, to the workers of a Dask
cluster, each building its own engine); the engine splits the block, masks, renders
and tokenizes every copy of every original row, and returns the output rows with a small
analysis (irrelevance eligibility, the rows' tools). The main process then picks the rows to
synthesize from (:func:`hammer_core.irrelevance.select_rows`, one global choice per split) and
pass 2 hands those rows, with their plan, to the engines. Pass 2 takes its rows from what pass 1
kept (:class:`_Sources`): the whole input when its decoded size is at most
:data:`KEEP_INPUT_BYTES`, else the rows likely to be selected (eligible and ranked below a
threshold with a margin) within that bound; only when the selection needs a row that was not
kept does it read the input again. Input blocks are read ahead on a thread. Outputs are written
as they come back, in order, by background writer threads, in row groups of exactly
:data:`ROW_GROUP_ROWS` rows; beyond that bounded input, memory does not grow with the corpus
past the pass-1 analysis (a few dozen bytes a row, plus the tool pool when hard negatives are on).

Where the time goes: a row's tools are cut at ``},{"name":`` and looked up among compiled
tools (:class:`hammer_core.masking.ToolCache`); masked tools, prompts and answers are filled
templates (no JSON parsing or writing per row); tokens are cached per prompt fragment
(:class:`hammer_core.tokenization.FragmentTokenizer`).

Two implementations of the per-row work, with the same output bytes: the compiled kernel
(:mod:`hammer_core.fastprep`, a C extension: it reads a block's Arrow buffers, splits, masks,
renders and assembles the token ids of the common rows in bulk, rejects rows over the token
budget one by one, and hands every other row -- multi-turn conversations, perturbed defaults,
non-canonical JSON; a block with rows to trim (``length_policy: truncate_tools``) -- to the
Python path), used when the extension is built (``HAMMER_FASTPREP=0`` turns it off);
and the pure-Python path (:meth:`Engine._emit` and its helpers), the oracle the kernel is
tested against and the fallback when the extension is not importable (one warning).

Order and determinism. Within a split, rows come out as: the original rows, then the
synthesized rows (in the order of their source rows); the ``copies`` of a block of
:data:`BLOCK_ROWS` source rows are written together (copy 0 of the block, then copy 1, ...):
the trainer shuffles anyway, and a row's copies sharing a worker is what lets its query be
tokenized once. Every random draw depends only on (seed, copy, row id, position) (see
:mod:`hammer_core.masking`), blocks and row groups have fixed sizes, and the workers' results
are written in submission order, so the artifacts are byte-identical for any number of
workers -- ``prepare.workers`` only changes the speed.

Checks. Rows are valid by construction (and property-tested against a naive oracle); every
64th output row and every row whose tools were trimmed is re-validated with the ingestion
validator (a failure is a bug and stops the stage), and every 4096th tokenized row is compared
with whole-text tokenization.
"""

from __future__ import annotations

import gc
import hashlib
import json
import multiprocessing as mp
import os
import queue
import sys
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from operator import attrgetter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hammer_core.data.compiled import fastprep
from hammer_core.artifacts import Artifact, ArtifactWriter, atomic_write_json
from hammer_core.config import PipelineConfig
from hammer_core.data.row_errors import RowError
from hammer_core.data.irrelevance import PLAIN_IRRELEVANCE as VARIANT  # phase 2: say PLAIN_IRRELEVANCE below
from hammer_core.data.irrelevance import HARD_NEGATIVE, SUFFIX, Eligibility, ToolPool, eligibility, plan_counts, \
    ranks, select_rows, synthesize, synthesize_tools, synthesized_row
from hammer_core.data.masking import (CompiledTool, Masker, RowView, ToolCache, copy_keys, dedup_by_name,
                                 output_identity, parse_json, plain_view, row_keys, streams, words_needed)
from hammer_core.data.prompts import prompt_fragments, target_fragments
from hammer_core.schema import EXAMPLE_SCHEMA, MESSAGE_TYPE, REJECT_SCHEMA, dumps
from hammer_core.data.tokenization import TOKEN_IDS, TOKENS_SCHEMA, FragmentTokenizer, check_chat_template_tools, \
    encode_chat_template, tokens_table, too_long_detail
from hammer_core.data.validation import validate_example

BLOCK_ROWS = 2048  # source rows per task (fixed: it is part of the output order)
ROW_GROUP_ROWS = 16_384  # rows per output row group (fixed: same bytes for any batching)
VALIDATE_EVERY = 64
KEEP_INPUT_BYTES = 64 << 20  # inputs up to this decoded size are kept in memory between the passes
SPOT_CHECK_EVERY = 4096  # one row a block is re-tokenized whole by the HF tokenizer (an independent check)
SPLITS = ("train", "eval")
_MESSAGES = pa.list_(pa.field("item", MESSAGE_TYPE, nullable=False))


@dataclass
class PrepareResult:
    train: Artifact
    eval: Artifact
    train_tokens: Artifact
    eval_tokens: Artifact
    rejects: Artifact
    summary: dict[str, Any]


def is_eval(row_id: str, seed: int, fraction: float) -> bool:
    h = int.from_bytes(hashlib.sha256(f"{seed}:split:{row_id}".encode()).digest()[:8], "big")
    return h / 2**64 < fraction


def split_rows(rows: list[dict[str, Any]], seed: int, fraction: float) -> tuple[list, list]:
    train, evals = [], []
    for r in rows:
        (evals if is_eval(r["id"], seed, fraction) else train).append(r)
    return train, evals


# --------------------------------------------------------------------------- the recipe

@dataclass(frozen=True)
class Recipe:
    """Everything a worker needs to turn rows into outputs (picklable)."""

    seed: int
    eval_fraction: float
    mask_prob: float
    copies: int
    name_pool_size: int
    max_length: int
    length_policy: str
    prompt_format: str
    fast_tokenization: bool
    hard_negatives: bool
    tokenize: bool = True  # False: render the prompts but stop before tokens (benchmarks, dry runs)
    variants: tuple[str, ...] = ()  # the synthesized variants asked for (share > 0)

    @classmethod
    def from_config(cls, cfg: PipelineConfig, tokenize: bool = True) -> "Recipe":
        p = cfg.prepare
        variants = tuple(v for v, share in ((VARIANT, p.irrelevance_ratio), (HARD_NEGATIVE, p.hard_negative_ratio))
                         if share > 0)
        return cls(seed=cfg.prepare_seed(), eval_fraction=p.eval_fraction, mask_prob=p.mask_prob, copies=p.copies,
                   name_pool_size=p.name_pool_size, max_length=p.max_length, length_policy=p.length_policy,
                   prompt_format=p.prompt_format, fast_tokenization=p.fast_tokenization,
                   hard_negatives=p.hard_negative_ratio > 0, tokenize=tokenize, variants=variants)

    @property
    def compiled(self) -> bool:
        """Does the compiled kernel run this recipe (else the pure-Python path)?"""
        return self.prompt_format == "hammer" and fastprep.enabled()

    def hashes(self, table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """A block's id hashes for the kernel path (:meth:`FastKernel.hash_ids`: row keys, eval
        flags, selection ranks of each variant), made without the GIL -- on the reader thread,
        beside the work on the previous block. None: the Python path computes its own."""
        if not self.compiled:
            return None
        col = table.column("id")
        ids = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
        return fastprep.FastKernel.hash_ids(ids, self.seed, self.eval_fraction,
                                            [tuple(rank_purpose(v, s) for s in SPLITS) for v in self.variants])


@dataclass
class SplitOutput:
    """One split's share of a block's results."""

    examples: pa.Table
    tokens: pa.Table
    rejects: list[dict[str, Any]] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)  # rows, no_call, trimmed, tokens...
    by_variant: Counter = field(default_factory=Counter)
    by_task: Counter = field(default_factory=Counter)
    max_len: int = 0


@dataclass
class Analysis:
    """Pass-1 facts about one split's source rows of a block (for irrelevance selection)."""

    index: np.ndarray  # the rows' positions in the input
    ids: list[str]
    elig: list[Eligibility]
    no_call: int
    tools: list[list[int]] | None = None  # the rows' tool digests (hard negatives only)
    ranks: dict[str, np.ndarray] | None = None  # the rows' selection ranks of each variant, when made in C


class _Pending:
    """A split's output whose kernel emit was handed to the engine's emit thread
    (:attr:`Engine.defer`): :meth:`result` waits for it and finishes the output here."""

    __slots__ = ("future", "finish")

    def __init__(self, future: Future, finish: Callable[[Any], SplitOutput]) -> None:
        self.future, self.finish = future, finish

    def result(self) -> SplitOutput:
        return self.finish(self.future.result())


@dataclass
class BlockResult:
    outputs: dict[str, SplitOutput | _Pending]
    analysis: dict[str, Analysis] = field(default_factory=dict)
    new_tools: dict[int, str] = field(default_factory=dict)  # pool tools first seen by this worker

    def resolve(self) -> "BlockResult":
        """The outputs finished (their deferred emits waited for, in split order)."""
        for split, out in self.outputs.items():
            if isinstance(out, _Pending):
                self.outputs[split] = out.result()
        return self


class Engine:
    """One process's state (tool cache, masker, tokenizer) and the per-block work."""

    def __init__(self, recipe: Recipe, tokenizer: Any) -> None:
        self.recipe = recipe
        self.cache = ToolCache(max_size=fastprep.FastKernel.KEEP_TOOLS)
        self.masker = Masker.from_config(recipe.seed, recipe.mask_prob, recipe.name_pool_size)
        self.tokenizer = tokenizer
        self.frag: FragmentTokenizer | None = None  # None: chat_template format, or no tokens
        if recipe.tokenize and recipe.prompt_format == "chat_template":
            check_chat_template_tools(tokenizer)
        elif recipe.tokenize:
            self.frag = FragmentTokenizer(tokenizer, fast=recipe.fast_tokenization)
        self.reported: set[int] = set()
        # the kernel's emits of a block on a thread of their own (the C loop runs without the GIL),
        # finished when the output is consumed: the next block is parsed here meanwhile. Set by
        # the in-process runner; the outputs are then _Pending until BlockResult.resolve().
        self.defer = False
        self._emitter: ThreadPoolExecutor | None = None
        self._last_emit: Future | None = None
        self.fast: fastprep.FastKernel | None = None  # the compiled hot path (None: Python only)
        if recipe.compiled:
            self.fast = self._new_kernel()

    def _new_kernel(self) -> fastprep.FastKernel:
        wrap = None if self.frag is None else (self.frag.head, self.frag.tail, self.frag.suffix)
        fast = fastprep.FastKernel(self.masker, wrap, self.cache)
        if self.frag is not None and self.frag.fast and sys.byteorder == "little":
            fast.kernel.set_tokens(int.from_bytes(self.frag.eos, "little", signed=True), self.frag.cache_size)
            if self.frag.bpe is not None:  # new chunks tokenized inside the kernel
                fast.kernel.set_bpe(*self.frag.bpe.c_api())
        return fast

    def _kernel(self) -> fastprep.FastKernel:
        """The kernel for the next block: a fresh one (tools, caches) once this one holds
        :attr:`fastprep.FastKernel.KEEP_TOOLS` tools, so that memory is bounded however many
        distinct tools the corpus has (a cache: only the speed depends on it). A block still in
        flight keeps the kernel it was parsed with."""
        assert self.fast is not None
        if len(self.fast.tools) >= fastprep.FastKernel.KEEP_TOOLS:
            self.cache = ToolCache(max_size=fastprep.FastKernel.KEEP_TOOLS)
            self.fast = self._new_kernel()
        return self.fast

    def _submit(self, emit: Callable[[], Any]) -> Future:
        if self._emitter is None:
            self._emitter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hammer-prepare-emit")
        self._last_emit = self._emitter.submit(emit)
        return self._last_emit

    def drain(self) -> None:
        """Wait for the emits handed to the emit thread (one thread: in order); the kernel's
        token cache may be changed here only then."""
        if self._last_emit is not None:
            wait([self._last_emit])
            self._last_emit = None

    def close(self) -> None:
        if self._emitter is not None:
            self._emitter.shutdown(wait=True, cancel_futures=True)
            self._emitter = self._last_emit = None

    @property
    def tokenization(self) -> str:
        if not self.recipe.tokenize:
            return "none"
        return "chat_template" if self.frag is None else "fragments" if self.frag.fast else "whole"

    # -- pass 1 -----------------------------------------------------------------------------
    def originals(self, table: pa.Table, start: int, hashed: tuple | None = None) -> BlockResult:
        """Outputs and analysis of a block of source rows (input positions from ``start``);
        ``hashed``: :meth:`Recipe.hashes` of the block, when made already."""
        rows = _Columns(table, sparse=self.fast is not None)
        r = self.recipe
        if self.fast is not None:
            if hashed is None:
                hashed = r.hashes(table)
            parsed_c = self._kernel().parse(rows) if hashed is not None else None
            if parsed_c is not None:
                rows.keys = hashed[0]  # type: ignore[index]
                return self._fast_originals(rows, start, hashed[1], hashed[2], parsed_c)  # type: ignore[index]
        evals = np.array([is_eval(i, r.seed, r.eval_fraction) for i in rows.ids], dtype=bool)
        parsed = [self._parse(rows, i) for i in range(len(rows.ids))]
        result = BlockResult({})
        for split, members in (("train", np.flatnonzero(~evals)), ("eval", np.flatnonzero(evals))):
            idx = members.tolist()
            elig = [eligibility(parsed[i][0], parsed[i][1]) for i in idx]
            tools = None
            if r.hard_negatives:
                tools = [[t.digest for t in parsed[i][0]] for i in idx]
                for i in idx:
                    for t in parsed[i][0]:
                        if t.digest not in self.reported:
                            self.reported.add(t.digest)
                            result.new_tools[t.digest] = t.text
            result.analysis[split] = Analysis(index=members + start, ids=[rows.ids[i] for i in idx], elig=elig,
                                              no_call=sum(not parsed[i][1] for i in idx), tools=tools)
            result.outputs[split] = self._emit(rows, idx, parsed, split)
        return result

    def _fast_originals(self, rows: "_Columns", start: int, evals: np.ndarray, ranks: np.ndarray, parsed_c: Any
                        ) -> BlockResult:
        """:meth:`originals` with the kernel's parse (rows it does not handle parsed here) and
        the block's selection ranks (a column per variant of the recipe)."""
        r = self.recipe
        k = _KernelParse.of(parsed_c, rows.n)
        py = {i: self._parse(rows, i) for i in np.flatnonzero(k.status).tolist()}
        result = BlockResult({})
        for split, members in (("train", np.flatnonzero(~evals)), ("eval", np.flatnonzero(evals))):
            idx = members.tolist()
            elig = k.eligibility(members)
            for j in np.flatnonzero(k.status[members]).tolist():  # rows parsed in Python
                elig[j] = eligibility(*py[idx[j]])
            tools = None
            if r.hard_negatives:
                tools = []
                for i in idx:
                    row_tools = py[i][0] if i in py else k.tools(self.fast, i)
                    tools.append([t.digest for t in row_tools])
                    for t in row_tools:
                        if t.digest not in self.reported:
                            self.reported.add(t.digest)
                            result.new_tools[t.digest] = t.text
            n_no_call = int(k.no_call[members].sum()) + sum(not py[i][1] for i in idx if i in py)
            result.analysis[split] = Analysis(index=members + start, ids=[rows.ids[i] for i in idx], elig=elig,
                                              no_call=n_no_call, tools=tools,
                                              ranks={v: ranks[members, j] for j, v in enumerate(r.variants)})

            def fallback(idx: list[int] = idx, split: str = split) -> SplitOutput:
                rows.sparse = False  # the Python path for this split of the block (lists made at once)
                return self._emit(rows, idx, _LazyParse(self, rows, py), split)

            result.outputs[split] = self._emit_fast(rows, idx, parsed_c, py, split, fallback)
        return result

    # -- pass 2 -----------------------------------------------------------------------------
    def synthesized(self, table: pa.Table, splits: Sequence[str], plans: Sequence[tuple[str, list[str] | None]]
                    ) -> BlockResult:
        """Outputs of the rows synthesized from a block of source rows, one plan each."""
        if self.fast is not None:
            src = _Columns(table, sparse=True)
            parsed_c = self._kernel().parse(src)
            if parsed_c is not None:
                return self._fast_synthesized(src, parsed_c, splits, plans)
        src = _Columns(table)
        out_rows: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
        for i, (split, (variant, rep_texts)) in enumerate(zip(splits, plans)):
            tools, calls = self._parse(src, i)
            reps = None if rep_texts is None else [self._compile(t) for t in rep_texts]
            gold = eligibility(tools, calls).gold
            if not gold:
                raise AssertionError(f"row {src.ids[i]!r} was selected for {variant} but has no gold tool")
            out_rows[split].append(synthesize(src.row(i), tools, gold, (variant, reps)))
        result = BlockResult({})
        for split, synth in out_rows.items():
            cols = _Columns(pa.Table.from_pylist(synth, schema=EXAMPLE_SCHEMA))
            idx = list(range(len(synth)))
            result.outputs[split] = self._emit(cols, idx, [self._parse(cols, i) for i in idx], split)
        return result

    def _fast_synthesized(self, src: "_Columns", parsed_c: Any, splits: Sequence[str],
                          plans: Sequence[tuple[str, list[str] | None]]) -> BlockResult:
        """:meth:`synthesized` with the kernel's parse of the source rows; the synthesized rows are
        built column-wise (messages, source and task taken over in Arrow)."""
        k = _KernelParse.of(parsed_c, src.n)
        if not k.status.any() and all(v == VARIANT and reps is None for v, reps in plans):
            return self._plain_synthesized(src, parsed_c, k, splits)
        cols: dict[str, dict[str, list]] = {s: {"pos": [], "id": [], "tools": [], "parent_id": [], "variant": []}
                                            for s in SPLITS}
        # every row of a pass-2 block is used: whole columns as lists, not one Arrow scalar a row
        ids, parents, status = src.ids, src.parents, k.status.tolist()
        for i, (split, (variant, rep_texts)) in enumerate(zip(splits, plans)):
            if status[i]:
                tools, calls = self._parse(src, i)
                gold = eligibility(tools, calls).gold
            else:
                tools = k.tools(self.fast, i)
                gold = _eligibility_of(k.codes[i]).gold
            rid = ids[i]
            if not gold:
                raise AssertionError(f"row {rid!r} was selected for {variant} but has no gold tool")
            reps = None if rep_texts is None else [self._compile(t) for t in rep_texts]
            row = synthesized_row({"id": rid, "parent_id": parents[i]}, variant, synthesize_tools(tools, gold, reps))
            c = cols[split]
            c["pos"].append(i)
            c["id"].append(row["id"])
            c["tools"].append(row["tools"])
            c["parent_id"].append(row["parent_id"])
            c["variant"].append(variant)
        return self._synthesized_output(src, {
            split: (pa.array(c["pos"], pa.int64()), pa.array(c["id"], pa.string()), pa.array(c["tools"], pa.string()),
                    pa.array(c["parent_id"], pa.string()), pa.array(c["variant"], pa.string()))
            for split, c in cols.items()})

    def _plain_synthesized(self, src: "_Columns", parsed_c: Any, k: "_KernelParse", splits: Sequence[str]
                           ) -> BlockResult:
        """:meth:`_fast_synthesized` of a block whose rows the kernel parsed, all for plain
        irrelevance: the rows' columns made whole (the tools lists cut by the kernel)."""
        in_split = np.array(splits)
        columns = {}
        for split in SPLITS:
            pos = np.flatnonzero(in_split == split)
            if len(pos) and not (k.codes_array[pos] >> 2).all():
                rid = src.ids[int(pos[np.flatnonzero(k.codes_array[pos] >> 2 == 0)[0]])]
                raise AssertionError(f"row {rid!r} was selected for {VARIANT} but has no gold tool")
            take = pa.array(pos, pa.int64())
            ids, parents = src.column("id").take(take), src.column("parent_id").take(take)
            has_parent = pc.fill_null(pc.not_equal(parents, ""), False)  # synthesized_row: parent or the id
            columns[split] = (take, pc.binary_join_element_wise(ids, SUFFIX[VARIANT], ""),
                              fastprep.string_array(len(pos), *parsed_c.strip_gold(pos.tobytes())),
                              pc.if_else(has_parent, parents, ids), pa.array([VARIANT] * len(pos), pa.string()))
        return self._synthesized_output(src, columns)

    def _synthesized_output(self, src: "_Columns", columns: dict[str, tuple[pa.Array, ...]]) -> BlockResult:
        """The outputs of synthesized rows given, per split, (source positions, id, tools,
        parent_id, variant): "no call" rows with their source rows' source, task and messages."""
        result = BlockResult({})
        for split, (take, ids, tools, parents, variants) in columns.items():
            n = len(take)
            table = pa.Table.from_arrays([
                ids, src.column("source").take(take), src.column("task").take(take),
                src.column("messages").take(take), tools, pa.array(["[]"] * n, pa.string()), parents, variants],
                schema=EXAMPLE_SCHEMA)
            rows = _Columns(table, sparse=True)
            idx = list(range(n))

            def fallback(rows: _Columns = rows, idx: list[int] = idx, split: str = split) -> SplitOutput:
                rows.sparse = False
                return self._emit(rows, idx, _LazyParse(self, rows, {}), split)

            parsed_s = self._kernel().parse(rows) if idx else None
            result.outputs[split] = fallback() if parsed_s is None else \
                self._emit_fast(rows, idx, parsed_s, {}, split, fallback)
        return result

    # -- the recipe for a list of rows ------------------------------------------------------
    def _compile(self, text: str) -> CompiledTool:
        ct = self.cache.get(text)
        if ct is None:
            raise ValueError(f"not a tool: {text[:200]}")
        return ct

    def _parse(self, rows: "_Columns", i: int) -> tuple[list[CompiledTool], list[dict[str, Any]]]:
        try:
            return self.cache.split(rows.value("tools", i)), parse_json(rows.value("calls", i))
        except (ValueError, TypeError) as err:
            raise ValueError(f"row {rows.value('id', i)!r} is not a canonical row ({err}); "
                             "was examples.parquet written by `hammer ingest`?") from err

    def _emit(self, rows: "_Columns", idx: list[int], parsed: list, split: str) -> SplitOutput:
        """Every copy of rows ``idx``: views, canonical rows, tokens, length policy."""
        r = self.recipe
        masked = split == "train" and r.mask_prob > 0
        copies = r.copies if split == "train" else 1
        if not idx:
            return SplitOutput(EXAMPLE_SCHEMA.empty_table(), TOKENS_SCHEMA.empty_table() if r.tokenize else None)
        tools = [dedup_by_name(parsed[i][0]) if masked else parsed[i][0] for i in idx]
        base = row_keys(r.seed, [rows.ids[i] for i in idx])
        views: list[tuple[int, int, RowView]] = []  # (copy, row, view), block-major
        for k in range(copies):
            views.extend((k, i, v) for i, v in zip(idx, self._views(rows, idx, tools, copy_keys(base, k),
                                                                      parsed, masked)))
        encoded = self._tokenize(rows, views)
        return self._assemble(rows, views, encoded, split)

    def _views(self, rows: "_Columns", idx: Sequence[int], tools: Sequence[list[CompiledTool]] | None,
               keys: np.ndarray, parsed: Any, masked: bool) -> list[RowView]:
        """The views of rows ``idx`` under ``keys`` (one key each): masked or plain, the mask
        coins, shuffles and names drawn for all of them at once. ``tools``: the rows' tools as
        masking sees them (de-duplicated when masked), or None to take them from ``parsed``."""
        if tools is None:
            tools = [dedup_by_name(parsed[i][0]) if masked else parsed[i][0] for i in idx]
        if not masked:
            return [plain_view(t, parsed[i][1]) for t, i in zip(tools, idx)]
        masker = self.masker
        words = streams(keys, np.array([words_needed(t) for t in tools], dtype=np.int64))
        hit = [j for j in range(len(idx)) if masker.is_masked(words[j])]
        names = dict(zip(hit, masker.draw_names([(words[j], tools[j]) for j in hit])))
        return [masker.mask(int(keys[j]), words[j], tools[j], parsed[i][1], rows.messages(i), names[j])
                if j in names else plain_view(tools[j], parsed[i][1]) for j, i in enumerate(idx)]

    def _emit_fast(self, rows: "_Columns", idx: list[int], parsed_c: Any, py: dict[int, Any], split: str,
                   fallback: Callable[[], SplitOutput]) -> SplitOutput | _Pending:
        """:meth:`_emit` through the kernel (the same rows, bytes and counts); the rows the kernel
        does not handle are made here and passed to it. ``fallback()``: the Python path's output,
        taken when the kernel cannot make this one (a row to trim, or columns it cannot read). With :attr:`defer` (render-only and kernel tokens), the kernel's loop runs
        on the emit thread and the output is finished by :meth:`_Pending.result`."""
        r = self.recipe
        if not idx:
            return SplitOutput(EXAMPLE_SCHEMA.empty_table(), TOKENS_SCHEMA.empty_table() if r.tokenize else None)
        idcols = self.fast.id_columns(rows)  # type: ignore[union-attr]
        if idcols is None:
            return fallback()
        masked = split == "train" and r.mask_prob > 0
        copies = r.copies if split == "train" else 1
        where0 = np.asarray(idx, dtype=np.int64)
        base = rows.keys[where0] if rows.keys is not None else row_keys(r.seed, [rows.ids[i] for i in idx])
        keys = np.concatenate([copy_keys(base, k) for k in range(copies)]).astype(np.uint64)
        where = np.tile(where0, copies)
        kb, wb = keys.tobytes(), where.tobytes()
        tokens = r.tokenize and self.frag is not None
        # 2: token ids assembled by the kernel from its fragment cache; 1: fragment lists, encoded here
        mode = (2 if self.frag.fast and sys.byteorder == "little" else 1) if tokens else 0  # type: ignore[union-attr]
        parsed = _LazyParse(self, rows, py)
        overrides: dict[int, tuple] = {}
        new_msgs: list[tuple[int, Any]] = []
        planned = list(parsed_c.plan(wb, kb, copies, masked))  # the rows made here, in Python
        views = self._views(rows, where[planned].tolist(), None, keys[planned], parsed, masked)
        for t, view in zip(planned, views):
            k, i = t // len(idx), int(where[t])
            msgs = view.messages or rows.messages(i)
            prompt, target = prompt_fragments(view, msgs), target_fragments(view)
            if tokens:
                prompt = self.frag.wrap_prompt(prompt)  # type: ignore[union-attr]
            else:  # render only: the same work as the Python path, nothing kept
                "".join(prompt)
                "".join(target)
                prompt = target = None
            rid, variant, parent = output_identity(rows.ids[i], rows.value("variant", i), rows.value("parent_id", i),
                                                   k, view.masked)
            overrides[t] = (rid, variant, parent,
                            view.tools_json() if view.masked else rows.value("tools", i),
                            view.calls_json() if view.masked else rows.value("calls", i),
                            prompt, target, not view.calls)
            if view.messages is not None:
                new_msgs.append((t, view.messages))
        kernel = self.fast.kernel  # type: ignore[union-attr]

        def emit() -> Any:
            if mode == 2:
                kernel.trim_tokens()
            return parsed_c.emit(*idcols, wb, kb, copies, masked, mode, overrides)

        def finish(res: Any) -> SplitOutput:
            while res[0] is None:  # fragments new to the kernel's token cache
                self.drain()  # no emit may run while the cache changes
                self._cache_tokens(res[1], kernel)
                res = parsed_c.emit(*idcols, wb, kb, copies, masked, mode, overrides)
            out = self._fast_output(rows, res, where, keys, parsed, overrides, new_msgs, masked, mode, split)
            return fallback() if out is None else out

        if self.defer and mode != 1:
            return _Pending(self._submit(emit), finish)
        return finish(emit())

    def _fast_output(self, rows: "_Columns", res: tuple, where: np.ndarray, keys: np.ndarray, parsed: Any,
                     overrides: dict[int, tuple], new_msgs: list[tuple[int, Any]], masked: bool, mode: int,
                     split: str) -> SplitOutput | None:
        """The output of the kernel's emit ``res``, checked; rows over the token budget are
        rejected here (None: they must be trimmed, or were not tokenized here: the Python path)."""
        r = self.recipe
        (c_id, c_var, c_par, c_tools, c_calls, valid, _src, no_call, _chars, prompts, targets, c_tokens) = res
        n = len(where)
        ids_a = fastprep.string_array(n, *c_id)
        tools_a, calls_a = fastprep.string_array(n, *c_tools), fastprep.string_array(n, *c_calls)
        encoded = None
        frag = self.frag
        limit = r.max_length
        if mode == 1:
            encoded = frag.encode(prompts, targets)  # type: ignore[union-attr]
            if any(len(a) + len(b) > 4 * limit for a, b in encoded):
                return None  # trim or reject: the Python path
            for q in range(0, n, SPOT_CHECK_EVERY):
                frag.check(prompts[q], targets[q], encoded[q], ids_a[q].as_py())  # type: ignore[union-attr]
        elif mode == 2:
            tok_off = np.frombuffer(c_tokens[0], dtype=np.int32)
            lengths_a = np.diff(tok_off)
            if n and int(lengths_a.max()) > limit and r.length_policy != "reject":
                return None  # trimming drops tools one at a time: the Python path
            values = memoryview(c_tokens[1])  # the kernel's buffer, not copied (fastprep.string_array likewise)
            n_prompt = np.frombuffer(c_tokens[2], dtype=np.int32)
            for q in range(0, n, SPOT_CHECK_EVERY):  # the kernel's ids against whole-text tokenization
                if q in overrides:
                    prompt, target = overrides[q][5], overrides[q][6]
                else:
                    i = int(where[q])
                    view = self._views(rows, [i], None, keys[q:q + 1], parsed, masked)[0]
                    prompt = frag.wrap_prompt(prompt_fragments(view, view.messages or rows.messages(i)))  # type: ignore[union-attr]
                    target = target_fragments(view)
                a, b = int(tok_off[q]), int(tok_off[q + 1])
                split_at = a + int(n_prompt[q])
                prompt_ids, target_ids = bytes(values[4 * a:4 * split_at]), bytes(values[4 * split_at:4 * b])
                frag.check(prompt, target, (prompt_ids, target_ids), ids_a[q].as_py())  # type: ignore[union-attr]
        patched = dict(new_msgs)
        sample = pa.array(range(0, n, VALIDATE_EVERY), pa.int64())  # the sampled rows' values in bulk
        sampled = zip(sample.to_pylist(), rows.column("messages").take(pa.array(where[::VALIDATE_EVERY])).to_pylist(),
                      tools_a.take(sample).to_pylist(), calls_a.take(sample).to_pylist())
        for q, msgs, tools, calls in sampled:
            try:
                validate_example({"messages": patched.get(q) or msgs, "tools": tools, "calls": calls})
            except RowError as err:
                raise AssertionError(f"prepare produced an invalid row {ids_a[q].as_py()}: {err.reason}: "
                                     f"{err.detail}") from err
        take = pa.array(where, pa.int64())
        variants_a = fastprep.string_array(n, *c_var)
        tasks_a = rows.column("task").take(take)
        table = pa.Table.from_arrays([
            ids_a, rows.column("source").take(take), tasks_a,
            _patched(rows.column("messages"), rows.n, take, new_msgs, _MESSAGES),
            tools_a, calls_a, fastprep.string_array(n, *c_par, valid), variants_a], schema=EXAMPLE_SCHEMA)
        over = lengths_a > limit if mode == 2 else None
        rejects: list[dict[str, Any]] = []
        if over is not None and over.any():  # over the budget: rejected one by one, the rest kept
            n_prompt_all = np.frombuffer(c_tokens[2], dtype=np.int32)
            for q in np.flatnonzero(over).tolist():
                rejects.append(_reject_record(table.column("source")[q].as_py(), split,
                                              ids_a[q].as_py(), tools_a[q].as_py(), calls_a[q].as_py(),
                                              int(n_prompt_all[q]), int(lengths_a[q] - n_prompt_all[q]), limit))
            keep = pa.array(~over)
            table = table.filter(keep)
            ids_a, tasks_a, variants_a = table.column("id"), table.column("task"), table.column("variant")
            no_call = int(pc.sum(pc.equal(table.column("calls"), "[]")).as_py() or 0)
            n = table.num_rows
        out = SplitOutput(examples=table, tokens=None, rejects=rejects)
        out.by_variant.update(_value_counts(variants_a))
        out.by_task.update(_value_counts(tasks_a))
        out.counts["no_call"] = no_call
        out.counts["rows"] = n
        if encoded is not None:
            out.tokens = tokens_table(ids_a, tasks_a, encoded)
            lengths = [(len(a) + len(b)) // 4 for a, b in encoded]
            out.counts["tokens"] = sum(lengths)
            out.max_len = max(lengths, default=0)
        elif mode == 2:
            input_ids = pa.ListArray.from_arrays(pa.array(tok_off, pa.int32()),
                                                 pa.array(np.frombuffer(values, dtype="<i4"), pa.int32()),
                                                 type=TOKEN_IDS)
            n_prompt_a = pa.array(n_prompt, pa.int32())
            if rejects:
                input_ids, n_prompt_a, lengths_a = input_ids.filter(keep), n_prompt_a.filter(keep), lengths_a[~over]
            out.tokens = pa.Table.from_arrays([ids_a, tasks_a, input_ids, n_prompt_a], schema=TOKENS_SCHEMA)
            out.counts["tokens"] = int(lengths_a.sum())
            out.max_len = int(lengths_a.max()) if n else 0
        elif r.tokenize:  # chat_template: never through the kernel
            raise AssertionError("the kernel runs only with the hammer prompt format")
        return out

    def _cache_tokens(self, texts: list[str], kernel: Any) -> None:
        """Tokenize fragments into the kernel's cache, as :meth:`FragmentTokenizer.encode` does:
        cut at their safe cuts, the new chunks tokenized in bulk, each fragment the concatenation
        of its chunks' ids (the cutting and the cache are in C)."""
        frag = self.frag
        assert frag is not None
        chunks = kernel.split_misses(texts)
        if chunks:
            order, ids, counts = frag.tokenize_chunks_flat(chunks)  # ids do not depend on the grouping
            kernel.add_chunks(order, ids.tobytes(), counts.tobytes())
        kernel.join_misses(texts)

    def _tokenize(self, rows: "_Columns", views: list[tuple[int, int, RowView]],
                  check: bool = True) -> list[tuple[bytes, bytes]]:
        if not self.recipe.tokenize:  # render only: the prompt and answer texts, no tokens
            for _, i, v in views:
                "".join(prompt_fragments(v, v.messages or rows.messages(i)))
                "".join(target_fragments(v))
            return [(b"", b"")] * len(views)
        if self.frag is None:
            return encode_chat_template(self.tokenizer, [
                (v.messages or rows.messages(i), json.loads(v.tools_json()), json.loads(v.calls_json()))
                for _, i, v in views])
        frag = self.frag
        prompts = [frag.wrap_prompt(prompt_fragments(v, v.messages or rows.messages(i))) for _, i, v in views]
        targets = [target_fragments(v) for _, _, v in views]
        encoded = frag.encode(prompts, targets)
        for n in range(0, len(views) if check else 0, SPOT_CHECK_EVERY):
            frag.check(prompts[n], targets[n], encoded[n], rows.ids[views[n][1]])
        return encoded

    def _assemble(self, rows: "_Columns", views: list[tuple[int, int, RowView]],
                  encoded: list[tuple[bytes, bytes]], split: str) -> SplitOutput:
        r = self.recipe
        limit = 4 * r.max_length
        out = SplitOutput(examples=None, tokens=None)  # type: ignore[arg-type]
        src, new_tools, new_calls, new_msgs = [], [], [], []
        ids, variants, parents, kept_enc = [], [], [], []
        n_in = rows.n
        no_call = 0
        for n, ((k, i, view), enc) in enumerate(zip(views, encoded)):
            trimmed = False
            if len(enc[0]) + len(enc[1]) > limit:
                fitted = self._trim(rows, i, view) if r.length_policy == "truncate_tools" else None
                if fitted is None:
                    rid = output_identity(rows.ids[i], rows.variants[i], rows.parents[i], k, view.masked)[0]
                    out.rejects.append(_reject(rows, i, rid, view, split, enc, r.max_length))
                    continue
                view, enc, trimmed = fitted[0], fitted[1], True
            rid, variant, parent = output_identity(rows.ids[i], rows.variants[i], rows.parents[i], k, view.masked)
            if trimmed:
                variant += "+trimmed"
                out.counts["trimmed"] += 1
            ids.append(rid)
            variants.append(variant)
            parents.append(parent)
            src.append(i)
            if view.masked or trimmed:
                new_tools.append((len(src) - 1, view.tools_json()))
                new_calls.append((len(src) - 1, view.calls_json()))
            if view.messages is not None:
                new_msgs.append((len(src) - 1, view.messages))
            kept_enc.append(enc)
            if not view.calls:
                no_call += 1
            if trimmed or not n % VALIDATE_EVERY:
                _validate(rows, i, rid, view)
        tasks = [rows.tasks[i] for i in src]
        out.by_variant.update(variants)
        out.by_task.update(tasks)
        out.counts["no_call"] = no_call
        take = pa.array(src, pa.int64())
        table = pa.Table.from_arrays([
            pa.array(ids, pa.string()), rows.column("source").take(take), rows.column("task").take(take),
            _patched(rows.column("messages"), n_in, take, new_msgs, _MESSAGES),
            _patched(rows.column("tools"), n_in, take, new_tools, pa.string()),
            _patched(rows.column("calls"), n_in, take, new_calls, pa.string()),
            pa.array(parents, pa.string()), pa.array(variants, pa.string())], schema=EXAMPLE_SCHEMA)
        out.examples = table
        out.tokens = tokens_table(ids, tasks, kept_enc) if r.tokenize else None
        lengths = [(len(p) + len(t)) // 4 for p, t in kept_enc]
        out.counts["rows"] = len(ids)
        out.counts["tokens"] = sum(lengths)
        out.max_len = max(lengths, default=0)
        return out

    def _trim(self, rows: "_Columns", i: int, view: RowView) -> tuple[RowView, tuple[bytes, bytes]] | None:
        """Drop distractor tools, longest first, until the row fits (None if it never does)."""
        called = {name for name, _ in view.calls}
        tools = list(view.tools)
        while True:
            distractors = [j for j, t in enumerate(tools) if t.names[0] not in called]
            if not distractors or len(tools) == 1:
                return None
            longest = max(distractors, key=lambda j: (len(tools[j].tool.text), -j))
            tools.pop(longest)
            trial = RowView(tools, view.calls, view.messages, view.masked)
            enc = self._tokenize(rows, [(0, i, trial)], check=False)[0]
            if len(enc[0]) + len(enc[1]) <= 4 * self.recipe.max_length:
                return trial, enc


@dataclass
class _KernelParse:
    """The kernel's parse of a block, as arrays: per row a status (non-zero: the Python path
    parses it), an eligibility code, the row's registered tool ids and whether it is "no call"."""

    status: np.ndarray
    codes_array: np.ndarray
    bounds: np.ndarray
    tool_ids: np.ndarray
    no_call: np.ndarray

    @classmethod
    def of(cls, parsed_c: Any, n: int) -> "_KernelParse":
        status, codes, n_tools, tool_ids, no_call = parsed_c.info()
        bounds = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.frombuffer(n_tools, dtype=np.int32), out=bounds[1:])
        return cls(np.frombuffer(status, dtype=np.uint8), np.frombuffer(codes, dtype=np.int64), bounds,
                   np.frombuffer(tool_ids, dtype=np.int32), np.frombuffer(no_call, dtype=np.uint8))

    @cached_property
    def codes(self) -> list[int]:
        return self.codes_array.tolist()

    def eligibility(self, rows: np.ndarray) -> list[Eligibility]:
        """The :class:`Eligibility` of each of ``rows`` from its code (rows parsed by the kernel;
        the others' entries are to be replaced)."""
        known = _ELIGIBILITY.get  # a dict lookup a row (a block has few distinct codes): no sort
        return [known(c) or _eligibility_of(c) for c in self.codes_array[rows].tolist()]

    @cached_property
    def _lists(self) -> tuple[list[int], list[int]]:  # (tool ids, bounds): Python ints, made once
        return self.tool_ids.tolist(), self.bounds.tolist()

    def tools(self, fast: Any, i: int) -> list[CompiledTool]:
        """The compiled tools of row ``i`` (a row the kernel parsed)."""
        tool_ids, bounds = self._lists
        return [fast.tool(t) for t in tool_ids[bounds[i]:bounds[i + 1]]]


class _Columns:
    """A block of canonical rows as Python lists (the columns the recipe reads, made on first
    use) + Arrow. ``sparse``: the kernel reads the block, Python only a few rows (one by one)."""

    def __init__(self, table: pa.Table, sparse: bool = False) -> None:
        self.table = table
        self.n = table.num_rows
        self.sparse = sparse
        self.keys: np.ndarray | None = None  # the rows' masking keys (row_keys), when computed in bulk
        self._messages: list | None = None
        self._arrays: dict[str, pa.Array] = {}

    ids = cached_property(lambda self: self.table.column("id").to_pylist())
    tools = cached_property(lambda self: self.table.column("tools").to_pylist())
    calls = cached_property(lambda self: self.table.column("calls").to_pylist())
    tasks = cached_property(lambda self: self.table.column("task").to_pylist())
    variants = cached_property(lambda self: self.table.column("variant").to_pylist())
    parents = cached_property(lambda self: self.table.column("parent_id").to_pylist())
    _LISTS = {"id": "ids", "tools": "tools", "calls": "calls", "task": "tasks", "variant": "variants",
              "parent_id": "parents"}

    def value(self, name: str, i: int) -> Any:
        """Row ``i``'s value of column ``name`` (from the Python list when made, else from Arrow)."""
        attr = self._LISTS[name]
        if not self.sparse or attr in self.__dict__:
            return getattr(self, attr)[i]
        return self.column(name)[i].as_py()

    def column(self, name: str) -> pa.Array:
        array = self._arrays.get(name)
        if array is None:
            col = self.table.column(name)  # one chunk (the usual block): no copy
            array = self._arrays[name] = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
        return array

    def messages(self, i: int) -> list[dict[str, str]]:
        if self._messages is None:
            if self.sparse:
                return self.column("messages")[i].as_py()
            self._messages = self.table.column("messages").to_pylist()
        return self._messages[i]

    def row(self, i: int) -> dict[str, Any]:
        return {"id": self.ids[i], "source": self.table.column("source")[i].as_py(), "task": self.tasks[i],
                "messages": self.messages(i), "tools": self.tools[i], "calls": self.calls[i],
                "parent_id": self.parents[i], "variant": self.variants[i]}


def _patched(column: pa.Array, n_in: int, take: pa.Array, patches: list[tuple[int, Any]],
             type_: pa.DataType) -> pa.Array:
    """``column.take(take)`` with the values at some output positions replaced."""
    if not patches:
        return column.take(take)
    index = take.to_numpy().copy()
    index[[p for p, _ in patches]] = np.arange(n_in, n_in + len(patches))
    return pa.concat_arrays([column.cast(type_), pa.array([v for _, v in patches], type_)]).take(pa.array(index))


class _LazyParse:
    """``parsed[i]`` for the Python path over a kernel-read block: the rows already parsed, the
    others parsed on first use."""

    def __init__(self, engine: Engine, rows: _Columns, parsed: dict[int, Any]) -> None:
        self.engine, self.rows, self.parsed = engine, rows, parsed

    def __getitem__(self, i: int) -> Any:
        p = self.parsed.get(i)
        if p is None:
            p = self.parsed[i] = self.engine._parse(self.rows, i)
        return p


_ELIGIBILITY: dict[int, Eligibility] = {}


def _eligibility_of(code: int) -> Eligibility:
    """The kernel's eligibility code (plain | hard_negative << 1 | gold positions << 2)."""
    e = _ELIGIBILITY.get(code)
    if e is None:
        gold = tuple(i for i in range(62) if code >> (i + 2) & 1)
        e = _ELIGIBILITY[code] = Eligibility(bool(code & 1), bool(code & 2), gold)
    return e


def _value_counts(array: pa.Array) -> dict[str, int]:
    return {d["values"]: d["counts"] for d in pc.value_counts(array).to_pylist()}


def _validate(rows: _Columns, i: int, rid: str, view: RowView) -> None:
    row = {"messages": view.messages or rows.messages(i), "tools": view.tools_json(), "calls": view.calls_json()}
    try:
        validate_example(row)
    except RowError as err:
        raise AssertionError(f"prepare produced an invalid row {rid}: {err.reason}: {err.detail}") from err


def _reject(rows: _Columns, i: int, rid: str, view: RowView, split: str, enc: tuple[bytes, bytes],
            max_length: int) -> dict[str, Any]:
    return _reject_record(rows.table.column("source")[i].as_py(), split, rid, view.tools_json(), view.calls_json(),
                          len(enc[0]) // 4, len(enc[1]) // 4, max_length)


def _reject_record(source: str, split: str, rid: str, tools: str, calls: str, n_prompt: int, n_answer: int,
                   max_length: int) -> dict[str, Any]:
    """The rejects.parquet row of an output row over the token budget."""
    raw = dumps({"id": rid, "tools": tools, "calls": calls})
    return {"source": source, "location": f"{split}:{rid}", "reason": "too_long",
            "detail": too_long_detail(n_prompt, n_answer, max_length), "raw": raw[:10_000]}


# --------------------------------------------------------------------------- workers

_ENGINE: Engine | None = None


def _init_worker() -> None:
    gc.disable()  # the caches are long-lived and acyclic: a full GC pass per block is pure cost


def _run_on(engine: Engine, task: tuple) -> BlockResult:
    kind, *args = task
    return engine.originals(*args) if kind == "originals" else engine.synthesized(*args)


def _run(task: tuple) -> BlockResult:
    assert _ENGINE is not None, "worker started without an engine"
    return _run_on(_ENGINE, task)


def _one_behind(results: Iterator[BlockResult]) -> Iterator[BlockResult]:
    """``results`` in order, each handed on once the next one is made: a block's deferred emits
    (:attr:`Engine.defer`) run on their thread while the next block is parsed here."""
    last = None
    for result in results:
        if last is not None:
            yield last
        last = result
    if last is not None:
        yield last


def _in_order(submitted: Iterator[Any], in_flight: int, result: Any) -> Iterator[BlockResult]:
    """``result(future)`` of each submitted future, in submission order; submission (pulling
    ``submitted``) stays at most ``in_flight`` futures ahead of the oldest one not yet returned."""
    window: deque = deque()
    for future in submitted:
        window.append(future)
        if len(window) > in_flight:
            yield result(window.popleft())
    while window:
        yield result(window.popleft())


class _Runner:
    """Runs block tasks in order, results in submission order: in this process, or -- with
    ``workers > 1`` -- the first block here and the others on forked workers, with a bounded
    number of tasks in flight. The workers fork after the first block, so they start with its
    compiled tools and cached tokens (a corpus's tools mostly show up in its first rows)."""

    def __init__(self, recipe: Recipe, tokenizer: Any, workers: int) -> None:
        self.recipe, self.tokenizer, self.workers = recipe, tokenizer, workers
        self.pool: Any = None
        self._env = os.environ.get("TOKENIZERS_PARALLELISM")
        if workers > 1:  # one process per core: no tokenizer threads, here or in the workers
            os.environ["TOKENIZERS_PARALLELISM"] = "false"
        self.engine = Engine(recipe, tokenizer)
        self.engine.defer = workers <= 1  # (forked workers start from this engine: no threads there)

    def _start(self) -> None:
        global _ENGINE
        _ENGINE = self.engine  # inherited by the forked workers, caches included
        self.pool = mp.get_context("fork").Pool(self.workers, initializer=_init_worker)

    def map(self, tasks: Iterator[tuple]) -> Iterator[BlockResult]:
        if self.workers <= 1 or self.pool is None:
            for t in tasks:
                result = _run_on(self.engine, t)
                if self.workers > 1:
                    self._start()  # fork now: before the result reaches the writer threads
                    yield result
                    break
                yield result
            if self.pool is None:
                return
        yield from _in_order((self.pool.apply_async(_run, (t,)) for t in tasks), 2 * self.workers,
                             lambda f: f.get())

    def tokenization(self) -> str:
        return self.engine.tokenization

    def __enter__(self) -> "_Runner":
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        global _ENGINE
        self.engine.close()
        if self.pool is not None:
            if exc_type is None:
                self.pool.close()
            else:
                self.pool.terminate()
            self.pool.join()
        _ENGINE = None
        if self.workers > 1:
            if self._env is None:
                os.environ.pop("TOKENIZERS_PARALLELISM", None)
            else:
                os.environ["TOKENIZERS_PARALLELISM"] = self._env


_DASK_ENGINES: dict[str, Engine] = {}  # in a Dask worker: one engine per prepare run


def _run_dask(run_key: str, recipe: Recipe, tokenizer: Any, task: tuple) -> BlockResult:
    engine = _DASK_ENGINES.get(run_key)
    if engine is None:  # first block of this run on this worker: compile from scratch
        engine = _DASK_ENGINES[run_key] = Engine(recipe, tokenizer)
    return _run_on(engine, task)


def _forget_dask_run(run_key: str) -> None:
    _DASK_ENGINES.pop(run_key, None)


class _DaskRunner:
    """Runs block tasks on a Dask cluster (the Prefect flows' ``orchestration.task_runner:
    dask``): an existing scheduler (``address``) or a local cluster of ``n_workers`` processes.
    Each worker builds its own :class:`Engine` for the run on its first block (an engine's
    caches only change the speed, never the bytes), results come back in submission order with
    a bounded number of blocks in flight, so the artifacts are the same bytes as in one process."""

    def __init__(self, recipe: Recipe, tokenizer: Any, address: str | None, n_workers: int) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            from hammer_core.config import ConfigError
            raise ConfigError("orchestration.task_runner is 'dask' but dask.distributed is not installed: "
                              "pip install prefect-dask, or set orchestration.task_runner: local") from None
        import uuid

        self.engine = Engine(recipe, tokenizer)  # the tokenization mode, decided here as for the pool
        self.cluster = None if address else LocalCluster(n_workers=n_workers, threads_per_worker=1,
                                                         processes=True, dashboard_address=None)
        self.client = Client(address or self.cluster)
        self.run_key = uuid.uuid4().hex
        self.inputs = self.client.scatter([recipe, tokenizer], broadcast=True)
        workers = len(self.client.scheduler_info().get("workers", {})) or n_workers  # (0 while connecting)
        self.in_flight = 2 * max(1, workers)

    def map(self, tasks: Iterator[tuple]) -> Iterator[BlockResult]:
        yield from _in_order((self.client.submit(_run_dask, self.run_key, *self.inputs, t, pure=False)
                              for t in tasks), self.in_flight, lambda f: f.result())

    def tokenization(self) -> str:
        return self.engine.tokenization

    def __enter__(self) -> "_DaskRunner":
        return self

    def __exit__(self, *_: Any) -> None:
        try:
            if self.cluster is None:  # a shared cluster: drop this run's engines there
                self.client.run(_forget_dask_run, self.run_key)
        finally:
            self.client.close()
            if self.cluster is not None:
                self.cluster.close()


# --------------------------------------------------------------------------- writing

class _GroupedWriter:
    """An :class:`ArtifactWriter` fed on a background thread in row groups of exactly
    :data:`ROW_GROUP_ROWS` rows (the last one shorter), whatever the sizes of the tables added.
    A group goes to the Parquet writer as the chunks it was added in, not copied into one
    array: the writer cuts pages of long strings and lists at chunk boundaries, so the bytes
    depend on the sizes of the tables added -- fixed by the data: the stage adds one table per
    block and split, of single-chunk columns (``_Columns.column``), whatever the workers, the
    path (kernel or Python) or the input's row groups (tested)."""

    def __init__(self, writer: ArtifactWriter) -> None:
        self.writer = writer
        self.pending: list[pa.Table] = []
        self.n = 0
        self.thread = ThreadPoolExecutor(max_workers=1)
        self.futures: deque[Future] = deque()
        self.sealing = False

    def add(self, table: pa.Table) -> None:
        if not table.num_rows:
            return
        self.pending.append(table)
        self.n += table.num_rows
        while self.n >= ROW_GROUP_ROWS:
            self._flush(ROW_GROUP_ROWS)

    def _flush(self, rows: int) -> None:
        whole = pa.concat_tables(self.pending)  # zero-copy: the copying is on the writer thread
        group, rest = whole.slice(0, rows), whole.slice(rows)
        self.pending, self.n = ([rest] if rest.num_rows else []), rest.num_rows
        self.futures.append(self.thread.submit(self.writer.write_table, group))
        while len(self.futures) > 2:  # bounded memory: wait for older writes
            self.futures.popleft().result()

    def seal_async(self) -> None:
        """Queue the last row group, the footer and the hash (:meth:`ArtifactWriter.seal`) on
        this writer's thread and return: sealing several outputs this way overlaps their tails."""
        if self.n:
            self._flush(self.n)
        self.futures.append(self.thread.submit(self.writer.seal))
        self.sealing = True

    def finish(self, **kwargs: Any) -> Artifact:
        if not self.sealing:
            self.seal_async()
        while self.futures:
            self.futures.popleft().result()
        self.thread.shutdown()
        return self.writer.finish(**kwargs)

    def abort(self) -> None:
        self.thread.shutdown(wait=True, cancel_futures=True)
        self.writer.abort()


# --------------------------------------------------------------------------- the stage

# columns worth dictionary encoding (few distinct values); the others are mostly distinct
_DICTIONARY = {"examples": ["source", "task", "variant", "messages.list.element.role"], "tokens": ["task"],
               "rejects": ["source", "reason"]}
# columns with min/max statistics (not the long texts and token ids: nothing filters on them)
_STATISTICS = {"examples": ["id", "source", "task", "messages.list.element.role", "parent_id", "variant"],
               "tokens": ["id", "task", "n_prompt"], "rejects": ["source", "reason"]}


def _output_writer(path: Path, schema: pa.Schema, kind: str, parents: list[Artifact],
                   extra: dict[str, Any] | None = None, compression: str = "zstd") -> _GroupedWriter:
    """The grouped, threaded writer of one of the stage's outputs, with its kind's settings."""
    return _GroupedWriter(ArtifactWriter(path, schema, kind=kind, parents=parents, extra=extra,
                                         dictionary=_DICTIONARY[kind], statistics=_STATISTICS[kind],
                                         compression=compression))


def _prefetched(items: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """``items``, produced on a background thread up to ``depth`` ahead: Parquet decoding
    (which releases the GIL) overlaps the work on the previous block. Exceptions are re-raised
    here, in order; closing the generator stops the thread."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((True, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((True, end))
        except BaseException as err:  # noqa: BLE001 -- handed to the consumer
            q.put((False, err))

    thread = threading.Thread(target=produce, name="hammer-prepare-read", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is end:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.05)


def _blocks(path: Path, columns: list[str] | None = None, ahead: int = 2,
            also: Callable[[pa.Table], Any] | None = None) -> Iterator[tuple]:
    """(start, table) blocks of exactly BLOCK_ROWS input rows (the last one shorter), read up to
    ``ahead`` blocks ahead on a background thread; with ``also``: (start, table, also(table)),
    ``also`` called on that thread."""
    blocks = _read_blocks(path, columns)
    if also is not None:
        blocks = ((start, t, also(t)) for start, t in blocks)
    return _prefetched(blocks, ahead)


def _read_blocks(path: Path, columns: list[str] | None = None) -> Iterator[tuple[int, pa.Table]]:
    pf = pq.ParquetFile(path, memory_map=True)  # pages straight from the page cache: no copy into fresh memory
    pending: list[pa.RecordBatch] = []
    n = start = 0
    for batch in pf.iter_batches(batch_size=BLOCK_ROWS, columns=columns):
        pending.append(batch)
        n += batch.num_rows
        while n >= BLOCK_ROWS:
            table = pa.Table.from_batches(pending)
            yield start, table.slice(0, BLOCK_ROWS)
            rest = table.slice(BLOCK_ROWS)
            pending, n = rest.to_batches(), rest.num_rows
            start += BLOCK_ROWS
    if n:
        yield start, pa.Table.from_batches(pending)


@contextmanager
def _system_memory_pool() -> Iterator[None]:
    """Arrow allocations from the C library's malloc for the duration (unless the user chose a
    pool with ``ARROW_DEFAULT_MEMORY_POOL``). Arrow's default pool, mimalloc, backs its arenas
    with transparent huge pages, and the stage's short-lived block-sized buffers keep faulting
    fresh 2 MB pages in: zeroing them was ~17 % of the stage's CPU with tokens at 60k rows
    (perf, this 2-core VM), against ~2 % with malloc (same bytes; peak RSS no higher).
    Buffers are freed by the pool that made them, so switching the default is safe."""
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        yield
        return
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(previous)


@contextmanager
def _gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def default_workers() -> int:
    """Processes for ``prepare.workers: 0``. With the compiled kernel, one core is left to
    this process (reading, merging and writing the blocks: it would be the bottleneck beside a
    worker per core), so a 2-core machine runs the blocks here, with no pool; the pure-Python
    path is CPU-bound in the workers and takes every core."""
    cores = os.cpu_count() or 1
    return max(1, min(cores - 1 if fastprep.enabled() else cores, 8))


def prepare(cfg: PipelineConfig, examples: Artifact, out_dir: str | Path, *, tokenize: bool = True,
            dask: bool = False, tokenizer: Any = None) -> PrepareResult:
    """Run the stage (see the module doc). ``tokenize=False`` renders the prompts but writes no
    token artifacts (their fields in the result are None): a dry run, and the benchmark of
    the recipe without the tokenizer. ``dask``: the blocks run on the Dask cluster of
    ``orchestration`` (``dask_address``, else a local cluster of ``dask_workers`` processes)
    instead of this machine's process pool; same bytes. ``tokenizer``: the model's, loaded by the
    caller (:func:`hammer_core.stages.prepare`); needed unless ``tokenize=False``."""
    out = Path(out_dir)
    p = cfg.prepare
    recipe = Recipe.from_config(cfg, tokenize=tokenize)
    footer = pq.ParquetFile(examples.path).metadata
    total = footer.num_rows
    # the decoded size the footer states: a small input stays in memory for pass 2
    keep_input = sum(footer.row_group(i).total_byte_size for i in range(footer.num_row_groups)) <= KEEP_INPUT_BYTES
    workers = p.workers or default_workers()
    if total <= 2 * BLOCK_ROWS:
        workers = 1  # not worth starting processes for
    if not tokenize:
        tokenizer = None
    elif tokenizer is None:
        raise ValueError("prepare tokenizes with the model's tokenizer: pass tokenizer= "
                         "(hammer_core.model.base.load_tokenizer(cfg.model)), or tokenize=False")

    extra = {"seed": cfg.prepare_seed(), "prepare": p.model_dump(exclude={"workers", "seed"})}
    tok_extra = {"tokenizer": cfg.model.tokenizer or cfg.model.name_or_path, "max_length": p.max_length,
                 "prompt_format": p.prompt_format}
    with _system_memory_pool(), ExitStack() as stack, _gc_paused():
        o = cfg.orchestration
        runner = stack.enter_context(_DaskRunner(recipe, tokenizer, o.dask_address, o.dask_workers) if dask
                                     else _Runner(recipe, tokenizer, workers))
        writers: dict[str, _GroupedWriter] = {}
        outputs = [("train", EXAMPLE_SCHEMA, "examples", extra), ("eval", EXAMPLE_SCHEMA, "examples", extra)]
        if tokenize:
            outputs += [("train_tokens", TOKENS_SCHEMA, "tokens", tok_extra),
                        ("eval_tokens", TOKENS_SCHEMA, "tokens", tok_extra)]
        for name, schema, kind, ex in outputs:
            writers[name] = _output_writer(out / f"{name}.parquet", schema, kind, [examples], ex, p.compression)
            stack.callback(writers[name].abort)  # after finish(): a no-op
        rejects = _output_writer(out / "rejects.parquet", REJECT_SCHEMA, "rejects", [examples], None, p.compression)
        stack.callback(rejects.abort)
        n_rejected = 0
        totals = {s: _Totals() for s in SPLITS}

        def consume(result: BlockResult) -> None:
            nonlocal n_rejected
            for split, o in result.resolve().outputs.items():
                writers[split].add(o.examples)
                if o.tokens is not None:
                    writers[f"{split}_tokens"].add(o.tokens)
                if o.rejects:  # written as they come: memory does not grow with the rejects
                    rejects.add(pa.Table.from_pylist(o.rejects, schema=REJECT_SCHEMA))
                    n_rejected += len(o.rejects)
                totals[split].add(o)

        variants = recipe.variants
        facts = {s: _Facts(cfg.prepare_seed(), s, variants) for s in SPLITS}
        pool = ToolPool() if recipe.hard_negatives else None
        cache = ToolCache()
        sources = _Sources(examples.path, keep_input, p.irrelevance_ratio, p.hard_negative_ratio)
        in_flight: deque[tuple[int, pa.Table]] = deque()  # blocks handed to the runner, not yet back

        def blocks() -> Iterator[tuple[int, pa.Table, Any]]:
            # an input kept whole anyway is read as fast as the reader goes (it overlaps the
            # first blocks' one-off work: tool registration, token cache warm-up); the reader
            # thread also hashes the ids (no GIL held: beside the work on the previous block)
            for start, t, hashed in _blocks(examples.path, ahead=1 << 20 if keep_input else 2, also=recipe.hashes):
                in_flight.append((start, t))
                yield start, t, hashed

        for result in _one_behind(runner.map(("originals", t, start, hashed) for start, t, hashed in blocks())):
            consume(result)
            for split, a in result.analysis.items():
                facts[split].add(a)
            start, table = in_flight.popleft()  # this result's block
            if variants:
                sources.add(start, table, result.analysis, facts)
            if pool is not None:
                for text in result.new_tools.values():
                    pool.add(cache.get(text))  # type: ignore[arg-type]

        plans, irr_summary = _plan_synthesis(facts, p, cfg.prepare_seed(), pool)
        if plans:
            for result in _one_behind(runner.map(_synth_tasks(sources.blocks(plans), plans))):
                consume(result)
        tokenization = runner.tokenization()

        for w in [*writers.values(), rejects]:  # the outputs' last row groups, footers and hashes, at once
            w.seal_async()
        train_art = writers["train"].finish()
        eval_art = writers["eval"].finish()
        train_tok_art = eval_tok_art = None
        if tokenize:
            writers["train_tokens"].writer.parents = [train_art]
            writers["eval_tokens"].writer.parents = [eval_art]
            train_tok_art = writers["train_tokens"].finish()
            eval_tok_art = writers["eval_tokens"].finish()
        rej_art = rejects.finish()

    summary = {
        "input_rows": total,
        "train": totals["train"].stats(),
        "eval": totals["eval"].stats(),
        "irrelevance": irr_summary,
        "rejected_too_long": n_rejected,
        "trimmed": totals["train"].counts["trimmed"] + totals["eval"].counts["trimmed"],
        "train_tokens": totals["train"].token_stats(),
        "eval_tokens": totals["eval"].token_stats(),
        "tokenization": tokenization,
    }
    atomic_write_json(out / "summary.json", summary)
    return PrepareResult(train_art, eval_art, train_tok_art, eval_tok_art, rej_art, summary)  # type: ignore[arg-type]


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
                          "eligible": {"irrelevance": f.eligible[VARIANT], "hard_negative": f.eligible[HARD_NEGATIVE]}}
    return plans, summary


def _synth_tasks(source_blocks: Iterator[tuple[np.ndarray, pa.Table]], plans: Plans) -> Iterator[tuple]:
    """Blocks of BLOCK_ROWS source rows to synthesize from, in input order, with their plans
    (``source_blocks``: (input positions, rows), ascending, holding every planned row)."""
    wanted = np.array(sorted(plans), dtype=np.int64)
    buf: list[pa.Table] = []
    meta: list[tuple[str, tuple[str, list[str] | None]]] = []
    for pos, table in source_blocks:
        lo, hi = np.searchsorted(wanted, [pos[0], pos[-1] + 1]) if len(pos) else (0, 0)
        if hi > lo:
            sel = wanted[lo:hi]
            buf.append(table.take(pa.array(np.searchsorted(pos, sel))))
            meta.extend(plans[int(j)] for j in sel)
        while len(meta) >= BLOCK_ROWS:
            yield _synth_task(buf, meta, BLOCK_ROWS)
            buf, meta = [pa.concat_tables(buf).slice(BLOCK_ROWS)], meta[BLOCK_ROWS:]
    if meta:
        yield _synth_task(buf, meta, len(meta))


def _synth_task(buf: list[pa.Table], meta: list, n: int) -> tuple:
    table = pa.concat_tables(buf).slice(0, n).combine_chunks()
    return ("synthesized", table, [s for s, _ in meta[:n]], [plan for _, plan in meta[:n]])


class _Facts:
    """Pass-1 analysis of one split, accumulated over blocks, with the rows' selection ranks
    (:func:`hammer_core.irrelevance.ranks`) for each synthesized variant the recipe asks for."""

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


_ELIGIBLE = {VARIANT: "plain", HARD_NEGATIVE: "hard_negative"}  # Eligibility flag of each variant


class _Sources:
    """The source rows pass 2 will need, kept from pass 1 so that it does not read the input
    again. An input whose decoded size is at most :data:`KEEP_INPUT_BYTES` is kept whole.
    A larger one: each block's rows *likely* to be selected -- eligible and ranked below a
    threshold set from the split's running counts with a margin (selection takes the
    best-ranked eligible rows, and ranks are uniform hashes) -- while they fit in
    :data:`KEEP_INPUT_BYTES`. If the final selection needs a row that was not kept (a corpus
    whose later blocks differ, the memory bound), pass 2 reads the input again: only the
    speed depends on this, never the output."""

    MARGIN = {VARIANT: 1.15, HARD_NEGATIVE: 2.0}  # hard negatives: some candidates find no replacement

    def __init__(self, path: Path, keep_all: bool, ratio: float, hard_ratio: float) -> None:
        self.path, self.keep_all = path, keep_all
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
            for variant, need in ((VARIANT, n_plain), (HARD_NEGATIVE, n_hard)):
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
        for start, t in _blocks(self.path):
            yield np.arange(start, start + t.num_rows, dtype=np.int64), t


class _Totals:
    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.by_variant: Counter = Counter()
        self.by_task: Counter = Counter()
        self.max_len = 0

    def add(self, o: SplitOutput) -> None:
        self.counts.update(o.counts)
        self.by_variant.update(o.by_variant)
        self.by_task.update(o.by_task)
        self.max_len = max(self.max_len, o.max_len)

    def stats(self) -> dict[str, Any]:
        rows = self.counts["rows"]
        return {"rows": rows, "no_call_share": round(self.counts["no_call"] / max(1, rows), 4),
                "by_variant": dict(sorted(self.by_variant.items())),
                "by_task": dict(sorted(self.by_task.items()))}

    def token_stats(self) -> dict[str, Any]:
        rows = self.counts["rows"]
        return {"rows": rows, "total": self.counts["tokens"], "max_len": self.max_len,
                "mean_len": round(self.counts["tokens"] / max(1, rows), 1)}


def load_prepared(out_dir: str | Path) -> PrepareResult:
    from hammer_core.artifacts import open_artifact
    out = Path(out_dir)
    summary_path = out / "summary.json"
    if not summary_path.exists():
        raise FileNotFoundError(f"{out} is not a prepare output (no summary.json); run `hammer prepare` first")
    return PrepareResult(*(open_artifact(out / f"{n}.parquet") for n in
                           ("train", "eval", "train_tokens", "eval_tokens", "rejects")),
                         summary=json.loads(summary_path.read_text()))


__all__ = ["BLOCK_ROWS", "ROW_GROUP_ROWS", "Engine", "PrepareResult", "Recipe", "default_workers", "is_eval",
           "load_prepared", "prepare", "split_rows"]
