"""One validator for every canonical row: ingested rows and, later, every synthesized row.

:func:`validate_example` takes a row in :data:`hammer_core.schema.EXAMPLE_SCHEMA` form
(``tools`` and ``calls`` as JSON strings, tools in the canonical JSON-schema form) and raises
:class:`~hammer_core.data.row_errors.RowError` on the first problem found; :func:`validate_parts` does
the same checks on already-parsed parts (what the normalizers call, to parse nothing twice).
The checks, in this order:

1. ``empty_query``: there is no user message, or the last one is blank;
2. ``bad_json`` / ``bad_tool_spec``: ``tools`` is not a JSON list of
   ``{"name": str, "parameters": {"type": "object", "properties": {...}, "required": [...]}}``
   (``parameters`` may be absent: a function without arguments), a property spec is not an
   object, a ``required`` entry is not a declared property;
3. ``duplicate_tool``: two tools share one name;
4. ``bad_json`` / ``bad_call``: ``calls`` is not a JSON list of
   ``{"name": str, "arguments": dict}``;
5. ``unknown_function``: a call names no tool;
6. ``unknown_argument``: a call passes an argument its tool does not declare;
7. ``missing_required_argument``: a call omits an argument listed in its tool's ``required``;
8. ``bad_argument_type``: an argument's value does not fit its declared JSON-schema type.

Before these, ``too_deep``: tools or calls nested more than :data:`MAX_DEPTH` arrays/objects
deep. Every later stage walks these values (validation, masking, prompts, JSON dumps), some of
it recursively, so this bound keeps a row far from Python's recursion limit wherever it goes.

``calls == "[]"`` (no call: an irrelevance row) is valid.

Type checking (step 8) follows BFCL's checker, with its leniency:

- ``string`` needs a str, ``boolean`` a bool, ``array`` a list, ``object`` a dict, ``null``
  None; ``integer`` needs an int that is not a bool; ``number`` accepts an int as well as a
  float (never a bool). A list of types (``["string", "null"]``) accepts any of them.
- Arrays are checked element by element against ``items``; objects key by key against their
  ``properties`` (nested keys not declared there are not checked: a nested object's schema is
  often partial in real corpora).
- ``null`` for a top-level argument that is *not required* is accepted: it means "not given".
- No ``type`` (xLAM's ``Union[...]``/``Any``, BFCL's ``any``), or a type name that is not one
  of the seven JSON-schema types (BFCL's Java/JavaScript categories declare ``HashMap``...),
  means "anything". ``enum``, ``format``, ``minimum``... are not checked: they are content,
  and real corpora disagree about them far more often than about types.
- No string coercion: ``"5"`` for an ``integer`` is rejected. Such rows teach the model to
  emit the wrong type, and a string-typed value is a clear, countable reject.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from hammer_core.data.row_errors import RowError
from hammer_core.schema import parse_json

#: ``isinstance(x, MAPPINGS)``: a dict (checked first, fast) or any other Mapping (the ABC
#: check alone costs more than parsing on the hot path).
MAPPINGS = (dict, Mapping)

#: What :func:`validate_parts` remembers of one tool: its properties and required names.
Declared = dict[str, tuple[Mapping[str, Any], tuple[str, ...]]]

#: The deepest nesting of arrays and objects a row's tools, or its calls, may have. A tool list
#: is 5 deep at a flat parameter's spec, and each nested object or array parameter adds 2.
MAX_DEPTH = 64
_CONTAINERS = (list, dict)


def validate_example(row: Mapping[str, Any]) -> None:
    """Raise :class:`RowError` if the canonical ``row`` is not a usable example (see module doc)."""
    _check_query(row.get("messages"))
    tools = _parse_json_list(row.get("tools"), "tools", not_list_reason="bad_tool_spec")
    declared = validate_tools(tools)
    calls = _parse_json_list(row.get("calls"), "calls", not_list_reason="bad_call")
    _check_call_list(calls, declared)


def validate_parts(messages: Any, tools: Any, calls: Any) -> None:
    """:func:`validate_example` on parsed parts: ``messages`` (a list of role/content dicts),
    ``tools`` and ``calls`` (the Python lists that become the JSON columns)."""
    _check_query(messages)
    _check_call_list(calls, validate_tools(tools))


def validate_tools(tools: Any) -> Declared:
    """Checks 2-3 on a parsed tool list; returns what :func:`validate_target` needs. A record
    whose tools fail is unusable as a whole, whatever its targets."""
    if not isinstance(tools, list):
        raise RowError("bad_tool_spec", f"tools must be a list, got {type(tools).__name__}")
    check_depth(tools, "tools")
    return _check_tools(tools)


def validate_target(messages: Any, calls: Any, declared: Declared) -> None:
    """Checks 1 and 4-8 for one target (a conversation prefix and the calls that answer it)
    against tools already checked by :func:`validate_tools`."""
    _check_query(messages)
    _check_call_list(calls, declared)


def _check_call_list(calls: Any, declared: Declared) -> None:
    if not isinstance(calls, list):
        raise RowError("bad_call", f"calls must be a list, got {type(calls).__name__}")
    check_depth(calls, "calls")
    _check_calls(calls, declared)


def check_depth(value: Any, what: str) -> None:
    """``too_deep`` if ``value`` nests lists/dicts more than :data:`MAX_DEPTH` levels deep
    (``[]`` is 1 deep). Walks one level at a time, without recursion."""
    level = [value] if isinstance(value, _CONTAINERS) else []
    for _ in range(MAX_DEPTH):
        level = [c for v in level for c in (v.values() if isinstance(v, dict) else v)
                 if isinstance(c, _CONTAINERS)]
        if not level:
            return
    raise RowError("too_deep", f"{what} nest arrays/objects more than {MAX_DEPTH} levels deep")


def _check_query(messages: Any) -> None:
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)):
        raise RowError("empty_query", "the row has no message list")
    for message in reversed(messages):
        if isinstance(message, MAPPINGS) and message.get("role") == "user":
            content = message.get("content")
            if not isinstance(content, str) or not content.strip():
                raise RowError("empty_query", "the last user message is blank")
            return
    raise RowError("empty_query", "the row has no user message")


def _parse_json_list(text: Any, field: str, *, not_list_reason: str) -> list[Any]:
    if not isinstance(text, str):
        raise RowError("bad_json", f"{field} must be a JSON string, got {type(text).__name__}")
    try:
        value = parse_json(text)
    except RecursionError:
        raise RowError("too_deep", f"{field} nest arrays/objects too deep to parse") from None
    except ValueError as e:  # JSONDecodeError, or an integer over Python's 4,300 digits
        raise RowError("bad_json", f"{field} is not valid JSON: {e}") from None
    if not isinstance(value, list):
        raise RowError(not_list_reason, f"{field} must be a JSON list, got {type(value).__name__}")
    return value


def _check_tools(tools: list[Any]) -> Declared:
    """Map each tool name to (its properties, its required argument names)."""
    declared: Declared = {}
    for i, tool in enumerate(tools):
        if not isinstance(tool, MAPPINGS):
            raise RowError("bad_tool_spec", f"tool #{i} is a {type(tool).__name__}, not an object")
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise RowError("bad_tool_spec", f"tool #{i} has no string name (got {name!r})")
        params = tool.get("parameters", {})
        if not isinstance(params, MAPPINGS):
            raise RowError("bad_tool_spec", f"tool {name!r}: parameters is not an object")
        props = params.get("properties", {})
        if not isinstance(props, MAPPINGS):
            raise RowError("bad_tool_spec",
                           f"tool {name!r}: parameters.properties is not an object")
        bad_specs = [p for p, spec in props.items() if not isinstance(spec, MAPPINGS)]
        if bad_specs:
            raise RowError("bad_tool_spec",
                           f"tool {name!r}: the spec of parameter(s) {bad_specs} is not an object")
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
        declared[name] = (props, tuple(required))
    return declared


def _check_calls(calls: list[Any], declared: Declared) -> None:
    for i, call in enumerate(calls):
        if not isinstance(call, MAPPINGS):
            raise RowError("bad_call", f"call #{i} is a {type(call).__name__}, not an object")
        name = call.get("name")
        if not isinstance(name, str) or not name:
            raise RowError("bad_call", f"call #{i} has no string name (got {name!r})")
        arguments = call.get("arguments")
        if not isinstance(arguments, MAPPINGS):
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
        for arg, value in arguments.items():
            if value is None and arg not in required:
                continue  # null for an optional argument: "not given"
            if not fits_type(value, props[arg]):
                raise RowError("bad_argument_type",
                               f"call #{i} to {name!r}: argument {arg!r} = {_short(value)} does "
                               f"not fit the declared type {_type_text(props[arg])}")


_TYPE_TESTS: dict[str, Any] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, MAPPINGS),
    "null": lambda v: v is None,
}


def fits_type(value: Any, schema: Mapping[str, Any]) -> bool:
    """Whether ``value`` fits the JSON-schema fragment ``schema`` (rules in the module doc)."""
    declared = schema.get("type")
    if declared is None:
        return True
    names = declared if isinstance(declared, list) else [declared]
    known = [n for n in names if isinstance(n, str) and n in _TYPE_TESTS]
    if len(known) < len(names):
        return True  # an unknown type name among the alternatives: anything goes
    if not any(_TYPE_TESTS[n](value) for n in known):
        return False
    if isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, MAPPINGS):
            return all(fits_type(v, items) for v in value)
    elif isinstance(value, MAPPINGS):
        props = schema.get("properties")
        if isinstance(props, MAPPINGS):
            return all(fits_type(v, props[k]) for k, v in value.items()
                       if isinstance(props.get(k), MAPPINGS))
    return True


def _type_text(schema: Mapping[str, Any]) -> str:
    return _clip(json.dumps({k: schema[k] for k in ("type", "items") if k in schema},
                            ensure_ascii=False), 120)


def _short(value: Any) -> str:
    return _clip(json.dumps(value, ensure_ascii=False, default=str), 80)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = ["MAX_DEPTH", "Declared", "check_depth", "fits_type", "validate_example", "validate_parts", "validate_target",
           "validate_tools"]
