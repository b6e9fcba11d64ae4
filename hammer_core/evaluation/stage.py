"""Evaluation: parsing model output, scoring calls, greedy generation, and the eval stage.

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

Scoring predictions (:func:`score_predictions`, ``hammer eval score``)
    Predictions from any model or server, one JSON line each, ``{"id", "calls": [{"name",
    "arguments"}]}`` or ``{"id", "text": "<raw output>"}`` (read by :func:`parse_calls`), against BFCL categories
    (``bfcl:simple_python,multiple``, ``bfcl:live``, ``bfcl:all``) or a held-out split of the
    user's own corpora (a canonical examples Parquet, or a prepare folder's ``eval.parquet``).
    Verdicts follow BFCL's AST checker (:mod:`hammer_core.evaluation.bfcl`); own data also gets Hammer's
    F1s (:mod:`hammer_core.evaluation.metrics`). The report holds a verdict per id with the failing rule,
    accuracy per category and BFCL's summary scores; an id without a prediction is wrong
    (``missing_prediction``), as it would be on the leaderboard.

The eval stage (:func:`evaluate`)
    Batched greedy decoding (left padding, KV cache) with the trained CGC-LoRA model or an
    exported 1 + N PEFT model (each row uses its task's adapter), then, in ``metrics.json``:

    * ``exact_match`` -- the predicted calls equal the target calls (names and arguments; the
      order of parallel calls does not matter), over all rows; ``exact_match/<task>`` per task;
    * ``call_accuracy`` -- exact match over rows whose target has calls;
    * ``irrelevance_accuracy`` -- share of "no call" rows (``no_call_rows`` of them) where the
      model made no call;
    * ``parse_failure_rate`` -- share of outputs that did not parse (they count as no call);
    * ``ast_accuracy`` -- BFCL's AST verdict on the held-out rows (``ast_accuracy/<task>``);
    * ``name_f1``, ``arg_f1`` (with precision and recall) -- Hammer's metrics;
    * ``robustness/<mode>/{original,renamed,drop}`` -- Hammer's robustness study
      (:mod:`hammer_core.evaluation.robustness`, ``eval.robustness``), on AST accuracy;
    * ``bfcl/<category>`` and BFCL's summaries (``bfcl/summary/non_live_ast``...) when
      ``eval.bfcl_categories`` is set (prompts in ``prepare.prompt_format``, as trained; adapter
      ``eval.bfcl_task``);
    * ``base/<metric>`` -- with ``eval.baseline``, the same held-out (and BFCL) metrics of the
      base model zero-shot, on the same prompts: what the fine-tuning bought.

    Files: ``predictions.parquet`` (id, task, target, raw output, parsed calls, verdicts),
    ``robustness.parquet`` / ``bfcl_predictions.parquet`` / ``base_predictions.parquet`` when those
    run, and ``report.md``
    with PNG plots (:mod:`hammer_core.evaluation.reports`).
"""

from __future__ import annotations

import ast
import json
import operator
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from hammer_core.evaluation import bfcl, metrics as hammer_metrics, reports, robustness
from hammer_core.artifacts import Artifact, atomic_write_json, atomic_write_text, write_table
from hammer_core.config import PipelineConfig
from hammer_core.model.trained import load_exported, load_exported_base, load_trained, load_trained_base
from hammer_core.schema import dumps

PRED_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("task", pa.string(), nullable=False),
    pa.field("target", pa.string(), nullable=False),
    pa.field("output", pa.string(), nullable=False),
    pa.field("predicted", pa.string(), nullable=True),  # canonical calls JSON; null if unparsable
    pa.field("correct", pa.bool_(), nullable=False),  # exact match
    pa.field("ast_correct", pa.bool_(), nullable=False),  # BFCL AST verdict
    pa.field("ast_rule", pa.string(), nullable=True),  # BFCL error type when wrong
], metadata={"hammer.kind": "predictions"})

