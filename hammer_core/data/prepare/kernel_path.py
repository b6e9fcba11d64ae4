"""The compiled kernel's side of :class:`~hammer_core.data.prepare.engine.Engine`: its per-block
work through :mod:`hammer_core.data.compiled.fastprep` (parse, emit, token assembly), with the
same output bytes as the Python path, which it hands every row it does not handle.

:class:`KernelPath` is a mixin of :class:`Engine`: its methods use the engine's state (recipe,
tool cache, masker, fragment tokenizer) and its Python path (``_parse``, ``_views``, ``_emit``)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hammer_core.data.compiled import fastprep
from hammer_core.data.irrelevance import PLAIN_IRRELEVANCE, SUFFIX, Eligibility, eligibility, synthesize_tools, \
    synthesized_row
from hammer_core.data.masking import CompiledTool, ToolCache, copy_keys, output_identity, row_keys
from hammer_core.data.prepare.rows import (_MESSAGES, SPLITS, SPOT_CHECK_EVERY, VALIDATE_EVERY, Analysis,
                                           BlockResult, SplitOutput, _Columns, _LazyParse, _patched, _Pending,
                                           _reject_record, _value_counts)
from hammer_core.data.prompts import prompt_fragments, target_fragments
from hammer_core.data.row_errors import RowError
from hammer_core.data.tokenization import TOKEN_IDS, TOKENS_SCHEMA, tokens_table
from hammer_core.data.validation import validate_example
from hammer_core.schema import EXAMPLE_SCHEMA


class KernelPath:
    """The kernel path of :class:`~hammer_core.data.prepare.engine.Engine` (a mixin)."""

    # set by Engine.__init__
    fast: fastprep.FastKernel | None
    defer: bool

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

    def _fast_synthesized(self, src: "_Columns", parsed_c: Any, splits: Sequence[str],
                          plans: Sequence[tuple[str, list[str] | None]]) -> BlockResult:
        """:meth:`synthesized` with the kernel's parse of the source rows; the synthesized rows are
        built column-wise (messages, source and task taken over in Arrow)."""
        k = _KernelParse.of(parsed_c, src.n)
        if not k.status.any() and all(v == PLAIN_IRRELEVANCE and reps is None for v, reps in plans):
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
                raise AssertionError(f"row {rid!r} was selected for {PLAIN_IRRELEVANCE} but has no gold tool")
            take = pa.array(pos, pa.int64())
            ids, parents = src.column("id").take(take), src.column("parent_id").take(take)
            has_parent = pc.fill_null(pc.not_equal(parents, ""), False)  # synthesized_row: parent or the id
            columns[split] = (take, pc.binary_join_element_wise(ids, SUFFIX[PLAIN_IRRELEVANCE], ""),
                              fastprep.string_array(len(pos), *parsed_c.strip_gold(pos.tobytes())),
                              pc.if_else(has_parent, parents, ids),
                              pa.array([PLAIN_IRRELEVANCE] * len(pos), pa.string()))
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

    def _emit_fast(self, rows: "_Columns", idx: list[int], parsed_c: Any, py: dict[int, Any], split: str,
                   fallback: Callable[[], SplitOutput]) -> SplitOutput | _Pending:
        """:meth:`_emit` through the kernel (the same rows, bytes and counts); the rows the kernel
        does not handle are made here and passed to it. ``fallback()``: the Python path's output,
        taken when the kernel cannot make this one (a row to trim, or columns it cannot read).
        With :attr:`defer` (render-only and kernel tokens), the kernel's loop runs on the emit
        thread and the output is finished by :meth:`_Pending.result`."""
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
            for q in np.flatnonzero(over).tolist():
                rejects.append(_reject_record(table.column("source")[q].as_py(), split,
                                              ids_a[q].as_py(), tools_a[q].as_py(), calls_a[q].as_py(),
                                              int(n_prompt[q]), int(lengths_a[q] - n_prompt[q]), limit))
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


_ELIGIBILITY: dict[int, Eligibility] = {}


def _eligibility_of(code: int) -> Eligibility:
    """The kernel's eligibility code (plain | hard_negative << 1 | gold positions << 2)."""
    e = _ELIGIBILITY.get(code)
    if e is None:
        gold = tuple(i for i in range(62) if code >> (i + 2) & 1)
        e = _ELIGIBILITY[code] = Eligibility(bool(code & 1), bool(code & 2), gold)
    return e

