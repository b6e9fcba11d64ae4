"""LLaMA-Factory sharegpt rows with tools → canonical rows (one per target turn).

A row is ``{"conversations": [{"from": ..., "value": ...}, ...], "tools": "<JSON>",
"system"?: "...", "id"?: ...}`` (``role``/``content`` keys inside a turn are accepted too).
Turn roles: ``human`` (or ``user``), ``gpt`` (or ``assistant``), ``function_call`` (its value
is a JSON string of one call ``{"name", "arguments"}`` or of a list of parallel calls;
``arguments`` an object or, as some exports write it, a JSON string), ``observation`` (a tool
result) and ``system``. ``tools`` is a JSON *string* of JSON-schema functions (an already
parsed list, and OpenAI-wrapped specs, are accepted). A row without tools is ``no_tools``.

The multi-turn rules (targets, ids ``<id>#t<k>``, how earlier calls and observations appear
in ``messages``) are those of :mod:`hammer_core.data.formats.common`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hammer_core.data.formats.base import Candidate
from hammer_core.data.row_errors import RowError
from hammer_core.data.formats.common import (Turn, conversation_candidates, convert_calls,
                                        convert_schema_tool, load_json_value, record_id,
                                        text_content, unique_tools)

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
         "function_call": "function_call", "observation": "tool", "system": "system"}


def _turn(item: Any, position: int) -> Turn:
    what = f"turn {position}"
    if not isinstance(item, Mapping):
        raise RowError("bad_field", f"{what} is a {type(item).__name__}, not an object")
    role_key, content_key = ("from", "value") if "from" in item else ("role", "content")
    given = item.get(role_key)
    role = ROLES.get(given) if isinstance(given, str) else None
    if role is None:
        raise RowError("bad_field", f"{what} has the unknown role {given!r}; "
                                    f"known: {sorted(ROLES)}")
    if role == "function_call":
        return Turn("assistant", "", calls=convert_calls(item.get(content_key), what))
    return Turn(role, text_content(item.get(content_key), what))


def normalize_sharegpt(raw: Mapping[str, Any], *, source: str, task: str,
                       index: int) -> list[Candidate]:
    """The :class:`~hammer_core.data.formats.Normalizer` of the ``sharegpt`` format."""
    conversations = load_json_value(raw.get("conversations"), "conversations")
    if conversations is None:
        raise RowError("missing_field", "the row has no 'conversations' field")
    if not isinstance(conversations, list):
        raise RowError("bad_field", "conversations must be a list, got "
                                    f"{type(conversations).__name__}")
    tools_value = raw.get("tools")
    tools = unique_tools(load_json_value(tools_value, "tools") if tools_value else [],
                         convert_schema_tool)
    if not tools:
        raise RowError("no_tools", "the row has no tools")
    system = text_content(raw.get("system"), "the system prompt")
    turns = ([Turn("system", system)] if system.strip() else [])
    turns += [_turn(item, k) for k, item in enumerate(conversations, start=1)]
    return conversation_candidates(turns, tools, base_id=record_id(raw, source, index),
                                   source=source, task=task)


__all__ = ["ROLES", "normalize_sharegpt"]
