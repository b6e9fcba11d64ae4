"""Why an input row is rejected: the reason codes and :class:`RowError`.

Readers, normalizers, the validator, masking and the served model raise :class:`RowError` for
one unusable row; ingestion writes it to ``rejects.parquet`` with its reason code
(:data:`REASONS`) and detail, and goes on.
"""

from __future__ import annotations

from typing import Any

#: Reason codes a :class:`RowError` may carry, with a one-line description each.
REASONS: dict[str, str] = {
    "bad_json": "unparseable JSON (the line itself, or a JSON-string field such as tools/answers "
                "or a call's arguments), or JSON that is not an object where one is expected",
    "invalid_utf8": "the row's bytes are not valid UTF-8 (or its JSON escapes encode a lone "
                    "surrogate, which no UTF-8 text can hold)",
    "row_too_large": "the raw row is larger than the source's max_row_bytes",
    "too_deep": "the row nests arrays/objects (or type expressions such as List[List[...]]) "
                "deeper than the pipeline walks (validation.MAX_DEPTH levels in tools and calls)",
    "missing_field": "a field the format requires is absent",
    "bad_field": "a field has the wrong type or value (e.g. the query is not a string, a "
                 "conversation turn has an unknown role)",
    "bad_tool_spec": "a tool is not a valid function spec: not an object, no string name, "
                     "parameters not an object schema, a required argument not declared...",
    "duplicate_tool": "two different tools share one name",
    "no_tools": "the row offers no function at all (e.g. Glaive's 'no access to external "
                "functions' conversations): nothing to learn about calling",
    "no_target": "the conversation has no assistant turn to learn from",
    "bad_call": "a call is not an object {name: str, arguments: object}, or the calls are not "
                "a list",
    "unknown_function": "a call names a function that is not among the row's tools",
    "unknown_argument": "a call passes an argument that its function does not declare",
    "missing_required_argument": "a call omits an argument that its function requires",
    "bad_argument_type": "an argument's value does not fit the type its function declares",
    "empty_query": "the last user message is missing or blank",
    "duplicate_id": "the row's id was already kept earlier in the same ingest run (with "
                    "different content; exact duplicates are dropped and counted instead)",
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


__all__ = ["REASONS", "RowError"]
