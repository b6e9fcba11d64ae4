"""xLAM-function-calling-60k rows → canonical rows.

An xLAM row is ``{"id", "query", "tools", "answers"}`` where ``tools`` and ``answers`` are JSON
*strings* (already-parsed lists are accepted too). A tool is
``{"name", "description", "parameters": {pname: {"type", "description", "default"?}}}``: a FLAT
parameter dict with Python-ish type strings (``"str"``, ``"int"``, ``"List[int]"``,
``"Dict[str, Any]"``, ``"Union[int, float]"``, ``"str, optional"``...) and no ``required`` list.

The canonical tool is JSON-schema style (see :mod:`hammer_core.schema`)::

    {"name": ..., "description": ...,
     "parameters": {"type": "object",
                    "properties": {p: {"type"?, "items"?, "description", "default"?,
                                       "x-python-type": <the original xLAM type string>}},
                    "required": [...]}}

Key order is fixed as shown (tools and parameters keep their declaration order, calls are
``{"name", "arguments"}`` with the arguments in the answer's order), since
:func:`hammer_core.schema.dumps` keeps key order rather than sorting.

Type mapping (:func:`python_type_to_schema`): ``str``→``string``, ``int``→``integer``,
``float``→``number``, ``bool``→``boolean``, ``list``/``List[X]``/``Set[X]``/``Tuple[...]``→
``array`` (with ``items`` when the element type is known and uniform), ``dict``/``Dict[...]``→
``object``; anything else (``Any``, ``Union[...]``, ``Callable``, unparseable) gets no ``type``
at all. ``x-python-type`` always keeps the original string, so nothing is lost. Parameter
keys other than type/description/default (e.g. ``enum``) are carried over unchanged.

Required arguments (xLAM has no ``required`` list, so it is derived): a parameter is required
iff its type string does NOT end in ``", optional"`` (nor is ``Optional[...]``) AND it has no
``"default"`` key. The derived list keeps declaration order. :func:`validate_example` then
*enforces* it: a row whose answer omits a derived-required argument is rejected with
``missing_required_argument``. Real xLAM has a few such rows (parameters without default and
without ", optional" that the answer leaves out); with this derivation they are a small,
visible reject count rather than silently-wrong training targets.

Tools repeated verbatim inside one row (same name, same spec) are de-duplicated (the first
copy is kept, as Hammer's own preprocessing does); two *different* tools with one name are a
``duplicate_tool`` reject.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Mapping
from typing import Any

from hammer_core.data.formats.base import Candidate
from hammer_core.data.row_errors import RowError
from hammer_core.data.validation import MAPPINGS
from hammer_core.data.formats.common import json_field, record_id, single_candidate, tool_header, unique_tools
from hammer_core.data import validation

_OPTIONAL_SUFFIX = re.compile(r",\s*optional\s*$", re.IGNORECASE)

_SCALARS = {
    "str": "string", "string": "string",
    "int": "integer", "integer": "integer",
    "float": "number", "number": "number", "double": "number",
    "bool": "boolean", "boolean": "boolean",
}
_ARRAYS = {"list", "set", "frozenset", "sequence", "iterable", "array"}
_OBJECTS = {"dict", "mapping", "object"}


def _split_generic(expr: str) -> tuple[str, list[str]] | None:
    """``"Dict[str, List[int]]"`` → ``("Dict", ["str", "List[int]"])``; None if unbalanced."""
    expr = expr.strip()
    if "[" not in expr:
        return (expr, []) if "]" not in expr else None
    head, _, rest = expr.partition("[")
    if not rest.endswith("]"):
        return None
    args, depth, current = [], 0, []
    for ch in rest[:-1]:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                return None
        if ch == "," and depth == 0:
            args.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    if depth != 0:
        return None
    args.append("".join(current).strip())
    return head.strip(), args


def _type_expr_schema(expr: str) -> dict[str, Any] | None:
    """JSON schema (type and items only) for a Python type expression; None when unknown."""
    parsed = _split_generic(expr)
    if parsed is None:
        return None
    head, args = parsed
    name = head.lower()
    if name in _SCALARS:
        return {"type": _SCALARS[name]}
    if name in _OBJECTS:
        return {"type": "object"}
    if name == "optional" and len(args) == 1:
        return _type_expr_schema(args[0])
    if name in _ARRAYS or name == "tuple":
        elems = [a for a in args if a != "..."]
        items = [_type_expr_schema(a) for a in elems]
        schema: dict[str, Any] = {"type": "array"}
        if items and all(i is not None for i in items) and all(i == items[0] for i in items):
            schema["items"] = items[0]
        return schema
    return None


def python_type_to_schema(type_str: str) -> tuple[dict[str, Any], bool]:
    """Map an xLAM type string to ``(json-schema fragment, is_optional)``.

    The fragment holds ``type`` (and ``items`` for typed arrays) or is empty when the type is
    unknown (``Any``, ``Union``, ``Callable``...). ``is_optional`` is True for ``"X, optional"``
    and ``"Optional[X]"``. The fragment is the caller's own (a deep copy of the cached one).
    """
    fragment, optional = _cached_type_schema(type_str)
    return copy.deepcopy(fragment), optional


@functools.lru_cache(maxsize=4096)
def _cached_type_schema(type_str: str) -> tuple[dict[str, Any], bool]:
    """:func:`python_type_to_schema`, memoized: a corpus repeats a few hundred type strings.
    The result is shared; callers must copy before changing it."""
    base = _OPTIONAL_SUFFIX.sub("", type_str).strip()
    optional = base != type_str.strip()
    parsed = _split_generic(base)
    if parsed is not None and parsed[0].lower() == "optional":
        optional = True
    return (_type_expr_schema(base) or {}), optional


def _fresh(fragment: dict[str, Any]) -> dict[str, Any]:
    """A copy of a cached type fragment (dicts of str/dicts only: faster than deepcopy)."""
    return {k: _fresh(v) if isinstance(v, dict) else v for k, v in fragment.items()}


def _convert_parameter(tool: str, pname: Any, spec: Any) -> tuple[dict[str, Any], bool]:
    """One flat xLAM parameter → (canonical property, required?)."""
    if not isinstance(pname, str) or not pname:
        raise RowError("bad_tool_spec", f"tool {tool!r} has a parameter with no string name")
    if not isinstance(spec, MAPPINGS):
        hint = (" (parameters looks like a JSON schema, not xLAM's flat {name: spec} dict)"
                if pname in ("type", "properties") else "")
        raise RowError("bad_tool_spec", f"tool {tool!r}: the spec of parameter {pname!r} is a "
                                        f"{type(spec).__name__}, not an object{hint}")
    type_str = spec.get("type")
    description = spec.get("description", "")
    if type_str is not None and not isinstance(type_str, str):
        raise RowError("bad_tool_spec", f"tool {tool!r}: parameter {pname!r} has a non-string "
                                        f"type {type_str!r}")
    if not isinstance(description, str):
        raise RowError("bad_tool_spec", f"tool {tool!r}: parameter {pname!r} has a non-string "
                                        "description")
    if type_str is not None and type_str.count("[") > validation.MAX_DEPTH:  # parsing is quadratic
        raise RowError("too_deep", f"tool {tool!r}: the type of parameter {pname!r} holds more than "
                                   f"{validation.MAX_DEPTH} '[' (type expressions nest at most that deep)")
    # Key order is part of the output bytes (schema.dumps keeps it): type, items, description,
    # default, any other keys as given, x-python-type.
    fragment, optional = _cached_type_schema(type_str) if type_str is not None else ({}, False)
    prop: dict[str, Any] = _fresh(fragment)  # never share the cached fragment
    prop["description"] = description
    if "default" in spec:
        prop["default"] = spec["default"]
    prop.update((k, v) for k, v in spec.items() if k not in ("type", "description", "default"))
    if type_str is not None:
        prop["x-python-type"] = type_str
    return prop, not optional and "default" not in spec


def convert_tool(tool: Any, position: int = 0) -> dict[str, Any]:
    """One xLAM tool → the canonical JSON-schema tool (raises RowError ``bad_tool_spec``)."""
    name, description, params = tool_header(tool, position, null_description=False, params_kind="an object")
    properties: dict[str, Any] = {}
    required: list[str] = []
    for pname, spec in params.items():
        prop, is_required = _convert_parameter(name, pname, spec)
        properties[pname] = prop
        if is_required:
            required.append(pname)
    return {"name": name, "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required}}


def _convert_calls(answers: Any) -> list[Any]:
    if not isinstance(answers, list):
        raise RowError("bad_call", f"answers must be a list, got {type(answers).__name__}")
    # Keep only name/arguments; malformed calls are passed through for the validator to name.
    return [{"name": c.get("name"), "arguments": c.get("arguments")}
            if isinstance(c, MAPPINGS) else c for c in answers]


def normalize_xlam(raw: Mapping[str, Any], *, source: str, task: str, index: int) -> dict[str, Any]:
    """One xLAM record → one canonical row dict (keys of EXAMPLE_SCHEMA), validated.

    ``index`` is the record's 0-based position in its source; it names the row
    (``f"{source}-{index}"``) when the record has no ``id``. Raises :class:`RowError`.
    """
    (candidate,) = xlam_candidates(raw, source=source, task=task, index=index)
    assert candidate.row is not None
    return candidate.row


def xlam_candidates(raw: Mapping[str, Any], *, source: str, task: str,
                    index: int) -> list[Candidate]:
    """The :class:`~hammer_core.data.formats.Normalizer` of the ``xlam`` format: one target."""
    if not isinstance(raw, MAPPINGS):
        raise RowError("bad_json", f"the record is a {type(raw).__name__}, not an object")
    if raw.get("query") is None:
        raise RowError("missing_field", "the row has no 'query' field")
    query = raw["query"]
    if not isinstance(query, str):
        raise RowError("bad_field", f"query must be a string, got {type(query).__name__}")
    tools = unique_tools(json_field(raw, "tools"), convert_tool)
    calls = _convert_calls(json_field(raw, "answers"))
    return single_candidate(row_id=record_id(raw, source, index), source=source, task=task,
                            messages=[{"role": "user", "content": query}], tools=tools,
                            calls=calls)


__all__ = ["convert_tool", "normalize_xlam", "python_type_to_schema", "xlam_candidates"]
