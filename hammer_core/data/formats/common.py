"""Building blocks shared by the format normalizers: JSON-string fields, JSON-schema tools,
calls, row assembly, and the multi-turn rules.

Tools
-----
Every format but xLAM declares its functions in JSON-schema style; :func:`convert_schema_tool`
turns one into the canonical tool (key order ``name, description, parameters{type,
properties, required}``; other tool-level keys such as OpenAI's ``strict`` are dropped). The
OpenAI wrapper ``{"type": "function", "function": {...}}`` is unwrapped. Type names are
normalized by :func:`normalize_schema` (recursively through ``items``, ``properties`` and
``additionalProperties``): BFCL's ``dict``/``float``/``tuple`` become ``object``/``number``/
``array``, Python names (``str``, ``int``, ``bool``, ``list``) their JSON-schema names, any
capitalization of a standard name its lower-case form, and ``any`` drops the ``type``. A
changed type keeps its original under ``x-original-type`` (prompts hide ``x-`` keys). Other
type names (BFCL's Java ``HashMap``...) are kept as they are; the validator does not check
them. :func:`unique_tools` de-duplicates tools repeated verbatim in one row and rejects two
*different* tools with one name (``duplicate_tool``).

Multi-turn conversations
------------------------
A conversation (Glaive, sharegpt, OpenAI chat) is first parsed into :class:`Turn` s: roles
``system``, ``user``, ``assistant`` and ``tool``; an assistant turn that calls functions
carries its canonical calls. :func:`conversation_candidates` then emits one canonical row per
*target* turn, with the conversation *before* that turn as ``messages`` and the turn's calls
as ``calls``; the k-th target (1-based) gets the id ``<record id>#t<k>``. The target turns:

- every assistant turn that calls one or more functions (its calls are the target);
- every assistant *text* turn that directly follows a user turn: the assistant answered a
  request without calling anything (unrelated request, missing parameters, chit-chat), which
  is exactly the "no call" label, ``calls = []`` (real irrelevance data). An assistant text
  turn that follows a tool result (it summarizes the result) is not a target.

Inside ``messages``, earlier turns keep their place: an earlier assistant call turn is
``{"role": "assistant", "content": <the canonical JSON list of its calls>}`` (the same text as
a target, so the model sees its own output format), a tool result is ``{"role": "tool",
"content": <the observation text>}``, and an assistant text turn is its text. Text that an
assistant wrote *beside* its calls (OpenAI ``content`` next to ``tool_calls``) is dropped.

A conversation whose tools are empty is rejected as ``no_tools``; one with tools but no
target turn as ``no_target``. Tool problems reject the whole conversation (one reject);
problems of one target (an unknown function in turn 3) reject that target only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hammer_core.data import validation
from hammer_core.data.formats.base import Candidate
from hammer_core.data.row_errors import RowError
from hammer_core.data.validation import MAPPINGS
from hammer_core.schema import dumps

_STANDARD_TYPES = ("string", "integer", "number", "boolean", "array", "object", "null")
_TYPE_ALIASES: dict[str, str | None] = {
    **{t: t for t in _STANDARD_TYPES},
    "dict": "object", "float": "number", "tuple": "array", "list": "array",
    "str": "string", "int": "integer", "bool": "boolean", "any": None,
}
_NESTED_ONE = ("items", "additionalProperties")


# --------------------------------------------------------------------------- fields


def load_json_value(value: Any, what: str) -> Any:
    """``value`` parsed if it is a JSON string (``bad_json`` if it does not parse, ``too_deep``
    if it nests deeper than the decoder goes), else as is."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except RecursionError:
        raise RowError("too_deep", f"{what} nests arrays/objects deeper than the JSON decoder "
                                   "goes (Python's recursion limit)") from None
    except ValueError as e:  # JSONDecodeError, or an integer over Python's 4,300 digits
        raise RowError("bad_json", f"{what} is not valid JSON: {e}") from None


def json_field(raw: Mapping[str, Any], field: str) -> Any:
    """``raw[field]``, parsed if it is a JSON string; ``missing_field`` if absent or null."""
    if raw.get(field) is None:
        raise RowError("missing_field", f"the row has no {field!r} field")
    return load_json_value(raw[field], field)


def record_id(raw: Mapping[str, Any], source: str, index: int) -> str:
    """The record's own ``id`` as text, or ``<source>-<index>`` when it has none."""
    raw_id = raw.get("id")
    return str(raw_id) if raw_id is not None and raw_id != "" else f"{source}-{index}"


# --------------------------------------------------------------------------- tools


