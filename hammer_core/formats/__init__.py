"""Corpus formats: per-format normalizers into the canonical row, and the row-level error.

Every input format has one *normalizer* that turns one raw record (a dict, as read by
:func:`hammer_core.ingest.read_records`) into one canonical row dict with the keys of
:data:`hammer_core.schema.EXAMPLE_SCHEMA`, or raises :class:`RowError`. A row error is never
fatal: ingestion records it in the rejects artifact (with the reason code and the detail) and
goes on with the next row.

Known formats live in :data:`FORMATS`; :func:`detect_format` picks one from a record's keys.
Adding a format (Glaive, sharegpt, OpenAI chat, BFCL...) means writing a normalizer module
next to :mod:`hammer_core.formats.xlam` and registering a :class:`Format` here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

#: Reason codes a :class:`RowError` may carry, with a one-line description each.
REASONS: dict[str, str] = {
    "bad_json": "unparseable JSON (the line itself, or a JSON-string field such as tools/answers), "
                "or JSON that is not an object where one is expected",
    "missing_field": "a field the format requires is absent",
    "bad_field": "a field has the wrong type (e.g. the query is not a string)",
    "bad_tool_spec": "a tool is malformed: not an object, no string name, parameters not an "
                     "object, a parameter spec not an object...",
    "duplicate_tool": "two different tools share one name",
    "bad_call": "a call is not an object {name: str, arguments: object}, or the calls are not "
                "a list",
    "unknown_function": "a call names a function that is not among the row's tools",
    "unknown_argument": "a call passes an argument that its function does not declare",
    "missing_required_argument": "a call omits an argument that its function requires",
    "empty_query": "the last user message is missing or blank",
    "duplicate_id": "the row's id was already seen earlier in the same ingest run",
    "unknown_format": "the record matches no known corpus format",
}


class RowError(Exception):
    """One input row is unusable. ``reason`` is a code from :data:`REASONS`; ``detail`` says why
    in words and names the offending tool or argument; ``raw`` optionally carries the raw input
    text when the reader could not even parse it (e.g. a bad JSON line)."""

    def __init__(self, reason: str, detail: str, *, raw: str | None = None) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown RowError reason {reason!r}; known: {sorted(REASONS)}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.raw = raw

    def __reduce__(self) -> tuple[Any, ...]:  # picklable despite keyword-only args
        return (_rebuild_row_error, (self.reason, self.detail, self.raw))


def _rebuild_row_error(reason: str, detail: str, raw: str | None) -> RowError:
    return RowError(reason, detail, raw=raw)


class Normalizer(Protocol):
    """``normalize(raw, *, source, task, index) -> canonical row dict`` (raises RowError)."""

    def __call__(self, raw: Mapping[str, Any], *, source: str, task: str,
                 index: int) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Format:
    """A corpus format: the keys that identify its records and its normalizer."""

    name: str
    keys: frozenset[str]
    normalize: Normalizer
    description: str = ""

    def matches(self, record: Mapping[str, Any]) -> bool:
        return self.keys <= record.keys()


# Imported here, after RowError exists, because the format modules import RowError from us.
from hammer_core.formats.xlam import normalize_xlam  # noqa: E402

#: Registered formats, in detection order.
FORMATS: dict[str, Format] = {
    "xlam": Format(
        name="xlam",
        keys=frozenset({"query", "tools", "answers"}),
        normalize=normalize_xlam,
        description="xLAM-function-calling-60k: {id, query, tools, answers}",
    ),
}


def detect_format(record: Mapping[str, Any]) -> str:
    """The name of the first format in :data:`FORMATS` whose identifying keys ``record`` has.

    Raises ValueError listing the known formats (and the keys each needs) otherwise.
    """
    if not isinstance(record, Mapping):
        raise ValueError(f"cannot detect the format of a {type(record).__name__}: "
                         "expected a JSON object (dict)")
    for fmt in FORMATS.values():
        if fmt.matches(record):
            return fmt.name
    known = "; ".join(f"{f.name} (needs keys {sorted(f.keys)})" for f in FORMATS.values())
    raise ValueError(f"unrecognized record format: keys {sorted(map(str, record.keys()))}; "
                     f"known formats: {known}")


def get_format(name: str) -> Format:
    """The registered :class:`Format` called ``name``; ValueError listing known names otherwise."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown format {name!r}; known formats: {sorted(FORMATS)}") from None


__all__ = ["FORMATS", "REASONS", "Format", "Normalizer", "RowError", "detect_format",
           "get_format"]
