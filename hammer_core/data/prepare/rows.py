"""What passes between the parts of the prepare stage: a block's rows (:class:`_Columns`), its
results (:class:`SplitOutput`, :class:`Analysis`, :class:`BlockResult`), the train/eval split by
row id, and the checks every output row may get (validation, the reject record of a row over
the token budget)."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hammer_core.data.irrelevance import Eligibility
from hammer_core.data.masking import RowView
from hammer_core.data.row_errors import RowError
from hammer_core.data.tokenization import too_long_detail
from hammer_core.data.validation import validate_example
from hammer_core.schema import MESSAGE_TYPE, dumps

SPLITS = ("train", "eval")
VALIDATE_EVERY = 64  # every 64th output row is re-validated with the ingestion validator
SPOT_CHECK_EVERY = 4096  # one output row in 4,096 of each block is re-tokenized whole by the HF tokenizer (a check)
_MESSAGES = pa.list_(pa.field("item", MESSAGE_TYPE, nullable=False))


def is_eval(row_id: str, seed: int, fraction: float) -> bool:
    h = int.from_bytes(hashlib.sha256(f"{seed}:split:{row_id}".encode()).digest()[:8], "big")
    return h / 2**64 < fraction


def split_rows(rows: list[dict[str, Any]], seed: int, fraction: float) -> tuple[list, list]:
    train, evals = [], []
    for r in rows:
        (evals if is_eval(r["id"], seed, fraction) else train).append(r)
    return train, evals


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

    def __init__(self, engine: Any, rows: _Columns, parsed: dict[int, Any]) -> None:
        self.engine, self.rows, self.parsed = engine, rows, parsed

    def __getitem__(self, i: int) -> Any:
        p = self.parsed.get(i)
        if p is None:
            p = self.parsed[i] = self.engine._parse(self.rows, i)
        return p


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