ROBUSTNESS_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("parent_id", pa.string(), nullable=False),
    pa.field("mode", pa.string(), nullable=False),
    pa.field("target", pa.string(), nullable=False),
    pa.field("output", pa.string(), nullable=False),
    pa.field("predicted", pa.string(), nullable=True),
    pa.field("correct", pa.bool_(), nullable=False),
    pa.field("ast_correct", pa.bool_(), nullable=False),
    pa.field("ast_rule", pa.string(), nullable=True),
], metadata={"hammer.kind": "predictions"})

BFCL_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("category", pa.string(), nullable=False),
    pa.field("output", pa.string(), nullable=False),
    pa.field("predicted", pa.string(), nullable=True),
    pa.field("valid", pa.bool_(), nullable=False),
    pa.field("rule", pa.string(), nullable=True),
    pa.field("detail", pa.string(), nullable=True),
], metadata={"hammer.kind": "predictions"})

Call = dict[str, Any]

# ----------------------------------------------------------------------------------------------
# parsing

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


def as_bfcl(calls: Any) -> Any:
    """Calls (any form :func:`as_call` reads) -> BFCL's ``[{name: arguments}]``; malformed items
    are kept as they are, so BFCL's format check rejects them."""
    if not isinstance(calls, list):
        return calls
    return [{k["name"]: k["arguments"]} if (k := as_call(c)) is not None else c for c in calls]


# ----------------------------------------------------------------------------------------------
# exact match and the metrics of one set of records


def calls_key(calls: list[Call]) -> list[str]:
    """Order-free canonical form of a list of calls."""
    return sorted(dumps({"name": c["name"], "arguments": c["arguments"]}) for c in calls)


def score(target: list[Call], predicted: list[Call] | None) -> bool:
    return calls_key(target) == calls_key(predicted or [])


def _rate(vals: list[bool]) -> float:
    return sum(vals) / len(vals) if vals else 0.0


def compute_metrics(records: list[dict[str, Any]]) -> dict[str, float]:
    """Metrics from prediction records (``task``, ``target``, ``predicted``, ``correct`` and,
    when present, ``ast_correct``), see the module docstring."""
    n = len(records)
    rel = [r for r in records if r["target"] != "[]"]
    irr = [r for r in records if r["target"] == "[]"]
    m: dict[str, float] = {
        "eval_rows": n,
        "no_call_rows": len(irr),
        "exact_match": _rate([r["correct"] for r in records]),
        "call_accuracy": _rate([r["correct"] for r in rel]),
        "irrelevance_accuracy": _rate([r["correct"] for r in irr]),
        "parse_failure_rate": _rate([r["predicted"] is None for r in records]),
    }
    has_ast = bool(records) and all("ast_correct" in r for r in records)
    if has_ast:
        m["ast_accuracy"] = _rate([r["ast_correct"] for r in records])
    hm = hammer_metrics.score_examples(
        (json.loads(r["target"]), json.loads(r["predicted"]) if r["predicted"] is not None else None)
        for r in records)
    m.update({k: v for k, v in hm.items() if k != "irrelevance_accuracy"})
    for task, rs in sorted(_group(records, "task").items()):
        m[f"exact_match/{task}"] = _rate([r["correct"] for r in rs])
        if has_ast:
            m[f"ast_accuracy/{task}"] = _rate([r["ast_correct"] for r in rs])
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in m.items()}


def judge(row_id: str, tools: str, target: str, messages: list[dict[str, str]] | None,
          predicted: list[Call] | None) -> tuple[bool, bfcl.Verdict]:
    """(exact match, BFCL verdict) of ``predicted`` against a canonical row's target."""
    entry = bfcl.entry_from_row({"id": row_id, "tools": tools, "calls": target, "messages": messages or []})
    verdict = bfcl.check_entry(entry, as_bfcl(predicted) if predicted is not None else None)
    return score(json.loads(target), predicted), verdict


# ----------------------------------------------------------------------------------------------
# scoring predictions from any model (hammer eval score)


@dataclass
class Prediction:
    line: int
    calls: Any  # BFCL form, or None when the text did not parse
    parsed: list[Call] | None  # Hammer form, for Hammer's metrics
    parse_failed: bool


