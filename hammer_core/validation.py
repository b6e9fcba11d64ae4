"""One validator for every canonical row: ingested rows and, later, every synthesized row.

:func:`validate_example` takes a row in :data:`hammer_core.schema.EXAMPLE_SCHEMA` form
(``tools`` and ``calls`` as JSON strings, tools in the canonical JSON-schema form) and raises
:class:`hammer_core.formats.RowError` on the first problem found, checked in this order:

1. ``empty_query``: there is no user message, or the last one is blank;
2. ``bad_json`` / ``bad_tool_spec``: ``tools`` is not a JSON list of
   ``{"name": str, "parameters": {"type": "object", "properties": {...}, "required": [...]}}``
   (``parameters`` may be absent: a function without arguments), a ``required`` entry is not a
   declared property;
3. ``duplicate_tool``: two tools share one name;
4. ``bad_json`` / ``bad_call``: ``calls`` is not a JSON list of
   ``{"name": str, "arguments": dict}``;
5. ``unknown_function``: a call names no tool;
6. ``unknown_argument``: a call passes an argument its tool does not declare;
7. ``missing_required_argument``: a call omits an argument listed in its tool's ``required``.

``calls == "[]"`` (no call: an irrelevance row) is valid. Argument *values* are not checked
against the declared types: real corpora (xLAM included) routinely pass ``"5"`` for an
``integer`` and such rows are still good training data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from hammer_core.formats import RowError


def validate_example(row: Mapping[str, Any]) -> None:
    """Raise :class:`RowError` if the canonical ``row`` is not a usable example (see module doc)."""
    _check_query(row.get("messages"))
    tools = _parse_json_list(row.get("tools"), "tools", not_list_reason="bad_tool_spec")
    declared = _check_tools(tools)
    calls = _parse_json_list(row.get("calls"), "calls", not_list_reason="bad_call")
    _check_calls(calls, declared)


def _check_query(messages: Any) -> None:
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)):
        raise RowError("empty_query", "the row has no message list")
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == "user":
            content = message.get("content")
            if not isinstance(content, str) or not content.strip():
                raise RowError("empty_query", "the last user message is blank")
            return
    raise RowError("empty_query", "the row has no user message")


def _parse_json_list(text: Any, field: str, *, not_list_reason: str) -> list[Any]:
    if not isinstance(text, str):
        raise RowError("bad_json", f"{field} must be a JSON string, got {type(text).__name__}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise RowError("bad_json", f"{field} is not valid JSON: {e}") from None
    if not isinstance(value, list):
        raise RowError(not_list_reason, f"{field} must be a JSON list, got {type(value).__name__}")
    return value


def _check_tools(tools: list[Any]) -> dict[str, tuple[frozenset[str], tuple[str, ...]]]:
    """Map each tool name to (declared argument names, required argument names)."""
    declared: dict[str, tuple[frozenset[str], tuple[str, ...]]] = {}
    for i, tool in enumerate(tools):
        if not isinstance(tool, Mapping):
            raise RowError("bad_tool_spec", f"tool #{i} is a {type(tool).__name__}, not an object")
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise RowError("bad_tool_spec", f"tool #{i} has no string name (got {name!r})")
        params = tool.get("parameters", {})
        if not isinstance(params, Mapping):
            raise RowError("bad_tool_spec", f"tool {name!r}: parameters is not an object")
        props = params.get("properties", {})
        if not isinstance(props, Mapping):
            raise RowError("bad_tool_spec",
                           f"tool {name!r}: parameters.properties is not an object")
        required = params.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise RowError("bad_tool_spec",
                           f"tool {name!r}: parameters.required is not a list of strings")
        undeclared = [r for r in required if r not in props]
        if undeclared:
            raise RowError("bad_tool_spec", f"tool {name!r}: required argument(s) {undeclared} "
                                            "are not declared in properties")
        if name in declared:
            raise RowError("duplicate_tool", f"tool name {name!r} appears more than once")
        declared[name] = (frozenset(props), tuple(required))
    return declared


def _check_calls(calls: list[Any],
                 declared: Mapping[str, tuple[frozenset[str], tuple[str, ...]]]) -> None:
    for i, call in enumerate(calls):
        if not isinstance(call, Mapping):
            raise RowError("bad_call", f"call #{i} is a {type(call).__name__}, not an object")
        name = call.get("name")
        if not isinstance(name, str) or not name:
            raise RowError("bad_call", f"call #{i} has no string name (got {name!r})")
        arguments = call.get("arguments")
        if not isinstance(arguments, Mapping):
            raise RowError("bad_call", f"call #{i} to {name!r}: arguments is not an object "
                                       f"(got {type(arguments).__name__})")
        if name not in declared:
            raise RowError("unknown_function", f"call #{i} names function {name!r}, which is not "
                                               f"among the tools {sorted(declared)}")
        props, required = declared[name]
        unknown = [a for a in arguments if a not in props]
        if unknown:
            raise RowError("unknown_argument", f"call #{i} to {name!r} passes undeclared "
                                               f"argument(s) {unknown}; declared: {sorted(props)}")
        missing = [r for r in required if r not in arguments]
        if missing:
            raise RowError("missing_required_argument",
                           f"call #{i} to {name!r} omits required argument(s) {missing}")


__all__ = ["validate_example"]
