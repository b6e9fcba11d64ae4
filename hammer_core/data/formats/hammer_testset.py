"""Hammer's evaluation sets (API-Bank L-1/L-2, Tool-Alpaca, Seal-Tools, Nexus Raven) → canonical rows.

A row is ``{"id"?, "query": [{"role", "content"}, ...], "tools", "answers"}``: the same keys
as xLAM, but ``query`` is the *conversation* (a list of messages; the last user message is
the request) rather than one string, which is how :func:`is_message_list_query` tells the two
apart. ``tools`` and ``answers`` are lists or JSON strings of them. Tools come in either
shape, decided per tool: JSON-schema style (``parameters.type`` is ``object``/``dict``) or
xLAM's flat ``{pname: {type, description, default?}}``. ``answers`` is the target,
``[{"name", "arguments"}]`` (``[]`` for "no call"; arguments as a JSON string are parsed).
Message roles must be ``system``, ``user``, ``assistant`` or ``tool`` (``human``/``gpt`` are
read as user/assistant). One row, one target.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hammer_core.data.formats.base import Candidate
from hammer_core.data.row_errors import RowError
from hammer_core.data.formats import xlam
from hammer_core.data.formats.common import (convert_calls, convert_schema_tool, json_field, message_role,
                                        record_id, single_candidate, text_content, unique_tools)

ROLES = {"system": "system", "user": "user", "human": "user", "assistant": "assistant",
         "gpt": "assistant", "tool": "tool"}


def is_message_list_query(record: Mapping[str, Any]) -> bool:
    """The shape test that tells a Hammer test-set row from an xLAM row."""
    return isinstance(record.get("query"), list)


def convert_any_tool(tool: Any, position: int = 0) -> dict[str, Any]:
    """A JSON-schema tool or an xLAM flat tool → the canonical tool (decided by its shape)."""
    spec = tool.get("function") if isinstance(tool, Mapping) and tool.get("type") == "function" \
        else tool
    params = spec.get("parameters") if isinstance(spec, Mapping) else None
    if isinstance(params, Mapping) and params.get("type") in ("object", "dict"):
        return convert_schema_tool(tool, position)
    return xlam.convert_tool(spec, position)


def _message(message: Any, position: int) -> dict[str, str]:
    what = f"query message {position}"
    role = message_role(message, what, ROLES)
    return {"role": role, "content": text_content(message.get("content"), what)}


def normalize_hammer_testset(raw: Mapping[str, Any], *, source: str, task: str,
                             index: int) -> list[Candidate]:
    """The :class:`~hammer_core.data.formats.Normalizer` of the ``hammer_testset`` format."""
    query = json_field(raw, "query")
    if not isinstance(query, list):
        raise RowError("bad_field", f"query must be a list of messages, got "
                                    f"{type(query).__name__}")
    messages = [_message(m, k) for k, m in enumerate(query, start=1)]
    tools = unique_tools(json_field(raw, "tools"), convert_any_tool)
    answers = json_field(raw, "answers")
    if not isinstance(answers, list):
        raise RowError("bad_call", f"answers must be a list, got {type(answers).__name__}")
    calls = convert_calls(answers, "the answers")
    return single_candidate(row_id=record_id(raw, source, index), source=source, task=task,
                            messages=messages, tools=tools, calls=calls)


__all__ = ["convert_any_tool", "is_message_list_query", "normalize_hammer_testset"]