def read_predictions(path: str | Path) -> dict[str, Prediction]:
    """Prediction lines by id; a clear error names the line of any malformed or duplicate one."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"predictions file {path} does not exist")
    out: dict[str, Prediction] = {}
    loads = json.loads
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{n}: not valid JSON ({err})") from None
            if not isinstance(obj, dict) or "id" not in obj:
                raise ValueError(f"{path}:{n}: a prediction must be an object with an 'id'")
            pid = str(obj["id"])
            if pid in out:
                raise ValueError(f"{path}:{n}: duplicate prediction for id {pid!r} (first on line {out[pid].line})")
            if "calls" in obj:
                raw = obj["calls"]
                parsed = [as_call(c) for c in raw] if isinstance(raw, list) else None
                if parsed is not None and any(c is None for c in parsed):
                    parsed = None
                out[pid] = Prediction(n, as_bfcl(raw), parsed, parse_failed=parsed is None)
            elif isinstance(obj.get("text"), str):
                parsed = parse_calls(obj["text"])
                out[pid] = Prediction(n, as_bfcl(parsed) if parsed is not None else None, parsed,
                                      parse_failed=parsed is None)
            else:
                raise ValueError(f"{path}:{n}: a prediction needs 'calls' (a list of {{name, arguments}}) "
                                 "or 'text' (the raw model output)")
    return out


@dataclass
class Dataset:
    """Entries to score, with gold calls (Hammer form) for datasets that have them."""

    name: str
    entries: list[bfcl.Entry]
    targets: dict[str, list[Call]] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)  # id -> task (own data)


def load_dataset(spec: str, *, max_per_category: int | None = None) -> Dataset:
    """``bfcl:<categories>`` or a path to canonical examples (a Parquet file or a prepare folder)."""
    if spec.startswith("bfcl:"):
        entries = []
        for cat in bfcl.resolve_categories(spec[len("bfcl:"):]):
            entries.extend(bfcl.load_category(cat)[:max_per_category])
        return Dataset(spec, entries)
    path = Path(spec)
    if path.is_dir():
        path = path / "eval.parquet"
    if not path.exists():
        raise FileNotFoundError(f"dataset {spec!r} is neither bfcl:<category> nor an existing examples "
                                f"Parquet file (looked for {path})")
    rows = pq.read_table(path, columns=["id", "task", "messages", "tools", "calls"]).to_pylist()
    return Dataset(spec, [bfcl.entry_from_row(r) for r in rows],
                   targets={str(r["id"]): json.loads(r["calls"]) for r in rows},
                   groups={str(r["id"]): r["task"] for r in rows})


def _group(records: list[dict[str, Any]], key: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        out[r[key]].append(r)
    return out


def _category_table(verdicts: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    """Per group: total, correct, accuracy, parse failures, missing predictions."""
    return {g: {"total": len(vs), "correct": sum(v["valid"] for v in vs),
                "accuracy": round(_rate([v["valid"] for v in vs]), 6),
                "parse_failures": sum(v["parse_failed"] for v in vs),
                "missing": sum(v["rule"] == "missing_prediction" for v in vs)}
            for g, vs in _group(verdicts, key).items()}


def bfcl_summaries(categories: dict[str, dict[str, Any]]) -> dict[str, float]:
    """BFCL's leaderboard aggregates, for those whose categories were all scored: ``non_live_ast``
    (unweighted: simple = mean of python/java/javascript, multiple, parallel, parallel_multiple),
    ``live_ast`` (weighted by count), ``irrelevance`` (mean of the two), ``relevance``."""
    acc = {c: v["accuracy"] for c, v in categories.items()}
    out: dict[str, float] = {}
    simple = ("simple_python", "simple_java", "simple_javascript")
    non_live = ("multiple", "parallel", "parallel_multiple")
    if all(c in acc for c in simple + non_live):
        parts = [sum(acc[c] for c in simple) / 3] + [acc[c] for c in non_live]
        out["non_live_ast"] = sum(parts) / 4
    live = ("live_simple", "live_multiple", "live_parallel", "live_parallel_multiple")
    if all(c in acc for c in live):
        total = sum(categories[c]["total"] for c in live)
        out["live_ast"] = sum(acc[c] * categories[c]["total"] for c in live) / total
    if "irrelevance" in acc and "live_irrelevance" in acc:
        out["irrelevance"] = (acc["irrelevance"] + acc["live_irrelevance"]) / 2
    if "live_relevance" in acc:
        out["relevance"] = acc["live_relevance"]
    return {k: round(v, 6) for k, v in out.items()}


def score_predictions(dataset: str | Dataset, predictions: str | Path, out: str | Path | None = None, *,
                      underscore_to_dot: bool = False) -> dict[str, Any]:
    """Score a predictions file against a dataset; writes ``out`` (JSON) and ``out``.md if given."""
    data = load_dataset(dataset) if isinstance(dataset, str) else dataset
    preds = read_predictions(predictions)
    verdicts: list[dict[str, Any]] = []
    pairs = []
    for e in data.entries:
        p = preds.get(e.id)
        if p is None:
            v = bfcl.Verdict(False, "missing_prediction", "no prediction with this id")
        else:
            v = bfcl.check_entry(e, p.calls, underscore_to_dot=underscore_to_dot)
        verdicts.append({"id": e.id, "category": e.category, "group": data.groups.get(e.id, e.category),
                         "valid": v.valid, "rule": v.rule, "detail": v.detail,
                         "parse_failed": bool(p and p.parse_failed)})
        if e.id in data.targets and p is not None:  # Hammer's metrics: over the ids with a prediction
            pairs.append((data.targets[e.id], p.parsed))
    known = {e.id for e in data.entries}
    unmatched = sorted(i for i in preds if i not in known)
    categories = _category_table(verdicts, "category")
    report: dict[str, Any] = {
        "dataset": data.name,
        "predictions": str(predictions),
        "total": len(verdicts),
        "correct": sum(v["valid"] for v in verdicts),
        "accuracy": round(_rate([v["valid"] for v in verdicts]), 6),
        "missing_predictions": sum(v["rule"] == "missing_prediction" for v in verdicts),
        "parse_failures": sum(v["parse_failed"] for v in verdicts),
        "unmatched_predictions": unmatched,
        "categories": categories,
        "summary": bfcl_summaries(categories) if data.name.startswith("bfcl:") else {},
        "rules": dict(Counter(v["rule"] for v in verdicts if not v["valid"]).most_common()),
    }
    if data.groups:
        report["tasks"] = _category_table(verdicts, "group")
    if pairs:
        report["hammer"] = {"rows": len(pairs), **hammer_metrics.score_examples(pairs)}
    report["verdicts"] = [{k: v[k] for k in ("id", "category", "valid", "rule", "detail", "parse_failed")}
                          for v in verdicts]
    if out is not None:
        out = Path(out)
        atomic_write_text(out, _report_json(report))
        reports.write_score_markdown(report, out.with_suffix(".md"))
    return report


def _report_json(report: dict[str, Any]) -> str:
    """The report as JSON with one verdict per line (greppable, and fast: the C encoder per item)."""
    head = ",\n".join(f"{json.dumps(k)}: {json.dumps(v, ensure_ascii=False, sort_keys=True)}"
                      for k, v in report.items() if k != "verdicts")
    body = ",\n".join(json.dumps(v, ensure_ascii=False) for v in report["verdicts"])
    return "{\n" + head + ',\n"verdicts": [\n' + body + "\n]}\n"


# ----------------------------------------------------------------------------------------------
# generation


@dataclass
class EvalResult:
    metrics: dict[str, Any]
    predictions: Artifact
    report: Path | None = None


def generate_calls(model, tokenizer, prompts: list[list[int]], task_ids: list[int] | None,
                   max_new_tokens: int, batch_size: int, progress: bool = True) -> list[str]:
    """Batched greedy decoding (left padding, KV cache); returns the decoded new text.

    ``task_ids`` routes a CGC-LoRA model's gate per row; None for a plain (PEFT) model.
    """
    import torch
    from tqdm.auto import tqdm

    pad = tokenizer.pad_token_id
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths together
    texts: dict[int, str] = {}
    with torch.no_grad():
        for s in tqdm(range(0, len(order), batch_size), desc="eval", unit="batch", disable=not progress):
            idx = order[s: s + batch_size]
            width = max(len(prompts[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                p = torch.tensor(prompts[i], dtype=torch.long)
                ids[row, width - len(p):] = p
                mask[row, width - len(p):] = 1
            extra = {"task_ids": [task_ids[i] for i in idx]} if task_ids is not None else {}
            gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id, **extra)
            for row, i in enumerate(idx):
                texts[i] = tokenizer.decode(gen[row, width:], skip_special_tokens=True)
    return [texts[i] for i in range(len(prompts))]


class Generator:
    """Greedy generation with a train folder (CGC-LoRA, task-ID gate) or an export folder (one
    PEFT LoRA adapter per task, switched per task group)."""

    def __init__(self, model_dir: str | Path, dtype: str = "float32", zero_shot: bool = False):
        """``zero_shot``: the base model the adapters were trained on, without them (the
        baseline every task is compared with); else the trained model."""
        model_dir = Path(model_dir)
        if (model_dir / "train_summary.json").exists():
            if zero_shot:
                self.model, self.tokenizer = load_trained_base(model_dir, dtype)
                from hammer_core.model.cgc_lora.export import CGC_CONFIG_NAME
                self.tasks: list[str] = json.loads((model_dir / "adapter" / CGC_CONFIG_NAME).read_text())["tasks"]
            else:
                self.model, self.tokenizer = load_trained(model_dir, dtype)
                self.tasks = list(self.model.config.tasks)
            self.kind = "base" if zero_shot else "cgc_lora"
        elif (model_dir / "export_manifest.json").exists():
            self.model, self.tokenizer, manifest = (load_exported_base if zero_shot else load_exported)(model_dir,
                                                                                                     dtype)
            self.tasks = list(manifest["tasks"])
            self.kind = "base" if zero_shot else "peft"
        else:
            raise FileNotFoundError(f"{model_dir} is neither a train output (train_summary.json) nor an "
                                    "export output (export_manifest.json)")
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def check_tasks(self, tasks: set[str], what: str) -> None:
        unknown = sorted(tasks - set(self.tasks))
        if unknown:
            raise ValueError(f"{what} belong to tasks {unknown} that the adapter was not trained on "
                             f"(trained tasks: {self.tasks})")

    def generate(self, prompts: list[list[int]], tasks: list[str], max_new_tokens: int, batch_size: int,
                 progress: bool = True) -> list[str]:
        self.check_tasks(set(tasks), "rows")
        if self.kind == "base":
            return generate_calls(self.model, self.tokenizer, prompts, None, max_new_tokens, batch_size, progress)
        if self.kind == "cgc_lora":
            return generate_calls(self.model, self.tokenizer, prompts, [self.tasks.index(t) for t in tasks],
                                  max_new_tokens, batch_size, progress)
        texts: list[str] = [""] * len(prompts)
        for task in sorted(set(tasks)):
            idx = [i for i, t in enumerate(tasks) if t == task]
            self.model.set_adapter(task)
            for i, text in zip(idx, generate_calls(self.model, self.tokenizer, [prompts[i] for i in idx], None,
                                                   max_new_tokens, batch_size, progress)):
                texts[i] = text
        return texts

    def prompt_ids(self, messages: list[dict[str, str]], tools: list[dict[str, Any]],
                   prompt_format: str = "hammer") -> list[int]:
        """The prompt ids of a request in ``prompt_format`` (``prepare.prompt_format``: what the model
        was trained on)."""
        from hammer_core.data.tokenization import prompt_text

        text = prompt_text(self.tokenizer, messages, tools, prompt_format)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]


# ----------------------------------------------------------------------------------------------
# the eval stage


def _records(rows: list[dict[str, Any]], texts: list[str]) -> list[dict[str, Any]]:
    out = []
    for row, text in zip(rows, texts):
        pred = parse_calls(text)
        exact, verdict = judge(row["id"], row["tools"], row["calls"], row.get("messages"), pred)
        out.append({"id": row["id"], "task": row["task"], "target": row["calls"], "output": text,
                    "predicted": dumps(pred) if pred is not None else None, "correct": exact,
                    "ast_correct": verdict.valid, "ast_rule": verdict.rule or None})
    return out


def _robustness(cfg: PipelineConfig, gen: Generator, rows: list[dict[str, Any]], base: list[dict[str, Any]],
                progress: bool) -> tuple[dict[str, dict[str, float]], list[dict[str, Any]]]:
    from hammer_core.data.tokenization import tokenize_rows

    limit = cfg.eval.robustness_max_examples
    rows = rows[:limit] if limit else rows
    original = {r["id"]: r["ast_correct"] for r in base}
    results: dict[str, dict[str, bool]] = {}
    records: list[dict[str, Any]] = []
    for mode in robustness.MODES:
        renamed = robustness.renamed_rows(rows, mode, cfg.seed)
        kept, _too_long = tokenize_rows(renamed, gen.tokenizer, cfg.prepare.max_length, cfg.prepare.prompt_format)
        by_id = {r["id"]: r for r in renamed}
        todo = [by_id[k["id"]] for k in kept]
        texts = gen.generate([k["input_ids"][: k["n_prompt"]] for k in kept], [r["task"] for r in todo],
                             cfg.eval.max_new_tokens, cfg.eval.batch_size, progress)
        recs = _records(todo, texts)
        results[mode] = {row["parent_id"]: rec["ast_correct"] for row, rec in zip(todo, recs)}
        records.extend({**{k: rec[k] for k in ("id", "target", "output", "predicted", "correct", "ast_correct",
                                                  "ast_rule")}, "parent_id": row["parent_id"], "mode": mode}
                       for row, rec in zip(todo, recs))
    return robustness.accuracy_drops(original, results), records


def _bfcl(cfg: PipelineConfig, gen: Generator, progress: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    task = cfg.eval.bfcl_task or gen.tasks[0]
    gen.check_tasks({task}, "eval.bfcl_task")
    budget = cfg.prepare.max_length
    records: list[dict[str, Any]] = []
    for cat in bfcl.resolve_categories(cfg.eval.bfcl_categories):
        entries = bfcl.load_category(cat)[: cfg.eval.bfcl_max_examples]
        prompts = [gen.prompt_ids(e.messages, bfcl.prompt_functions(e), cfg.prepare.prompt_format) for e in entries]
        fits = [i for i, p in enumerate(prompts) if len(p) <= budget]
        texts = dict(zip(fits, gen.generate([prompts[i] for i in fits], [task] * len(fits),
                                            cfg.eval.max_new_tokens, cfg.eval.batch_size, progress)))
        for i, e in enumerate(entries):
            if i not in texts:
                v, text, pred = bfcl.Verdict(False, "prompt_too_long",
                                             f"{len(prompts[i])} prompt tokens > prepare.max_length {budget}"), "", None
            else:
                text = texts[i]
                pred = parse_calls(text)
                v = bfcl.check_entry(e, as_bfcl(pred) if pred is not None else None)
            records.append({"id": e.id, "category": cat, "output": text,
                            "predicted": dumps(pred) if pred is not None else None,
                            "valid": v.valid, "rule": v.rule or None, "detail": v.detail or None,
                            "parse_failed": pred is None and i in texts})
    cats = _category_table(records, "category")
    return {"task": task, "categories": cats, "summary": bfcl_summaries(cats)}, records


def evaluate(cfg: PipelineConfig, train_dir: str | Path, eval_rows: Artifact, eval_tokens: Artifact,
             out_dir: str | Path, progress: bool = True) -> EvalResult:
    """The eval stage: ``train_dir`` may also be an export folder (the 1 + N PEFT adapters)."""
    out = Path(out_dir)
    gen = Generator(train_dir, cfg.model.dtype)
    rows_by_id = {r["id"]: r for r in pq.read_table(
        eval_rows.path, columns=["id", "task", "messages", "tools", "calls"]).to_pylist()}
    toks = pq.read_table(eval_tokens.path).to_pylist()
    if cfg.eval.max_examples:
        toks = toks[: cfg.eval.max_examples]
    gen.check_tasks({t["task"] for t in toks}, "eval rows")
    rows = [rows_by_id[t["id"]] for t in toks]
    records = _held_out(cfg, gen, rows, toks, progress)
    metrics = compute_metrics(records)
    preds = write_table(pa.Table.from_pylist(records, schema=PRED_SCHEMA), out / "predictions.parquet",
                        kind="predictions", parents=[eval_rows, eval_tokens])

    study = None
    if cfg.eval.robustness and rows:
        study, rb_records = _robustness(cfg, gen, rows, records, progress)
        for mode, v in study.items():
            metrics.update({f"robustness/{mode}/{k}": v[k] for k in ("original", "renamed", "drop")})
        write_table(pa.Table.from_pylist(rb_records, schema=ROBUSTNESS_SCHEMA), out / "robustness.parquet",
                    kind="predictions", parents=[eval_rows, eval_tokens])
        atomic_write_json(out / "robustness.json", study)
    bfcl_result = None
    if cfg.eval.bfcl_categories:
        bfcl_result, bfcl_records = _bfcl(cfg, gen, progress)
        metrics.update({f"bfcl/{c}": v["accuracy"] for c, v in bfcl_result["categories"].items()})
        metrics.update({f"bfcl/summary/{k}": v for k, v in bfcl_result["summary"].items()})
        write_table(pa.Table.from_pylist(bfcl_records, schema=BFCL_SCHEMA), out / "bfcl_predictions.parquet",
                    kind="predictions")
        atomic_write_json(out / "bfcl.json", bfcl_result)

    if cfg.eval.baseline:
        del gen  # one model in memory at a time
        base = Generator(train_dir, cfg.model.dtype, zero_shot=True)
        base_records = _held_out(cfg, base, rows, toks, progress)
        metrics.update({f"{BASELINE}/{k}": v for k, v in compute_metrics(base_records).items()})
        write_table(pa.Table.from_pylist(base_records, schema=PRED_SCHEMA), out / "base_predictions.parquet",
                    kind="predictions", parents=[eval_rows, eval_tokens])
        if cfg.eval.bfcl_categories:
            base_bfcl, base_bfcl_records = _bfcl(cfg, base, progress)
            metrics.update({f"{BASELINE}/bfcl/{c}": v["accuracy"] for c, v in base_bfcl["categories"].items()})
            metrics.update({f"{BASELINE}/bfcl/summary/{k}": v for k, v in base_bfcl["summary"].items()})
            write_table(pa.Table.from_pylist(base_bfcl_records, schema=BFCL_SCHEMA),
                        out / "base_bfcl_predictions.parquet", kind="predictions")

    atomic_write_json(out / "metrics.json", metrics)
    report = reports.write_eval_report(out, metrics, robustness=study, bfcl=bfcl_result)
    return EvalResult(metrics, preds, report)


BASELINE = "base"  # metrics of the zero-shot base model are "base/<metric>" (eval.baseline)


def _held_out(cfg: PipelineConfig, gen: Generator, rows: list[dict[str, Any]], toks: list[dict[str, Any]],
              progress: bool) -> list[dict[str, Any]]:
    """Prediction records of ``gen`` on the held-out rows (prompts as prepared)."""
    texts = gen.generate([t["input_ids"][: t["n_prompt"]] for t in toks], [t["task"] for t in toks],
                         cfg.eval.max_new_tokens, cfg.eval.batch_size, progress)
    return _records(rows, texts)
