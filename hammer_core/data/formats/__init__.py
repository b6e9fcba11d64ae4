"""Corpus formats: per-format normalizers into canonical rows, and the registry of formats.

Every input format has one *normalizer* that turns one raw record (a dict, as read by
:func:`hammer_core.data.readers.read_records`) into a list of :class:`Candidate` rows: one per
*target* the record holds. A single-turn record (xLAM, BFCL, Hammer's test sets) has one
target; a conversation (Glaive, sharegpt, OpenAI chat) has one per assistant turn that is
learned from (see :mod:`hammer_core.data.formats.common` for the multi-turn rules). A candidate is
a canonical row dict with the keys of :data:`hammer_core.schema.EXAMPLE_SCHEMA`, or the
:class:`RowError` that makes that one target unusable.

A normalizer *raises* :class:`RowError` when the record as a whole is unusable (it cannot
be parsed into a conversation, its tools are malformed...): that costs one reject. Once a
record is parsed, each target is validated on its own, so one bad turn costs one row, not
the conversation. A row error is never fatal: ingestion records it in the rejects artifact
(with the reason code and the detail) and goes on. :class:`RowError` and its reason codes live in
:mod:`hammer_core.data.row_errors` (re-exported here); the shared types in :mod:`.base`.

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

from collections.abc import Mapping
from typing import Any

from hammer_core.data.formats import bfcl, glaive, hammer_testset, openai, sharegpt, xlam
from hammer_core.data.formats.base import Candidate, Format, Normalizer, Records
from hammer_core.data.row_errors import REASONS, RowError
from hammer_core.data.validation import MAPPINGS

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


__all__ = ["FORMATS", "MAPPINGS", "REASONS", "Candidate", "Format", "Normalizer", "Records", "RowError",
           "detect_format", "get_format"]
