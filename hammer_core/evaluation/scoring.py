"""Scoring calls: exact match, the held-out metrics, BFCL verdicts, and scoring a predictions file.

Scoring predictions (:func:`score_predictions`, ``hammer eval score``)
    Predictions from any model or server, one JSON line each, ``{"id", "calls": [{"name",
    "arguments"}]}`` or ``{"id", "text": "<raw output>"}`` (read by :func:`parse_calls`), against BFCL categories
    (``bfcl:simple_python,multiple``, ``bfcl:live``, ``bfcl:all``) or a held-out split of the
    user's own corpora (a canonical examples Parquet, or a prepare folder's ``eval.parquet``).
    Verdicts follow BFCL's AST checker (:mod:`hammer_core.evaluation.bfcl`); own data also gets Hammer's
    F1s (:mod:`hammer_core.evaluation.metrics`). The report holds a verdict per id with the failing rule,
    accuracy per category and BFCL's summary scores; an id without a prediction is wrong
    (``missing_prediction``), as it would be on the leaderboard.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from hammer_core.artifacts import atomic_write_text
from hammer_core.evaluation import bfcl, metrics as hammer_metrics, reports
from hammer_core.evaluation.parsing import Call, as_call, parse_calls
from hammer_core.schema import dumps


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


def calls_match(target: list[Call], predicted: list[Call] | None) -> bool:
    """Do the predicted calls equal the target's (names and arguments; order-free)? None is no call."""
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
    return calls_match(json.loads(target), predicted), verdict


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


def category_table(verdicts: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
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
    categories = category_table(verdicts, "category")
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
        report["tasks"] = category_table(verdicts, "group")
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


__all__ = ["Dataset", "Prediction", "as_bfcl", "bfcl_summaries", "calls_key", "calls_match", "category_table",
           "compute_metrics", "judge", "load_dataset", "read_predictions", "score_predictions"]
