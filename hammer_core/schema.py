"""The canonical example schema: the one Arrow schema every stage reads and writes.

One row is one training or evaluation example for function calling:

==========  =====================================  =============================================
column      Arrow type                             meaning
==========  =====================================  =============================================
id          string, not null                       stable id: the source's id, or a content hash
source      string, not null                       the corpus the row came from (e.g. ``xlam``)
task        string, not null                       CGC-LoRA task cluster (selects the gate/experts)
messages    list<struct<role, content>>, not null  the conversation up to the call; roles are
                                                   ``system``, ``user``, ``assistant``, ``tool``
tools       string (JSON), not null                JSON list of function specs, JSON-schema style:
                                                   ``{"name", "description", "parameters":
                                                   {"type": "object", "properties": {p: {"type",
                                                   "description", "default"?}}, "required": [...]}}``
calls       string (JSON), not null                JSON list of target calls
                                                   ``[{"name": ..., "arguments": {...}}]``;
                                                   ``[]`` means "no call" (irrelevance)
parent_id   string, nullable                       lineage: the id of the row this one was
                                                   synthesized from (null for ingested rows)
variant     string, not null                       lineage: how the row was made: ``original``,
                                                   ``irrelevance``, ``masked``, ...
==========  =====================================  =============================================

``tools`` and ``calls`` are JSON strings rather than nested Arrow types because function
specs are free-form JSON schemas (arbitrary nesting, heterogeneous defaults) that do not fit
a fixed Arrow struct; they are written with :func:`dumps` (compact, declaration order kept)
so that the same input gives the same bytes.

Multi-turn conversations (Glaive, sharegpt, OpenAI chat) become one row per *target* turn:
``messages`` is the conversation before that turn and ``calls`` that turn's calls, the k-th
target of a record having the id ``<record id>#t<k>``. Inside ``messages``, an earlier
assistant call turn is ``{"role": "assistant", "content": <its calls as the canonical JSON
list, the same text as a target>}``, a tool result is ``{"role": "tool", "content": <the
observation text>}`` and an assistant text turn is its text. An assistant text answer to a
user turn is itself a target with ``calls == "[]"`` (see :mod:`hammer_core.data.formats.common`).
This needs no new column: the schema (and :data:`SCHEMA_VERSION`) is unchanged.

Rejected rows (see :data:`REJECT_SCHEMA`) keep the raw input and the reason, so no input row
is ever lost: ``read = kept + rejected + duplicates`` (exact duplicates are dropped and
counted, see :mod:`hammer_core.data.ingest`).
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pyarrow as pa

SCHEMA_VERSION = "1"

MESSAGE_TYPE = pa.struct([pa.field("role", pa.string(), nullable=False),
                          pa.field("content", pa.string(), nullable=False)])

EXAMPLE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("messages", pa.list_(pa.field("item", MESSAGE_TYPE, nullable=False)), nullable=False),
        pa.field("tools", pa.string(), nullable=False),
        pa.field("calls", pa.string(), nullable=False),
        pa.field("parent_id", pa.string(), nullable=True),
        pa.field("variant", pa.string(), nullable=False),
    ],
    metadata={"hammer.schema_version": SCHEMA_VERSION, "hammer.kind": "examples"},
)

REJECT_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("location", pa.string(), nullable=False),  # "data/x.jsonl:17" (1-based line) or "x.parquet#3" (0-based)
        pa.field("reason", pa.string(), nullable=False),  # a reason code, see data.row_errors.REASONS
        pa.field("detail", pa.string(), nullable=False),  # human-readable explanation
        pa.field("raw", pa.string(), nullable=False),  # the input row as text, truncated
    ],
    metadata={"hammer.schema_version": SCHEMA_VERSION, "hammer.kind": "rejects"},
)

# Columns added by `hammer prepare` on top of the example schema.
SPLIT_COLUMN = "split"  # "train" | "eval"


def dumps(obj: Any) -> str:
    """Canonical JSON: compact separators, unicode kept, key order as built (never sorted:
    the order of a function's parameters is part of its signature). The same input gives the
    same bytes because every stage builds its dicts in a deterministic order."""
    return _COMPACT(obj)


def parse_json(text: str) -> Any:
    """``json.loads`` semantics, fast: orjson, falling back to ``json`` for what orjson refuses
    (``NaN``, lone surrogates) -- which also raises ``json``'s own error for invalid JSON -- and
    for any text with a run of 19 or more digits (orjson reads an integer beyond 64 bits as a
    float, silently). Both give equal values for the rest."""
    if _LONG_DIGITS not in text.encode("utf-8", "surrogatepass").translate(_DIGITS):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


# a run of 19 ASCII digits, found in the UTF-8 bytes with every digit made "0" and every other
# byte " " (ten times faster than the regex ``[0-9]{19}`` on a tools list)
_DIGITS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_DIGITS = b"0" * 19


# json.dumps(obj, separators=(",", ":"), ensure_ascii=False), without a new encoder every call
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def examples_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Build a table in :data:`EXAMPLE_SCHEMA` from row dicts (missing lineage gets defaults)."""
    for r in rows:
        r.setdefault("parent_id", None)
        r.setdefault("variant", "original")
    return pa.Table.from_pylist(rows, schema=EXAMPLE_SCHEMA)


def check_examples(table: pa.Table) -> None:
    """Raise ValueError naming the missing or mistyped column if ``table`` is not canonical."""
    for field in EXAMPLE_SCHEMA:
        if field.name not in table.column_names:
            raise ValueError(f"not a canonical examples table: column {field.name!r} is missing "
                             f"(columns: {table.column_names})")
        got = table.schema.field(field.name).type
        if not got.equals(field.type):
            raise ValueError(f"column {field.name!r} has type {got}, expected {field.type}")
