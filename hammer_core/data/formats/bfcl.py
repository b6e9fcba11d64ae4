"""BFCL (Berkeley Function Calling Leaderboard) question + possible-answer files → canonical rows.

BFCL ships each category as two JSON-*lines* files despite the ``.json`` name:

- the question file ``BFCL_v3_simple.json``: ``{"id", "question": [[{"role", "content"},
  ...]], "function": [{"name", "description", "parameters": {"type": "dict", "properties",
  "required"}}]}`` (``question`` may also be one list of messages or a plain string, and
  ``function`` a single object, as in older releases);
- the answer file ``possible_answer/BFCL_v3_simple.json`` next to it: ``{"id",
  "ground_truth": [{"<function>": {"<param>": [<accepted values>...]}}, ...]}``.

:func:`bind_answers` joins them by ``id`` when a question file is read (a record that already
carries ``ground_truth`` keeps it). The target call of each ground-truth entry takes the
**first** accepted value of each parameter; a first value of ``""`` means "may be omitted",
so the parameter is left out. The same rule applies inside a dict-typed value (each nested
key maps to its own list of accepted values). Parameter types are normalized by
:func:`hammer_core.data.formats.common.normalize_schema` (``dict`` → ``object``, ``float`` →
``number``, ``tuple`` → ``array``, ``any`` → untyped).

Files with ``irrelevance`` in their name (``irrelevance``, ``live_irrelevance``) have no
answer file: any call is wrong, so their target is ``[]``. Any other question without an
answer (no answer file, or no entry for its id; e.g. ``live_relevance``) is rejected as
``missing_field``, naming where the answer was looked for. Multi-turn categories (ground truth
as Python call strings) are rejected as ``bad_call``. Language categories (``java``,
``javascript``) declare language type names and pass every value as source text; values that
do not fit a normalized type (a Java ``boolean`` given as the text ``"true"``) are
``bad_argument_type`` rejects, and they are not Python-style training data anyway.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hammer_core.data.formats.base import Candidate, Records
from hammer_core.data.row_errors import RowError
from hammer_core.data.formats.common import (convert_schema_tool, load_json_value, record_id,
                                        single_candidate, text_content, unique_tools)

ANSWER_DIR = "possible_answer"


def answer_path(question_file: Path) -> Path:
    """Where BFCL keeps the answers of ``question_file``."""
    return question_file.parent / ANSWER_DIR / question_file.name


def load_answers(path: Path) -> dict[str, Any]:
    """``{id: ground_truth}`` of a possible-answer file (JSON lines). A line that does not
    parse is a whole-file error (ValueError naming the file and line): the answers are the
    labels of many rows, not rows themselves."""
    opener = gzip.open if path.name.endswith(".gz") else open
    answers: dict[str, Any] = {}
    with opener(path, "rt", encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: BFCL answer line is not valid JSON: {e}") \
                    from None
            if not isinstance(entry, Mapping) or "id" not in entry or "ground_truth" not in entry:
                raise ValueError(f"{path}:{lineno}: a BFCL answer line needs 'id' and "
                                 "'ground_truth'")
            answers[str(entry["id"])] = entry["ground_truth"]
    return answers


def bind_answers(path: Path, records: Records) -> Records:
    """Attach each question's ``ground_truth`` from its answer file (see the module doc)."""
    apath = answer_path(path)
    answers = load_answers(apath) if apath.is_file() else {}
    irrelevance = "irrelevance" in path.name.lower()
    for location, record in records:
        if isinstance(record, dict) and "ground_truth" not in record:
            key = str(record.get("id"))
            if key in answers:
                record = {**record, "ground_truth": answers[key]}
            elif irrelevance:
                record = {**record, "ground_truth": []}
            else:
                record = {**record, "_answer_file": str(apath)}
        yield location, record


def _messages(question: Any) -> list[dict[str, str]]:
    if isinstance(question, str):
        return [{"role": "user", "content": question}]
    if not isinstance(question, list):
        raise RowError("bad_field", f"question must be a list, got {type(question).__name__}")
    flat = [m for turn in question for m in (turn if isinstance(turn, list) else [turn])]
    out = []
    for k, message in enumerate(flat, start=1):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise RowError("bad_field", f"question message {k} is not {{role, content}}")
        out.append({"role": message["role"],
                    "content": text_content(message.get("content"), f"question message {k}")})
    return out


def _first_accepted(value: Any) -> Any:
    """The target value of a dict-typed answer: each nested key keeps its first accepted value."""
    if not isinstance(value, Mapping):
        return value
    out = {}
    for key, accepted in value.items():
        chosen = accepted[0] if isinstance(accepted, list) and accepted else accepted
        if chosen != "":
            out[key] = _first_accepted(chosen)
    return out


def ground_truth_calls(ground_truth: Any) -> list[dict[str, Any]]:
    """BFCL ground truth → canonical calls (first accepted value; ``""`` = omitted)."""
    if not isinstance(ground_truth, list):
        raise RowError("bad_call", f"ground_truth must be a list, got "
                                   f"{type(ground_truth).__name__}")
    calls = []
    for i, entry in enumerate(ground_truth):
        if not isinstance(entry, Mapping) or len(entry) != 1:
            kind = ("a Python call string (BFCL multi-turn ground truth is not supported)"
                    if isinstance(entry, (str, list)) else "not a {function: {param: [values]}}")
            raise RowError("bad_call", f"ground truth #{i} is {kind}")
        ((name, params),) = entry.items()
        if not isinstance(params, Mapping):
            raise RowError("bad_call", f"ground truth #{i} ({name!r}): the parameters are not "
                                       "an object")
        arguments = {}
        for pname, accepted in params.items():
            if not isinstance(accepted, list) or not accepted:
                raise RowError("bad_call", f"ground truth #{i} ({name!r}): parameter {pname!r} "
                                           "has no list of accepted values")
            if accepted[0] != "":
                arguments[pname] = _first_accepted(accepted[0])
        calls.append({"name": name, "arguments": arguments})
    return calls


def normalize_bfcl(raw: Mapping[str, Any], *, source: str, task: str,
                   index: int) -> list[Candidate]:
    """The :class:`~hammer_core.data.formats.Normalizer` of the ``bfcl`` format (one target)."""
    for field in ("question", "function"):
        if raw.get(field) is None:
            raise RowError("missing_field", f"the row has no {field!r} field")
    functions = load_json_value(raw["function"], "function")
    tools = unique_tools(functions if isinstance(functions, list) else [functions],
                         convert_schema_tool)
    question = raw["question"]  # a JSON string of messages, or (older releases) the plain text
    if isinstance(question, str) and question.lstrip().startswith("["):
        question = load_json_value(question, "question")
    messages = _messages(question)
    if "ground_truth" not in raw:
        where = raw.get("_answer_file", f"{ANSWER_DIR}/<question file name>")
        raise RowError("missing_field", f"no possible answer for id {raw.get('id')!r} (looked "
                                        f"in {where}; only irrelevance categories need none)")
    calls = ground_truth_calls(load_json_value(raw["ground_truth"], "ground_truth"))
    return single_candidate(row_id=record_id(raw, source, index), source=source, task=task,
                            messages=messages, tools=tools, calls=calls)


__all__ = ["ANSWER_DIR", "answer_path", "bind_answers", "ground_truth_calls", "load_answers",
           "normalize_bfcl"]
