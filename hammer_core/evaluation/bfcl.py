"""BFCL single-turn evaluation: the data shipped in ``bfcl-eval`` and an AST checker with its semantics.

The Berkeley Function Calling Leaderboard (BFCL) scores a model's calls by comparing their
*abstract syntax* with a list of accepted values per parameter. This module re-implements
that comparison (it never imports ``bfcl_eval``: the package's modules pull in every model
SDK) so that a verdict here is the verdict the official checker
(``bfcl_eval/eval_checker/ast_eval/ast_checker.py`` and the relevance rules of
``eval_runner.py``, version 2026.3.23) gives for the same decoded calls.

Data
----
``bfcl-eval`` ships its questions as package data (``bfcl_eval/data/BFCL_v4_<category>.json``,
JSON *lines* despite the suffix) and the answers beside them in ``possible_answer/``::

    {"id", "question": [[{"role", "content"}, ...]], "function": [{"name", "description",
     "parameters": {"type": "dict", "properties": {...}, "required": [...]}}]}
    {"id", "ground_truth": [{"<function name>": {"<param>": [<accepted value>, ...]}}]}

An accepted value ``""`` means "may be omitted". Irrelevance categories have no answers:
any call is wrong. :func:`data_dir` finds the folder through the import system without
running ``bfcl_eval/__init__.py``.

Calls are checked in BFCL's decoded form, one ``{name: {param: value}}`` dict per call.

Rules (the ``rule`` of a failed :class:`Verdict` is BFCL's ``error_type``)
--------------------------------------------------------------------------
* structure -- ``simple`` categories need exactly one call (``simple_function_checker:wrong_count``);
  ``multiple`` needs as many calls as answers and checks the first against the first answer
  (``multiple_function_checker:wrong_count``); ``parallel`` and ``parallel_multiple`` need as
  many calls as answers (``parallel_function_checker_no_order:wrong_count``) and match them in
  any order: answers are taken in order, each claims the first unclaimed call that passes
  (``parallel_function_checker_no_order:cannot_find_match``). The matching is greedy, as BFCL's.
* per call -- the function name must match (``simple_function_checker:wrong_func_name``;
  names with dots may be compared with dots turned into underscores, BFCL's
  ``underscore_to_dot`` for APIs that forbid dots); every required parameter present
  (``...:missing_required``); no parameter that the function or the answer does not declare
  (``...:unexpected_param``); every answer parameter present unless ``""`` is accepted
  (``...:missing_optional``).
* types -- Python: exact types (a bool is not an int), except that an int is accepted for a
  ``float`` parameter; ``tuple`` is a list. Arrays and tuples check their items one level deep
  against the answer's item type (``type_error:nested``, no int-for-float there). A value whose
  type differs from the declared one but equals the type of the accepted values is a
  "variable" (BFCL writes variable names as strings) and is compared as is
  (``type_error:simple`` otherwise). Java and JavaScript values must be strings of source
  code (``type_error:java`` / ``type_error:js``), converted by BFCL's literal rules first.
* values -- strings are compared after BFCL's normalization (drop `` ,./-_*^``, lower case,
  ``'`` to ``"``; ``value_error:string``); lists element-wise with the same normalization of
  their strings (``value_error:list/tuple``); dicts key by key against each accepted dict
  (``value_error:dict_key`` / ``value_error:dict_value``); lists of dicts in order
  (``value_error:list_dict_count`` and the dict rules); anything else by Python ``==``
  membership (``value_error:others``).
* decoding -- undecodable output fails an AST category (``ast_decoder:decoder_failed``), as
  does output that is not a list of one-key ``{name: {args}}`` dicts
  (``ast_decoder:decoder_wrong_output_format``).
* relevance -- ``irrelevance`` categories pass when the output holds no call (undecodable,
  ``[]`` or ``[{}]``; ``irrelevance_error:decoder_success`` otherwise); ``live_relevance``
  passes when it holds at least one call, whatever it is (``relevance_error:decoder_failed``).

Where the official checker would crash on a malformed prediction (a non-dict item inside a
list-of-dicts parameter, say) this checker returns a failed verdict instead.

Own corpora
-----------
:func:`entry_from_row` turns a canonical row (see :mod:`hammer_core.schema`) into an
:class:`Entry` with BFCL-style answers, so held-out splits are scored by the same rules:
JSON-schema types map to BFCL's (``number`` -> ``float``, ``object`` -> ``dict``; a missing or
unknown type skips the type check), each gold argument is the one accepted value (an
optional parameter whose gold value is its default may also be omitted), optional parameters
the gold call leaves out accept only omission, and the category follows from the shape of
the row (no call: ``irrelevance``; one call: ``simple`` or ``multiple``; several: ``parallel``).
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hammer_core.bfcl_categories import (ALIASES, CATEGORIES, GROUPS, JAVA, JAVASCRIPT, PYTHON,  # noqa: F401
                                         Category, resolve_categories)

VERSION_PREFIX = "BFCL_v4"

# ----------------------------------------------------------------------------------------------
# data


@dataclass
class Entry:
    """One test question: conversation, callable functions, accepted answers (None: no answer file)."""

    id: str
    category: str
    messages: list[dict[str, str]]
    functions: list[dict[str, Any]]
    ground_truth: list[dict[str, dict[str, list[Any]]]] | None = None
    language: str = PYTHON


def data_dir() -> Path:
    """The ``data`` folder of the installed ``bfcl-eval`` package, found without importing it."""
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the BFCL data is not installed: pip install --no-deps bfcl-eval==2026.3.23")
    for loc in spec.submodule_search_locations:
        if (Path(loc) / "data").is_dir():
            return Path(loc) / "data"
    raise FileNotFoundError(f"bfcl_eval is installed at {list(spec.submodule_search_locations)} "
                            "but has no data folder")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{n}: not valid JSON ({err})") from None
    return rows


def load_category(name: str, root: str | Path | None = None) -> list[Entry]:
    """The entries of one category (single-turn: the first turn's messages), answers attached."""
    cat = CATEGORIES[ALIASES.get(name, name)]
    root = Path(root) if root else data_dir()
    questions = _read_jsonl(root / f"{VERSION_PREFIX}_{cat.name}.json")
    answers: dict[str, Any] = {}
    if cat.has_answers:
        answers = {a["id"]: a["ground_truth"] for a in
                   _read_jsonl(root / "possible_answer" / f"{VERSION_PREFIX}_{cat.name}.json")}
    entries = []
    for q in questions:
        if cat.has_answers and q["id"] not in answers:
            raise ValueError(f"BFCL {cat.name}: question {q['id']} has no possible answer")
        entries.append(Entry(id=q["id"], category=cat.name, messages=q["question"][0],
                             functions=q["function"], ground_truth=answers.get(q["id"]),
                             language=cat.language))
    return entries


_HINTS = {PYTHON: " Note that the provided function is in Python 3 syntax.",
          JAVA: " Note that the provided function is in Java 8 SDK syntax.",
          JAVASCRIPT: " Note that the provided function is in JavaScript syntax."}


def prompt_functions(entry: Entry) -> list[dict[str, Any]]:
    """Function docs as BFCL shows them to a model: a language hint on each description, and
    Java/JavaScript parameters declared as strings of source code (the checker keeps the
    original types)."""
    lang_name = {JAVA: "Java", JAVASCRIPT: "JavaScript"}.get(entry.language)
    shown = []
    for fn in json.loads(json.dumps(entry.functions)):
        fn["description"] = fn.get("description", "") + _HINTS[entry.language]
        if lang_name:
            for spec in fn.get("parameters", {}).get("properties", {}).values():
                t = spec.get("type")
                desc = spec.get("description", "")
                if t == "any":
                    desc += f" This parameter can be of any type of {lang_name} object in string representation."
                else:
                    desc += f" This is {lang_name} {t} type parameter in string representation."
                if t in ("ArrayList", "Array", "array") and isinstance(spec.get("items"), dict):
                    desc += (f" The list elements are of type {spec['items'].get('type')}; they are not in "
                             "string representation.")
                    spec.pop("items")
                if t == "dict" and entry.language == JAVASCRIPT and "properties" in spec:
                    desc += (" The dictionary entries have the following schema; they are not in string "
                             f"representation. {json.dumps(spec.pop('properties'))}")
                spec["description"] = desc
                spec["type"] = "string"
        shown.append(fn)
    return shown


# ----------------------------------------------------------------------------------------------
# verdicts


@dataclass(frozen=True)
class Verdict:
    """The outcome of one check: ``rule`` is BFCL's error type ('' when valid)."""

    valid: bool
    rule: str = ""
    detail: str = ""


OK = Verdict(True)


def _fail(rule: str, detail: str) -> Verdict:
    return Verdict(False, rule, detail)


def is_call_list(calls: Any) -> bool:
    """BFCL's function-calling format: a list of one-key ``{name: {args}}`` dicts (``[]`` too)."""
    return type(calls) is list and all(
        type(c) is dict and len(c) == 1 and type(next(iter(c.values()))) is dict for c in calls)


def has_call(calls: Any) -> bool:
    """BFCL's relevance test: decoded output that holds at least one call."""
    if calls is None or not is_call_list(calls) or len(calls) == 0:
        return False
    return not (len(calls) == 1 and len(calls[0]) == 0)


def check_entry(entry: Entry, calls: list[dict[str, dict[str, Any]]] | None, *,
                underscore_to_dot: bool = False) -> Verdict:
    """Verdict for decoded ``calls`` (``None``: the output could not be decoded)."""
    kind = CATEGORIES[entry.category].kind if entry.category in CATEGORIES else _own_kind(entry)
    if kind == "irrelevance":
        if has_call(calls):
            return _fail("irrelevance_error:decoder_success",
                         "Valid syntax. Successfully decode AST when it should not.")
        return OK
    if kind == "relevance":
        if has_call(calls):
            return OK
        return _fail("relevance_error:decoder_failed", "Failed to decode AST when it should have.")
    if calls is None:
        return _fail("ast_decoder:decoder_failed", "Invalid syntax. Failed to decode AST.")
    if not is_call_list(calls):
        return _fail("ast_decoder:decoder_wrong_output_format", "Did not output in the specified format.")
    assert entry.ground_truth is not None
    return check_calls(entry.functions, calls, entry.ground_truth, entry.category, entry.language,
                       underscore_to_dot=underscore_to_dot)


def _own_kind(entry: Entry) -> str:
    return "irrelevance" if entry.ground_truth is None or entry.category == "irrelevance" else "ast"


def check_calls(functions: list[dict[str, Any]], calls: list[dict[str, dict[str, Any]]],
                ground_truth: list[dict[str, dict[str, list[Any]]]], category: str,
                language: str = PYTHON, *, underscore_to_dot: bool = False) -> Verdict:
    """BFCL's ``ast_checker``: dispatch on the category name, as BFCL does (by substring)."""
    if "parallel" in category:
        if len(calls) != len(ground_truth):
            return _fail("parallel_function_checker_no_order:wrong_count", "Wrong number of functions.")
        claimed: set[int] = set()
        for i, expected in enumerate(ground_truth):
            doc = _find_function(functions, next(iter(expected)))
            last: Verdict | None = None
            for j, call in enumerate(calls):
                if j in claimed:
                    continue
                last = _check_call(doc, call, expected, language, underscore_to_dot)
                if last.valid:
                    claimed.add(j)
                    break
            if last is not None and not last.valid:
                return _fail("parallel_function_checker_no_order:cannot_find_match",
                             f"no call matches answer #{i} ({next(iter(expected))}); "
                             f"last mismatch: {last.rule}: {last.detail}")
        return OK
    if "multiple" in category:
        if len(calls) != len(ground_truth):
            return _fail("multiple_function_checker:wrong_count", "Wrong number of functions.")
        doc = _find_function(functions, next(iter(ground_truth[0])))
        return _check_call(doc, calls[0], ground_truth[0], language, underscore_to_dot)
    if len(calls) != 1:
        return _fail("simple_function_checker:wrong_count", "Wrong number of functions.")
    return _check_call(functions[0], calls[0], ground_truth[0], language, underscore_to_dot)


def _find_function(functions: list[dict[str, Any]], name: str) -> dict[str, Any]:
    for fn in functions:
        if fn["name"] == name:
            return fn
    raise ValueError(f"the answer calls {name!r}, which is not among the functions "
                     f"{[f['name'] for f in functions]}")


# ---- one call


def _check_call(doc: dict[str, Any], call: dict[str, dict[str, Any]], expected: dict[str, dict[str, list[Any]]],
                language: str, underscore_to_dot: bool) -> Verdict:
    accepted = next(iter(expected.values()))
    name = doc["name"]
    if underscore_to_dot and "." in name:
        name = name.replace(".", "_")
    if name not in call:
        return _fail("simple_function_checker:wrong_func_name", f"Function name {name!r} not found in model output.")
    args = call[name]
    params = doc.get("parameters", {})
    for p in params.get("required", []):
        if p not in args:
            return _fail("simple_function_checker:missing_required", f"Missing required parameter: {p!r}.")
    props = params.get("properties", {})
    for p, value in args.items():
        if p not in props or p not in accepted:
            return _fail("simple_function_checker:unexpected_param", f"Unexpected parameter: {p!r}.")
        verdict = _check_param(p, value, props[p], accepted[p], language)
        if not verdict.valid:
            return verdict
    for p, options in accepted.items():
        if p not in args and "" not in options:
            return _fail("simple_function_checker:missing_optional",
                         f"Optional parameter {p!r} not provided and not marked as optional.")
    return OK


PY_TYPES: dict[str, type] = {"string": str, "integer": int, "float": float, "boolean": bool, "array": list,
                             "tuple": list, "dict": dict, "any": str}
JAVA_TYPES: dict[str, type] = {"byte": int, "short": int, "integer": int, "float": float, "double": float,
                               "long": int, "boolean": bool, "char": str, "Array": list, "ArrayList": list,
                               "Set": set, "HashMap": dict, "Hashtable": dict, "Queue": list, "Stack": list,
                               "String": str, "any": str}
JS_TYPES: dict[str, type] = {"String": str, "integer": int, "float": float, "Bigint": int, "Boolean": bool,
                             "dict": dict, "array": list, "any": str}
_PY_NESTED = ("array", "tuple")
_SOURCE_NESTED = ("Array", "ArrayList", "array")


def _item_type(spec: dict[str, Any]) -> str | None:
    items = spec.get("items")
    return items.get("type") if isinstance(items, dict) else None


def _check_param(param: str, value: Any, spec: dict[str, Any], options: list[Any], language: str) -> Verdict:
    declared = spec.get("type")
    nested: type | None = None
    if language == PYTHON:
        expected = PY_TYPES.get(declared) if isinstance(declared, str) else None
        if expected is None:  # own corpora only: no or unknown type -> compare values as they are
            return OK if value in options else _value_error(param, value, options)
        if declared in _PY_NESTED and _item_type(spec) in PY_TYPES:
            nested = PY_TYPES[_item_type(spec)]
    else:
        table, convert, rule = ((JAVA_TYPES, java_value, "type_error:java") if language == JAVA
                                else (JS_TYPES, js_value, "type_error:js"))
        if declared not in table:
            raise ValueError(f"parameter {param!r}: {language} type {declared!r} is not one BFCL knows")
        expected = table[declared]
        if type(value) is not str:
            return _fail(rule, f"Incorrect type for parameter {param!r}. Expected type String, "
                               f"got {type(value).__name__}. Parameter value: {value!r}.")
        if declared in _SOURCE_NESTED:
            item = _item_type(spec)
            nested = table[item] if item is not None else None
            value = convert(value, declared, item)
        else:
            value = convert(value, declared)

    if declared == "tuple" and type(value) is tuple:
        value = list(value)
    if language == PYTHON and declared == "float" and type(value) is int:
        value = float(value)

    typed, is_variable = _type_check(param, value, options, declared, expected, nested)
    if not typed.valid:
        return typed
    if not is_variable:
        if expected is dict:
            return _dict_check(param, value, options)
        if expected is list and nested is dict:
            return _list_dict_check(param, value, options)
        if expected is str:
            return _string_check(param, value, options)
        if expected is list:
            return _list_check(param, value, options)
    return OK if value in options else _value_error(param, value, options)


def _value_error(param: str, value: Any, options: list[Any]) -> Verdict:
    return _fail("value_error:others", f"Invalid value for parameter {param!r}: {value!r}. Expected one of {options}.")


def _answer_type(options: list[Any]) -> type | None:
    for o in options:
        if o != "":
            return type(o)
    return None


def _type_check(param: str, value: Any, options: list[Any], declared: Any, expected: type,
                nested: type | None) -> tuple[Verdict, bool]:
    """(verdict, is_variable). A value of the accepted values' type but not the declared type
    is a variable and passes; arrays check their items one level deep."""
    answer_type = _answer_type(options)
    is_variable = answer_type is not None and answer_type is not expected
    nested_failed = False
    if type(value) is expected:
        if nested is None:
            return OK, is_variable
        for option in options:
            if type(option) is not list or all(_type_check(param, v, option, nested, nested, None)[0].valid
                                              for v in value):
                return OK, is_variable
        nested_failed = True
    if answer_type is not None and type(value) is answer_type:
        if nested_failed:
            return _fail("type_error:nested", f"Nested type checking failed for parameter {param!r}. "
                                              f"Expected outer type {declared} with inner type "
                                              f"{nested.__name__ if nested else None}. Parameter value: {value!r}."), True
        return OK, True
    return _fail("type_error:simple", f"Incorrect type for parameter {param!r}. Expected type {declared}, "
                                      f"got {type(value).__name__}. Parameter value: {value!r}."), is_variable


_DROP = str.maketrans("", "", " ,./-_*^")


def standardize(text: str) -> str:
    """BFCL's string normalization: drop `` ,./-_*^``, lower case, single quotes to double."""
    return text.translate(_DROP).lower().replace("'", '"')


def _std(v: Any) -> Any:
    return standardize(v) if type(v) is str else v


def _string_check(param: str, value: str, options: list[Any]) -> Verdict:
    if standardize(value) in [standardize(o) for o in options if type(o) is str]:
        return OK
    return _fail("value_error:string", f"Invalid value for parameter {param!r}: {value!r}. "
                                       f"Expected one of {options}. Case insensitive.")


def _list_check(param: str, value: list[Any], options: list[Any]) -> Verdict:
    got = [_std(v) for v in value]
    # BFCL walks each accepted value element-wise; the optional marker "" becomes [].
    if got in [[_std(v) for v in o] for o in options if isinstance(o, (list, tuple, str))]:
        return OK
    return _fail("value_error:list/tuple", f"Invalid value for parameter {param!r}: {value!r}. "
                                           f"Expected one of {options}.")


def _dict_check(param: str, value: Any, options: list[Any]) -> Verdict:
    result = _fail("dict_checker:unclear", f"no accepted dict for parameter {param!r}")
    if type(value) is not dict:  # BFCL raises here; a malformed prediction is simply wrong
        return result
    for option in options:
        if option == "":
            continue
        if type(option) is not dict:
            result = _fail("dict_checker:unclear", f"accepted value {option!r} of {param!r} is not a dict")
            continue
        result, ok = OK, True
        for key, v in value.items():
            if key not in option:
                result, ok = _fail("value_error:dict_key", f"Unexpected dict key parameter: {key!r}."), False
                break
            if _std(v) not in [_std(o) for o in option[key]]:
                result, ok = _fail("value_error:dict_value", f"Invalid value for parameter {key!r}: {v!r}. "
                                                             f"Expected one of {option[key]}."), False
                break
        for key, accepted in option.items():  # BFCL runs this even after a value mismatch
            if key not in value and "" not in accepted:
                result, ok = _fail("value_error:dict_key", f"Missing dict key parameter: {key!r}."), False
                break
        if ok:
            return OK
    return result


def _list_dict_check(param: str, value: list[Any], options: list[Any]) -> Verdict:
    result = _fail("list_dict_checker:unclear", f"no accepted list of dicts for parameter {param!r}")
    for option in options:
        if not isinstance(option, (list, tuple, str)) or len(value) != len(option):
            result = _fail("value_error:list_dict_count", "Wrong number of dictionaries in the list.")
            continue
        ok = True
        for i, item in enumerate(value):
            result = _dict_check(param, item, [option[i]])
            if not result.valid:
                ok = False
                break
        if ok:
            return OK
    return result


# ----------------------------------------------------------------------------------------------
# Java and JavaScript literals (BFCL's converters): a value that does not parse stays a string

_INT = re.compile(r"^-?\d+$")
_JAVA_FLOAT = re.compile(r"^-?\d+(\.\d+)?([eE][+-]?\d+)?[fF]$")
_JAVA_DOUBLE = re.compile(r"^-?\d+(\.\d+)?([eE][+-]?\d+)?$")
_JAVA_LONG = re.compile(r"^-?\d+[lL]$")
_JAVA_CHAR = re.compile(r"^\'.$\'")  # as BFCL writes it (it never matches, so chars stay as given)
_JAVA_ASLIST = re.compile(r"new\s+ArrayList<\w*>\(Arrays\.asList\((.+?)\)\)")
_JAVA_ADDS = re.compile(r"new\s+ArrayList<\w*>\(\)\s*\{\{\s*(.+?)\s*\}\}", re.DOTALL)
_JAVA_ADD = re.compile(r"add\((.+?)\)")
_JAVA_EMPTY_LIST = re.compile(r"new\s+ArrayList<\w*>\(\)")
_JAVA_ARRAY = re.compile(r"new\s+\w+\[\]\s*\{(.*?)\}")
_JAVA_MAP = re.compile(r"new\s+HashMap<.*?>\s*\(\)\s*\{\s*\{?\s*(.*?)\s*\}?\s*\}", re.DOTALL)
_JAVA_PUT = re.compile(r"put\(\"(.*?)\",\s*(.*?)\)")
_JAVA_EMPTY_MAP = re.compile(r"new\s+HashMap<.*?>\s*\(\)")


def _number(text: str) -> Any:
    """int, else float, else the text (Python's own int()/float() rules, as BFCL uses them)."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def java_literal(text: str) -> Any:
    """A Java literal of unknown type: boolean, "string", 1L, 1.5f, number, else the text."""
    if text in ("true", "false"):
        return text == "true"
    if text.startswith('"') and text.endswith('"'):
        return text[1:-1]
    if _JAVA_LONG.match(text):
        return int(text[:-1])
    if _JAVA_FLOAT.match(text):
        return float(re.sub(r"[fF]$", "", text))
    return _number(text)


def java_value(text: str, java_type: str, item_type: str | None = None) -> Any:
    """BFCL's ``java_type_converter``: Java source text -> Python value (or the text itself)."""
    if java_type not in JAVA_TYPES:
        raise ValueError(f"Unsupported type: {java_type}")
    if java_type in ("byte", "short", "integer"):
        return int(text) if _INT.match(text) else str(text)
    if java_type == "float":
        return float(re.sub(r"[fF]$", "", text)) if _JAVA_FLOAT.match(text) else str(text)
    if java_type == "double":
        return float(text) if _JAVA_DOUBLE.match(text) else str(text)
    if java_type == "long":
        return int(re.sub(r"[lL]$", "", text)) if _JAVA_LONG.match(text) else str(text)
    if java_type == "boolean":
        return text == "true" if text in ("true", "false") else str(text)
    if java_type == "char":
        return text if _JAVA_CHAR.match(text) else str(text)
    if java_type == "ArrayList":
        return _java_arraylist(text, item_type)
    if java_type == "Array":
        return _java_array(text, item_type)
    if java_type == "HashMap":
        return _java_hashmap(text)
    if java_type in ("String", "any"):
        return str(text)
    raise NotImplementedError(f"{java_type} conversion is not implemented")


def _java_element(text: str, item_type: str | None) -> Any:
    text = text.strip()
    if item_type in ("char", "String"):
        return text[1:-1]
    return java_value(text, item_type) if item_type else java_literal(text)


def _java_arraylist(text: str, item_type: str | None) -> Any:
    m = _JAVA_ASLIST.search(text)
    if m:
        return [_java_element(e, item_type) for e in m.group(1).split(",")]
    m = _JAVA_ADDS.search(text)
    if m:
        return [_java_element(e, item_type) for e in _JAVA_ADD.findall(m.group(1))]
    return [] if _JAVA_EMPTY_LIST.search(text) else text


def _java_array(text: str, item_type: str | None) -> Any:
    m = _JAVA_ARRAY.search(text)
    if not m:
        return text
    parts = [p.strip() for p in m.group(1).split(",") if p.strip()]
    return [java_value(p, item_type) if item_type else java_literal(p) for p in parts]


def _java_hashmap(text: str) -> Any:
    m = _JAVA_MAP.search(text)
    if m:
        body = m.group(1)
        if not body.strip():
            return {}
        return {k: java_literal(v.strip()) for k, v in _JAVA_PUT.findall(body)}
    return {} if _JAVA_EMPTY_MAP.search(text) else text


_JS_FLOAT = re.compile(r"^-?\d+(\.\d+)?$")
_JS_BIGINT = re.compile(r"^-?\d+n$")
_JS_ARRAY_2D = re.compile(r"\[\s*\[.*?\]\s*(,\s*\[.*?\]\s*)*\]|\bnew\s+Array\(\s*\[.*?\]\s*(,\s*\[.*?\]\s*)*\)")
_JS_ARRAY = re.compile(r"\[(.*?)\]|\bnew\s+Array\((.*?)\)")
_JS_INNER = re.compile(r"\[(.*?)\]")
_JS_OBJECT = re.compile(r"\{(.*?)\}")
_JS_PAIR = re.compile(r"([^:]+):\s*(.*?)(?:,\s*(?=[^,]+:)|$)")


def js_literal(text: str) -> Any:
    """A JavaScript literal of unknown type: boolean, quoted string, number, else the text."""
    text = text.strip()
    if text in ("true", "false"):
        return text == "true"
    if (text.startswith('"') and text.endswith('"')) or (text.startswith("'") and text.endswith("'")):
        return text[1:-1]
    return _number(text)


def js_value(text: str, js_type: str, item_type: str | None = None) -> Any:
    """BFCL's ``js_type_converter``: JavaScript source text -> Python value (or the text itself)."""
    if js_type not in JS_TYPES:
        raise ValueError(f"Unsupported type: {js_type}")
    if js_type == "String":
        quoted = (text.startswith('"') and text.endswith('"')) or (text.startswith("'") and text.endswith("'"))
        return text[1:-1] if quoted else str(text)
    if js_type == "integer":
        return int(text) if _INT.match(text) else str(text)
    if js_type == "float":
        return float(text) if _JS_FLOAT.match(text) else str(text)
    if js_type == "Bigint":
        return int(text[:-1]) if _JS_BIGINT.match(text) else str(text)
    if js_type == "Boolean":
        return text == "true" if text in ("true", "false") else str(text)
    if js_type == "array":
        return _js_array(text.strip(), item_type)
    if js_type == "dict":
        return _js_object(text.strip())
    return str(text)  # any


def _js_array(code: str, item_type: str | None) -> Any:
    try:
        m = _JS_ARRAY_2D.match(code)
        if m:
            rows = []
            for idx, inner in enumerate(_JS_INNER.findall(m.group(0))):
                inner = inner.strip()
                if idx == 0 and inner.startswith("["):
                    inner = inner[1:]
                rows.append([js_literal(e.strip()) for e in inner.split(",")])
            return rows
        m = _JS_ARRAY.match(code)
        if not m:
            return code
        body = m.group(1) if m.group(1) is not None else m.group(2)
        body = (body or "").strip()
        parts = body.split(",") if body else []
        if item_type:
            return [js_value(p.strip(), item_type, "String") if p.strip().startswith(("'", '"'))
                    else js_value(p.strip(), item_type) for p in parts]
        return [js_literal(p.strip()) for p in parts]
    except Exception:  # BFCL keeps the source text when its parser trips
        return code


def _js_object(code: str) -> Any:
    if code == "{}":
        return {}
    m = _JS_OBJECT.match(code)
    if not m:
        return code
    try:
        out: dict[str, Any] = {}
        for key, raw in _JS_PAIR.findall(m.group(1)):
            key, raw = key.strip().strip("'\""), raw.strip()
            if raw.startswith("[") and raw.endswith("]"):
                out[key] = _js_array(raw.strip(), None)
            elif raw.startswith("{") and raw.endswith("}"):
                out[key] = _js_object(raw.strip())
            else:
                out[key] = js_literal(raw.strip("'\""))
        return out
    except Exception:
        return code


# ----------------------------------------------------------------------------------------------
# own corpora in BFCL form

_SCHEMA_TO_BFCL = {"string": "string", "integer": "integer", "number": "float", "boolean": "boolean",
                   "array": "array", "object": "dict"}


def _bfcl_spec(spec: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in spec.items() if not k.startswith("x-") and k not in ("type", "items")}
    t = spec.get("type")
    if isinstance(t, str) and t in _SCHEMA_TO_BFCL:
        out["type"] = _SCHEMA_TO_BFCL[t]
        items = spec.get("items")
        if out["type"] == "array" and isinstance(items, dict) and items.get("type") in _SCHEMA_TO_BFCL:
            out["items"] = {"type": _SCHEMA_TO_BFCL[items["type"]]}
    return out


def _accepted(value: Any, bfcl_type: str | None, item_type: str | None) -> Any:
    """The gold value in BFCL's answer form: dicts list their keys' accepted values."""
    if bfcl_type == "dict" and isinstance(value, dict):
        return {k: [v] for k, v in value.items()}
    if bfcl_type == "array" and item_type == "dict" and isinstance(value, list):
        return [{k: [v] for k, v in d.items()} if isinstance(d, dict) else d for d in value]
    return value


def functions_from_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Canonical (JSON-schema) tools as BFCL function docs."""
    docs = []
    for tool in tools:
        params = tool.get("parameters") or {}
        props = {p: _bfcl_spec(s) for p, s in (params.get("properties") or {}).items()}
        docs.append({"name": tool["name"], "description": tool.get("description", ""),
                     "parameters": {"type": "dict", "properties": props,
                                    "required": list(params.get("required") or [])}})
    return docs


def entry_from_row(row: dict[str, Any]) -> Entry:
    """A canonical row (tools/calls as JSON strings) as a BFCL entry with its own answers."""
    tools = json.loads(row["tools"]) if isinstance(row["tools"], str) else row["tools"]
    calls = json.loads(row["calls"]) if isinstance(row["calls"], str) else row["calls"]
    functions = functions_from_tools(tools)
    messages = [dict(m) for m in row.get("messages") or []]
    if not calls:
        return Entry(str(row["id"]), "irrelevance", messages, functions, None)
    by_name = {f["name"]: f for f in functions}
    raw_specs = {t["name"]: (t.get("parameters") or {}).get("properties") or {} for t in tools}
    truth = []
    for call in calls:
        doc = by_name[call["name"]]["parameters"]
        required = set(doc["required"])
        answer: dict[str, list[Any]] = {}
        for p, v in call["arguments"].items():
            spec = doc["properties"].get(p, {})
            answer[p] = [_accepted(v, spec.get("type"), _item_type(spec))]
            default = raw_specs[call["name"]].get(p, {}).get("default")
            if p not in required and "default" in raw_specs[call["name"]].get(p, {}) and default == v:
                answer[p].append("")
        for p in doc["properties"]:
            if p not in answer and p not in required:
                answer[p] = [""]
        truth.append({call["name"]: answer})
    if len(calls) > 1:
        category = "parallel_multiple" if len({c["name"] for c in calls}) > 1 else "parallel"
    else:
        category = "multiple" if len(functions) > 1 else "simple"
    return Entry(str(row["id"]), category, messages, functions, truth)
