"""Model output -> calls: the one parser of the eval stage, the served model and ``hammer eval score``.

Parsing (:func:`parse_calls`)
    Raw output -> ``[{"name", "arguments"}]``, the one parser of the eval stage, the served
    model and ``hammer eval score``. It reads the common output styles:

    * Hammer's JSON list ``[{"name": "f", "arguments": {...}}]``, inside a code fence or not,
      with stray text around it; ``[]`` is no call;
    * Hermes / Qwen ``<tool_call>{...}</tool_call>`` blocks, one or several;
    * Llama 3.x JSON ``{"name": "f", "parameters": {...}}``: one object, a list of them, or
      several separated by ``;`` or newlines (``<|python_tag|>`` before them is skipped);
    * Mistral ``[TOOL_CALLS] [{"name": "f", "arguments": {...}}]``;
    * BFCL's Python call syntax ``[f(a=1), g.h(b="x")]``.

    In every JSON style ``arguments`` may be a JSON string (OpenAI style) and ``parameters`` is
    read when ``arguments`` is absent (:func:`as_call`). Outside a list, JSON is read only when
    it is the whole text (or a fenced block), so prose that merely contains braces is not a
    call. Output that parses in no style returns None: it counts as "no call" and is reported
    as a parse failure, never hidden.
"""

from __future__ import annotations

import ast
import json
import operator
import re
from typing import Any

Call = dict[str, Any]

_FENCE = re.compile(r"```(?:json|python|py)?\s*(.*?)```", re.S)

_TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)

# Markers some chat templates put before the calls: Mistral's ``[TOOL_CALLS]`` and Llama 3.1's
# ``<|python_tag|>`` (present when special tokens are not skipped in decoding).
_CALL_MARKERS = ("[TOOL_CALLS]", "<|python_tag|>")


def parse_calls(text: str) -> list[Call] | None:
    """Calls from raw model output in any of the common styles (see the module docstring);
    None if nothing parses. ``[]`` is no call."""
    if "<tool_call>" in text:
        return tool_call_blocks(text)
    for marker in _CALL_MARKERS:
        text = text.replace(marker, " ")
    fenced = [m.group(1) for m in _FENCE.finditer(text)]
    candidates = fenced + [text]
    start, end = text.find("["), text.rfind("]")
    if start != -1 and end > start:
        candidates.append(text[start: end + 1])
    for cand in candidates:
        calls = json_calls(cand)
        if calls is not None:
            return calls
    for cand in fenced + [text]:
        calls = python_calls(cand)
        if calls is not None:
            return calls
    return None


def tool_call_blocks(text: str) -> list[Call] | None:
    """Calls in the ``<tool_call>{"name": ..., "arguments": ...}</tool_call>`` blocks that chat
    templates with tools (Qwen2.5, Hermes, ...) make models write, each block read by
    :func:`json_calls`. None if there is no block or one block does not parse (an unclosed last
    block is read up to the end of the text, as generation may stop at the end-of-turn token)."""
    blocks = _TOOL_CALL.findall(text)
    if not blocks:
        return None
    calls: list[Call] = []
    for block in blocks:
        block_calls = json_calls(block)
        if block_calls is None:
            return None
        calls.extend(block_calls)
    return calls

_JSON_DECODER = json.JSONDecoder()

_CALL_SEPARATORS = frozenset(" \t\r\n;")


def json_calls(text: str) -> list[Call] | None:
    """Calls in a text that is nothing but JSON: one call object, a list of them, or several of
    either separated by whitespace or ``;`` (Llama 3.x). Each object is read by :func:`as_call`.
    None if any part is not a call or anything else is in the text, so prose that merely
    contains JSON is not taken for calls."""
    values, i, n, found = [], 0, len(text), False
    while True:
        while i < n and text[i] in _CALL_SEPARATORS:
            i += 1
        if i == n:
            break
        try:
            value, i = _JSON_DECODER.raw_decode(text, i)
        except (json.JSONDecodeError, ValueError, RecursionError):
            return None
        found = True
        values.extend(value if isinstance(value, list) else [value])
        if i < n and text[i] not in _CALL_SEPARATORS:
            return None
    if not found:
        return None
    calls = [as_call(v) for v in values]
    return None if any(c is None for c in calls) else calls


