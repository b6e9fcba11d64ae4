"""Corpus formats: per-format normalizers into canonical rows, and the row-level error.

Every input format has one *normalizer* that turns one raw record (a dict, as read by
:func:`hammer_core.data.ingest.read_records`) into a list of :class:`Candidate` rows: one per
*target* the record holds. A single-turn record (xLAM, BFCL, Hammer's test sets) has one
target; a conversation (Glaive, sharegpt, OpenAI chat) has one per assistant turn that is
learned from (see :mod:`hammer_core.data.formats.common` for the multi-turn rules). A candidate is
a canonical row dict with the keys of :data:`hammer_core.schema.EXAMPLE_SCHEMA`, or the
:class:`RowError` that makes that one target unusable.

A normalizer *raises* :class:`RowError` when the record as a whole is unusable (it cannot
be parsed into a conversation, its tools are malformed...): that costs one reject. Once a
record is parsed, each target is validated on its own, so one bad turn costs one row, not
the conversation. A row error is never fatal: ingestion records it in the rejects artifact
(with the reason code and the detail) and goes on.

Known formats live in :data:`FORMATS`, in detection order; :func:`detect_format` picks the
first one whose identifying keys (and optional shape test) a record has.

==================  ===========================================  ==============================
format              identifying shape                            module
==================  ===========================================  ==============================
``hammer_testset``  ``query`` (a *list* of messages), ``tools``,  :mod:`.hammer_testset`
                    ``answers``
``xlam``            ``query`` (a string), ``tools``, ``answers``  :mod:`.xlam`
``glaive``          ``system`` and ``chat`` strings              :mod:`.glaive`
``sharegpt``        ``conversations``                            :mod:`.sharegpt`
``openai``          ``messages``                                 :mod:`.openai`
``bfcl``            ``question`` and ``function``                 :mod:`.bfcl`
==================  ===========================================  ==============================

A format may also *bind* each input file before its records are normalized
(:attr:`Format.bind_file`): BFCL uses it to join every question file with its
``possible_answer/`` file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

#: ``isinstance(x, MAPPINGS)``: a dict (checked first, fast) or any other Mapping (the ABC
#: check alone costs more than parsing on the hot path).
MAPPINGS = (dict, Mapping)

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


@dataclass(frozen=True)
class Candidate:
    """One target of a record: the canonical ``row``, or the ``error`` that rejects it.

    ``suffix`` tells the targets of one record apart: ``""`` for a single-target record,
    ``"#t<k>"`` (1-based) for the k-th target of a conversation. It is appended to the
    record's location in the rejects, and is already part of the row's ``id``.
    """

    suffix: str
    row: dict[str, Any] | None = None
    error: RowError | None = None
    #: digest of the row's tools as a *set* (see :func:`~hammer_core.data.formats.common.dump_tools`)
    #: when the normalizer computed it; ingestion computes it otherwise
    tools_digest: bytes | None = None


class Normalizer(Protocol):
    """``normalize(raw, *, source, task, index) -> [Candidate, ...]``; raises RowError when the
    whole record is unusable. ``index`` is the record's 0-based position in its source."""

    def __call__(self, raw: Mapping[str, Any], *, source: str, task: str,
                 index: int) -> list[Candidate]: ...


#: ``(location, record)`` pairs as the readers yield them; a record is a dict or a RowError.
Records = Iterator[tuple[str, "dict[str, Any] | RowError"]]


@dataclass(frozen=True)
class Format:
    """A corpus format: the keys (and optional shape test) that identify its records, its
    normalizer, and an optional per-file binding (``bind_file(path, records) -> records``)."""

    name: str
    keys: frozenset[str]
    normalize: Normalizer
    description: str = ""
    shape: Callable[[Mapping[str, Any]], bool] | None = None
    bind_file: Callable[[Path, Records], Records] | None = None

    def matches(self, record: Mapping[str, Any]) -> bool:
        return self.keys <= record.keys() and (self.shape is None or self.shape(record))


# Imported here, after RowError exists, because the format modules import it from us.
from hammer_core.data.formats import bfcl, glaive, hammer_testset, openai, sharegpt, xlam  # noqa: E402

#: Registered formats, in detection order (the Hammer test-set shape before xLAM's: both have
#: query/tools/answers, and only the type of ``query`` tells them apart).
FORMATS: dict[str, Format] = {f.name: f for f in (
    Format(name="hammer_testset", keys=frozenset({"query", "tools", "answers"}),
           normalize=hammer_testset.normalize_hammer_testset,
           shape=hammer_testset.is_message_list_query,
           description="Hammer's test sets: {id?, query: [messages], tools, answers}"),
    Format(name="xlam", keys=frozenset({"query", "tools", "answers"}),
           normalize=xlam.xlam_candidates,
           description="xLAM-function-calling-60k: {id, query, tools, answers}"),
    Format(name="glaive", keys=frozenset({"system", "chat"}),
           normalize=glaive.normalize_glaive,
           description="Glaive function-calling v2: {system, chat} strings"),
    Format(name="sharegpt", keys=frozenset({"conversations"}),
           normalize=sharegpt.normalize_sharegpt,
           description="LLaMA-Factory sharegpt: {conversations, tools, system?}"),
    Format(name="openai", keys=frozenset({"messages"}),
           normalize=openai.normalize_openai,
           description="OpenAI chat: {messages with tool_calls, tools}"),
    Format(name="bfcl", keys=frozenset({"question", "function"}),
           normalize=bfcl.normalize_bfcl, bind_file=bfcl.bind_answers,
           description="BFCL question files (+ possible_answer/): {id, question, function}"),
)}


def detect_format(record: Mapping[str, Any]) -> str:
    """The name of the first format in :data:`FORMATS` that ``record`` matches.

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


__all__ = ["FORMATS", "MAPPINGS", "REASONS", "Candidate", "Format", "Normalizer", "RowError", "detect_format",
           "get_format"]
