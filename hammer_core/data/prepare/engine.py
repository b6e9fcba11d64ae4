"""The per-block work of the prepare stage: :class:`Recipe` (what a worker needs) and
:class:`Engine` (one process's tool cache, masker and tokenizer), which turns a block of source
rows into every copy of its output rows -- split, masked, rendered and tokenized -- with the
pass-1 analysis, and a block of planned rows into synthesized ones.

Two implementations of the per-row work, with the same output bytes: the compiled kernel
(:class:`~hammer_core.data.prepare.kernel_path.KernelPath`, used when the extension is built and
not switched off), and the pure-Python path here (:meth:`Engine._emit` and its helpers), the
oracle the kernel is tested against and the fallback for the rows the kernel hands back."""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from hammer_core.config import PipelineConfig
from hammer_core.data.compiled import fastprep
from hammer_core.data.irrelevance import HARD_NEGATIVE, PLAIN_IRRELEVANCE, eligibility, synthesize
from hammer_core.data.masking import (CompiledTool, Masker, RowView, ToolCache, copy_keys, dedup_by_name,
                                      output_identity, parse_json, plain_view, row_keys, streams, words_needed)
from hammer_core.data.prepare.kernel_path import KernelPath
from hammer_core.data.prepare.rows import (_MESSAGES, SPLITS, SPOT_CHECK_EVERY, VALIDATE_EVERY, Analysis,
                                           BlockResult, SplitOutput, _Columns, _patched, _reject, _validate,
                                           is_eval)
from hammer_core.data.prepare.synthesis import rank_purpose
from hammer_core.data.prompts import prompt_fragments, target_fragments
from hammer_core.data.tokenization import TOKENS_SCHEMA, FragmentTokenizer, check_chat_template_tools, \
    encode_chat_template, tokens_table
from hammer_core.schema import EXAMPLE_SCHEMA


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
        shares = ((PLAIN_IRRELEVANCE, p.irrelevance_ratio), (HARD_NEGATIVE, p.hard_negative_ratio))
        variants = tuple(v for v, share in shares if share > 0)
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


class Engine(KernelPath):
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