def normalize_schema(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-schema fragment with normalized type names (see the module doc); key order kept."""
    out: dict[str, Any] = {}
    original: Any = None
    for key, value in spec.items():
        if key == "type":
            mapped, changed = _map_type(value)
            if changed:
                original = value
            if mapped is not None:
                out["type"] = mapped
        elif key in _NESTED_ONE and isinstance(value, MAPPINGS):
            out[key] = normalize_schema(value)
        elif key == "items" and isinstance(value, list):
            out[key] = [normalize_schema(v) if isinstance(v, MAPPINGS) else v for v in value]
        elif key == "properties" and isinstance(value, MAPPINGS):
            out[key] = {k: normalize_schema(v) if isinstance(v, MAPPINGS) else v
                        for k, v in value.items()}
        else:
            out[key] = value
    if original is not None:
        out["x-original-type"] = original
    return out


def _map_type(value: Any) -> tuple[Any, bool]:
    """(normalized type, whether it changed); lists are mapped element-wise."""
    if isinstance(value, list):
        mapped = [_map_type(v)[0] for v in value]
        kept = [m for m in mapped if m is not None]
        return (kept or None), mapped != value
    if not isinstance(value, str):
        return value, False
    key = value.strip().lower()
    if key not in _TYPE_ALIASES:
        return value, False
    mapped = _TYPE_ALIASES[key]
    return mapped, mapped != value


def tool_header(tool: Any, position: int, *, null_description: bool, params_kind: str
                ) -> tuple[str, str, Mapping[str, Any]]:
    """(name, description, parameters) of a tool object, or ``bad_tool_spec`` naming the tool and
    what is wrong; a missing description is ``""`` (a null one too if ``null_description``),
    missing or null parameters ``{}``; ``params_kind`` words what parameters should have been."""
    if not isinstance(tool, MAPPINGS):
        raise RowError("bad_tool_spec", f"tool #{position} is a {type(tool).__name__}, "
                                        "not an object")
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise RowError("bad_tool_spec", f"tool #{position} has no string name (got {name!r})")
    description = tool.get("description", "")
    if description is None and null_description:
        description = ""
    if not isinstance(description, str):
        raise RowError("bad_tool_spec", f"tool {name!r} has a non-string description")
    params = tool.get("parameters")
    if params is None:
        params = {}
    if not isinstance(params, MAPPINGS):
        raise RowError("bad_tool_spec", f"tool {name!r}: parameters is a "
                                        f"{type(params).__name__}, not {params_kind}")
    return name, description, params


def message_role(message: Any, what: str, roles: Mapping[str, str]) -> str:
    """The canonical role of a chat message object (``roles`` maps the format's role names), or
    ``bad_field`` naming the message and the known roles."""
    if not isinstance(message, Mapping):
        raise RowError("bad_field", f"{what} is a {type(message).__name__}, not an object")
    given = message.get("role")
    role = roles.get(given) if isinstance(given, str) else None
    if role is None:
        raise RowError("bad_field", f"{what} has the unknown role {given!r}; known: {sorted(roles)}")
    return role


def convert_schema_tool(tool: Any, position: int = 0) -> dict[str, Any]:
    """One JSON-schema style tool (OpenAI wrapper allowed) → the canonical tool; raises
    ``bad_tool_spec`` naming the tool and what is wrong."""
    if (isinstance(tool, MAPPINGS) and tool.get("type") == "function"
            and isinstance(tool.get("function"), MAPPINGS)):
        tool = tool["function"]
    name, description, params = tool_header(tool, position, null_description=True, params_kind="an object schema")
    ptype = params.get("type", "object")
    if ptype not in ("object", "dict"):
        raise RowError("bad_tool_spec", f"tool {name!r}: parameters.type is {ptype!r}, "
                                        "expected 'object'")
    props = params.get("properties")
    if props is None:
        props = {}
    if not isinstance(props, MAPPINGS):
        raise RowError("bad_tool_spec", f"tool {name!r}: parameters.properties is not an object")
    converted: dict[str, Any] = {}
    for pname, spec in props.items():
        if not isinstance(spec, MAPPINGS):
            raise RowError("bad_tool_spec", f"tool {name!r}: the spec of parameter {pname!r} "
                                            f"is a {type(spec).__name__}, not an object")
        converted[pname] = normalize_schema(spec)
    required = params.get("required")
    if required is None:
        required = []
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise RowError("bad_tool_spec", f"tool {name!r}: parameters.required is not a list "
                                        "of strings")
    return {"name": name, "description": description,
            "parameters": {"type": "object", "properties": converted, "required": list(required)}}


def unique_tools(tools: Any, convert: Callable[[Any, int], dict[str, Any]]) -> list[dict[str, Any]]:
    """Convert a tool list with ``convert(tool, position)``; verbatim repeats are dropped (the
    first copy stays), two different tools with one name are a ``duplicate_tool`` reject."""
    if not isinstance(tools, list):
        raise RowError("bad_tool_spec", f"tools must be a list, got {type(tools).__name__}")
    out: list[dict[str, Any]] = []
    seen: dict[str, dict[str, Any]] = {}
    for i, tool in enumerate(tools):
        converted = convert(tool, i)
        previous = seen.get(converted["name"])
        if previous is None:
            seen[converted["name"]] = converted
            out.append(converted)
        elif previous != converted:
            raise RowError("duplicate_tool", f"two different tools are named "
                                             f"{converted['name']!r} (tools #{i} and earlier)")
    return out


# --------------------------------------------------------------------------- calls


def convert_call(call: Any, what: str) -> dict[str, Any]:
    """``{"name", "arguments"}`` with a JSON-string ``arguments`` parsed (``bad_json`` if it
    does not parse). Other problems (no name, arguments not an object) are left for the
    validator to name; ``what`` says where the call is (``"turn 3"``)."""
    if not isinstance(call, MAPPINGS):
        raise RowError("bad_call", f"the call of {what} is a {type(call).__name__}, "
                                   "not an object")
    return {"name": call.get("name"),
            "arguments": load_json_value(call.get("arguments"), f"the arguments string of the call "
                                                                 f"to {call.get('name')!r} in {what}")}


def convert_calls(value: Any, what: str) -> list[dict[str, Any]]:
    """One call object or a list of them (a JSON string of either) → canonical calls."""
    value = load_json_value(value, f"the call value of {what}")
    calls = value if isinstance(value, list) else [value]
    return [convert_call(c, what) for c in calls]


# --------------------------------------------------------------------------- rows


def tool_set_digest(tool_texts: list[str]) -> bytes:
    """16-byte digest of a tool list as a *set*: its tools' canonical texts, sorted."""
    return hashlib.blake2b("\x1e".join(sorted(tool_texts)).encode("utf-8", "surrogatepass"),
                           digest_size=16).digest()


def dump_tools(tools: list[dict[str, Any]]) -> tuple[str, bytes]:
    """``(schema.dumps(tools), tool_set_digest)``, each tool serialized once."""
    texts = [dumps(t) for t in tools]
    return "[" + ",".join(texts) + "]", tool_set_digest(texts)


def make_row(*, row_id: str, source: str, task: str, messages: list[dict[str, str]],
             tools_json: str, calls: list[Any]) -> dict[str, Any]:
    """A canonical row dict (``tools_json`` is the already-dumped tool list)."""
    return {"id": row_id, "source": source, "task": task, "messages": messages,
            "tools": tools_json, "calls": dumps(calls), "parent_id": None, "variant": "original"}


def single_candidate(*, row_id: str, source: str, task: str, messages: list[dict[str, str]],
                     tools: list[dict[str, Any]], calls: list[Any]) -> list[Candidate]:
    """The one candidate of a single-target record, validated. Every problem (tools included)
    is a whole-record error here, so it is raised rather than wrapped."""
    validation.validate_parts(messages, tools, calls)
    tools_json, digest = dump_tools(tools)
    return [Candidate("", make_row(row_id=row_id, source=source, task=task, messages=messages,
                                   tools_json=tools_json, calls=calls), tools_digest=digest)]


@dataclass(frozen=True)
class Turn:
    """One turn of a parsed conversation; ``calls`` is set on an assistant call turn."""

    role: str  # system | user | assistant | tool
    content: str
    calls: list[dict[str, Any]] | None = None

    def message(self) -> dict[str, str]:
        """The turn as a canonical history message (a call turn's content is its calls' JSON)."""
        return {"role": self.role, "content": dumps(self.calls) if self.calls is not None else self.content}


def conversation_candidates(turns: list[Turn], tools: list[dict[str, Any]], *, base_id: str,
                            source: str, task: str) -> list[Candidate]:
    """One candidate per target turn of a conversation (rules in the module doc)."""
    if not tools:
        raise RowError("no_tools", "the conversation offers no function (no tools)")
    declared = validation.validate_tools(tools)
    for turn in turns:  # a call turn sits in the history of every later target: check it here
        if turn.calls is not None:
            validation.check_depth(turn.calls, "the calls of an assistant turn")
    tools_json, digest = dump_tools(tools)
    messages: list[dict[str, str]] = []
    out: list[Candidate] = []
    for turn in turns:
        if turn.role == "assistant":
            if turn.calls is not None or (messages and messages[-1]["role"] == "user"):
                calls = turn.calls if turn.calls is not None else []
                suffix = f"#t{len(out) + 1}"
                history = list(messages)
                try:
                    validation.validate_target(history, calls, declared)
                except RowError as e:
                    out.append(Candidate(suffix, error=e))
                else:
                    out.append(Candidate(suffix, make_row(
                        row_id=base_id + suffix, source=source, task=task, messages=history,
                        tools_json=tools_json, calls=calls), tools_digest=digest))
        messages.append(turn.message())
    if not out:
        raise RowError("no_target", "the conversation has no assistant turn that calls a "
                                    "function or answers a user turn")
    return out


def text_content(value: Any, what: str) -> str:
    """A message's content as text: a string, null (empty), or OpenAI-style content parts
    ``[{"type": "text", "text": ...}]`` (joined with newlines); ``bad_field`` otherwise."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, MAPPINGS) and isinstance(p.get("text"), str)
                                       for p in value):
        return "\n".join(p["text"] for p in value)
    raise RowError("bad_field", f"the content of {what} is a {type(value).__name__}, not text")


__all__ = ["Turn", "dump_tools", "tool_set_digest", "convert_call", "convert_calls", "convert_schema_tool",
           "conversation_candidates", "json_field", "load_json_value", "make_row",
           "normalize_schema", "record_id", "single_candidate", "text_content", "unique_tools"]
