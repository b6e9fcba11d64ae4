"""OpenAI chat-format rows → canonical rows (one per target turn).

A row is ``{"messages": [...], "tools": [{"type": "function", "function": {name, description,
parameters}}], "id"?: ...}`` as used for OpenAI fine-tuning and by most chat exports:

- roles ``system`` (and ``developer``, read as system), ``user``, ``assistant``, ``tool``
  (and the legacy ``function``);
- an assistant message calls functions through ``tool_calls``: ``[{"id", "type":
  "function", "function": {"name", "arguments": "<JSON string>"}}]`` (arguments already
  parsed as an object are accepted), or through the legacy ``function_call`` object;
- ``content`` is a string, null (a call turn) or a list of text parts;
- the legacy top-level ``functions`` list stands in for ``tools`` when ``tools`` is absent.

The call's ``id``/``tool_call_id`` pairing is not kept: tool results follow the calls in
order, which is what the canonical ``messages`` record. A row without tools is
``no_tools``. The multi-turn rules are those of :mod:`hammer_core.data.formats.common`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hammer_core.data.formats.base import Candidate
from hammer_core.data.row_errors import RowError
from hammer_core.data.formats.common import (Turn, conversation_candidates, convert_call, convert_schema_tool,
                                        load_json_value, message_role, record_id, text_content,
                                        unique_tools)

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
         "tool": "tool", "function": "tool"}


def _calls(message: Mapping[str, Any], what: str) -> list[dict[str, Any]] | None:
    """The canonical calls of an assistant message, or None when it calls nothing."""
    tool_calls = message.get("tool_calls")
    if tool_calls:
        if not isinstance(tool_calls, list):
            raise RowError("bad_call", f"the tool_calls of {what} are not a list")
        return [convert_call(c.get("function") if isinstance(c, Mapping) and "function" in c
                             else c, what) for c in tool_calls]
    if message.get("function_call"):
        return [convert_call(message["function_call"], what)]
    return None


def openai_turn(message: Any, position: int) -> Turn:
    """One OpenAI chat message (``position`` names it in errors) as a :class:`Turn`."""
    what = f"message {position}"
    role = message_role(message, what, ROLES)
    calls = _calls(message, what) if role == "assistant" else None
    return Turn(role, text_content(message.get("content"), what), calls=calls)


def normalize_openai(raw: Mapping[str, Any], *, source: str, task: str,
                     index: int) -> list[Candidate]:
    """The :class:`~hammer_core.data.formats.Normalizer` of the ``openai`` format."""
    messages = load_json_value(raw.get("messages"), "messages")
    if messages is None:
        raise RowError("missing_field", "the row has no 'messages' field")
    if not isinstance(messages, list):
        raise RowError("bad_field", f"messages must be a list, got {type(messages).__name__}")
    specs = raw.get("tools") if raw.get("tools") is not None else raw.get("functions")
    tools = unique_tools(load_json_value(specs, "tools") if specs else [], convert_schema_tool)
    if not tools:
        raise RowError("no_tools", "the row has no tools")
    turns = [openai_turn(m, k) for k, m in enumerate(messages, start=1)]
    return conversation_candidates(turns, tools, base_id=record_id(raw, source, index),
                                   source=source, task=task)


__all__ = ["ROLES", "normalize_openai", "openai_turn"]