def as_call(obj: Any) -> Call | None:
    """One call object as ``{"name", "arguments"}``, or None if it is not one. ``arguments`` may
    be an object or a JSON string (OpenAI style); without ``arguments``, ``parameters`` is read
    (Llama 3.x); with neither, the call has no arguments."""
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = obj["arguments"] if "arguments" in obj else obj.get("parameters", {})
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except (json.JSONDecodeError, ValueError, RecursionError):
            return None
    return {"name": obj["name"], "arguments": args} if isinstance(args, dict) else None

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}

#: The largest integer arithmetic in a call may build, in bits (~1,233 digits: under Python's
#: 4,300-digit limit for printing it). Capping each exponent is not enough: ``((10**64)**64)**64``
#: repeats powers until one takes minutes.
_MAX_INT_BITS = 4096


def python_calls(text: str) -> list[Call] | None:
    """BFCL's Python call syntax (``[f(a=1), m.g(b=[2])]``, brackets optional); keyword
    arguments only, as BFCL reads them. Values are literals; a bare name is its own text (BFCL
    treats variables as strings); arithmetic on numbers is evaluated (safely, without eval)."""
    src = text.strip("`\n ")
    if not src:
        return None
    src = ("" if src.startswith("[") else "[") + src + ("" if src.endswith("]") else "]")
    try:
        body = ast.parse(src, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    nodes = [body] if isinstance(body, ast.Call) else getattr(body, "elts", None)
    if nodes is None or not all(isinstance(n, ast.Call) for n in nodes):
        return None
    try:
        return [{"name": _dotted(n.func), "arguments": {k.arg: _py_value(k.value) for k in n.keywords if k.arg}}
                for n in nodes]
    except (ValueError, TypeError, ArithmeticError, RecursionError):
        return None


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        raise ValueError("not a function name")
    parts.append(node.id)
    return ".".join(reversed(parts))


def _py_value(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant):
        if node.value is Ellipsis:
            return "..."
        if isinstance(node.value, (bytes, complex)):
            raise ValueError("bytes and complex literals are not JSON values")
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _py_value(node.operand)
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise ValueError("sign of a non-number")
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.List):
        return [_py_value(e) for e in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_py_value(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise ValueError("dict unpacking")
        keys = [_py_value(k) for k in node.keys]
        if not all(isinstance(k, (str, int, float, bool)) or k is None for k in keys):
            raise ValueError("dict keys must be JSON scalars")
        return dict(zip(keys, (_py_value(v) for v in node.values)))
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Call):
        if not node.keywords:
            return ast.unparse(node)
        return {_dotted(node.func): {k.arg: _py_value(k.value) for k in node.keywords if k.arg}}
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _py_value(node.left), _py_value(node.right)
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (left, right)):
            if isinstance(node.op, ast.Pow) and abs(right) > 64:
                raise ValueError("exponent too large")
            if isinstance(left, int) and isinstance(right, int) and _result_bits(node.op, left, right) > _MAX_INT_BITS:
                raise ValueError("integer result too large")
            return _BINOPS[type(node.op)](left, right)
    return ast.unparse(node)


def _result_bits(op: ast.operator, left: int, right: int) -> int:
    """An upper bound of the bits of ``left <op> right`` for the operators that grow a number
    (others stay within their operands' size)."""
    if isinstance(op, ast.Pow):
        return right * left.bit_length() if right > 0 else 0  # a negative exponent gives a float
    if isinstance(op, ast.Mult):
        return left.bit_length() + right.bit_length()
    return 0


__all__ = ["Call", "as_call", "json_calls", "parse_calls", "python_calls", "tool_call_blocks"]
