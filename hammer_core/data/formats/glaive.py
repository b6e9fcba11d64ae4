"""Glaive function-calling v2 rows → canonical rows (one per target turn).

A Glaive row is ``{"system", "chat"}``, two plain strings::

    system: "SYSTEM: You are a helpful assistant with access to the following functions.
             Use them if required -\\n{\\n  \\"name\\": \\"get_news\\", ...}\\n\\n{...}\\n"
    chat:   "USER: ...\\n\\n\\nASSISTANT: <functioncall> {\\"name\\": \\"get_news\\",
             \\"arguments\\": '{\\"country\\": \\"US\\"}'} <|endoftext|>\\n\\n\\n
             FUNCTION RESPONSE: {...}\\n\\n\\nASSISTANT: Here is ... <|endoftext|>\\n\\n\\nUSER: ..."

The system string lists the functions as JSON-schema objects after ``Use them if required -``
(one after another, separated by blank lines or commas, or as one JSON list); whatever prose
precedes the marker becomes a ``system`` message unless it is Glaive's stock sentence. Turns
start at a line beginning with ``USER:``, ``ASSISTANT:`` or ``FUNCTION RESPONSE:``; a trailing
``<|endoftext|>`` is dropped. A call turn is ``<functioncall> {"name": ..., "arguments":
'<JSON>'}``: the arguments are a *single-quoted* JSON string, so the call is not JSON as
written. It is parsed as JSON when it happens to be (arguments as an object, or as a
double-quoted string), else by pattern; an argument text that is still not JSON (a stray
``\\'`` is unescaped first) is a ``bad_json`` reject of the conversation.

Decisions (see :mod:`hammer_core.data.formats.common` for the multi-turn rules):

- Rows with no function at all (``"... with no access to external functions."``) are rejected
  as ``no_tools``: with nothing to call they teach nothing about calling, and the "no call"
  skill is learned far better from rows that *offer* functions and do not use them.
- Rows with functions where the assistant answers a user turn in text *are* kept: each such
  turn is a ``calls = []`` target (real irrelevance / missing-parameter data).
- A conversation that cannot be parsed (text before the first turn, an unparseable
  ``<functioncall>``, a malformed function list) is one ``bad_json``/``bad_field`` reject.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from hammer_core.data.formats.base import Candidate
from hammer_core.data.row_errors import RowError
from hammer_core.data.formats.common import (Turn, conversation_candidates, convert_call,
                                        convert_schema_tool, record_id, unique_tools)

FUNCTIONS_MARKER = "Use them if required -"
_SYSTEM_PREFIX = re.compile(r"^\s*SYSTEM:\s*")
_STOCK_PROSE = frozenset({
    "You are a helpful assistant with access to the following functions.",
    "You are a helpful assistant, with no access to external functions.",
})
_TURN = re.compile(r"(?:^|\n)[ \t]*(USER|ASSISTANT|FUNCTION RESPONSE):[ \t]?")
_ROLES = {"USER": "user", "ASSISTANT": "assistant", "FUNCTION RESPONSE": "tool"}
_END = "<|endoftext|>"
_CALL_TAG = "<functioncall>"
_GLAIVE_CALL = re.compile(
    r"""^\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"arguments"\s*:\s*'(.*)'\s*\}$""", re.DOTALL)
_DECODER = json.JSONDecoder()


def split_system(system: str) -> tuple[str, list[Any]]:
    """``(prose, raw function specs)`` of a Glaive system string (``bad_json`` if the function
    list after the marker is not a sequence of JSON objects)."""
    text = _SYSTEM_PREFIX.sub("", system, count=1)
    prose, marker, listing = text.partition(FUNCTIONS_MARKER)
    prose = prose.strip()
    return ("" if prose in _STOCK_PROSE else prose), _decode_functions(listing) if marker else []


def _decode_functions(listing: str) -> list[Any]:
    functions: list[Any] = []
    pos, end = 0, len(listing)
    while True:
        while pos < end and (listing[pos].isspace() or listing[pos] == ","):
            pos += 1
        if pos == end:
            return functions
        try:
            value, pos = _DECODER.raw_decode(listing, pos)
        except ValueError as e:
            raise RowError("bad_json", f"the system prompt's function list is not JSON "
                                       f"after function #{len(functions)}: {e}") from None
        functions.extend(value if isinstance(value, list) else [value])


def parse_functioncall(payload: str, what: str) -> dict[str, Any]:
    """One ``<functioncall>`` payload → a canonical call (see the module doc)."""
    payload = payload.strip()
    try:
        value = json.loads(payload)
    except ValueError:
        value = None
    if isinstance(value, Mapping):
        return convert_call(value, what)
    match = _GLAIVE_CALL.match(payload)
    if match is None:
        raise RowError("bad_json", f"the <functioncall> of {what} is neither JSON nor "
                                   "{\"name\": ..., \"arguments\": '<json>'}: "
                                   f"{payload[:120]!r}")
    name = json.loads(match.group(1))
    args_text = match.group(2)
    try:
        arguments = json.loads(args_text)
    except ValueError as e:
        try:  # a stray \' inside the single quotes
            arguments = json.loads(args_text.replace("\\'", "'"))
        except ValueError:
            raise RowError("bad_json", f"the arguments of the call to {name!r} in {what} are "
                                       f"not valid JSON: {e}") from None
    return {"name": name, "arguments": arguments}


def parse_chat(chat: str) -> list[Turn]:
    """The turns of a Glaive chat string (``bad_field`` if text precedes the first turn)."""
    parts = _TURN.split(chat)
    if parts[0].strip():
        raise RowError("bad_field", f"the chat does not start with a USER:/ASSISTANT: turn: "
                                    f"{parts[0].strip()[:80]!r}")
    turns: list[Turn] = []
    for k in range(1, len(parts), 2):
        role = _ROLES[parts[k]]
        content = parts[k + 1].strip().removesuffix(_END).rstrip()
        what = f"turn {len(turns) + 1}"
        if role == "assistant" and _CALL_TAG in content:
            _, _, payload = content.partition(_CALL_TAG)
            turns.append(Turn("assistant", content, calls=[parse_functioncall(payload, what)]))
        else:
            turns.append(Turn(role, content))
    return turns


def normalize_glaive(raw: Mapping[str, Any], *, source: str, task: str,
                     index: int) -> list[Candidate]:
    """The :class:`~hammer_core.data.formats.Normalizer` of the ``glaive`` format."""
    for field in ("system", "chat"):
        if raw.get(field) is None:
            raise RowError("missing_field", f"the row has no {field!r} field")
        if not isinstance(raw[field], str):
            raise RowError("bad_field", f"{field} must be a string, got "
                                        f"{type(raw[field]).__name__}")
    prose, functions = split_system(raw["system"])
    tools = unique_tools(functions, convert_schema_tool)
    if not tools:
        raise RowError("no_tools", "the system prompt offers no function "
                                   f"({raw['system'].strip()[:80]!r})")
    turns = ([Turn("system", prose)] if prose else []) + parse_chat(raw["chat"])
    return conversation_candidates(turns, tools, base_id=record_id(raw, source, index),
                                   source=source, task=task)


__all__ = ["normalize_glaive", "parse_chat", "parse_functioncall", "split_system"]
