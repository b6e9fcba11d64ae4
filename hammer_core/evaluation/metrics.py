"""Hammer's metrics: function-name F1, argument F1 (both micro-averaged) and irrelevance accuracy.

These are the numbers the Hammer paper reports on API-Bank, Tool-Alpaca, Seal-Tools and Nexus
Raven ("F1 Func-Name / F1 Args"), computed as Hammer's public ``evaluation/evaluate.py`` does,
so that a score here can be set beside a published one:

* every gold call counts once toward name recall, every predicted call once toward name
  precision; a predicted call is a name hit when some gold call of that example has its name
  (each predicted call is judged on its own, so calling the right function twice counts twice);
* arguments with the value ``""`` are ignored; values are compared as ``str(value)``; for a
  name hit, the argument hits are those of the first gold call with that name that shares
  at least one argument with it; two argument-less calls of the same name count one argument
  hit (Hammer's convention for ``{}`` == ``{}``);
* output that does not parse counts as one wrong predicted call; ``[]`` is no prediction;
* F1 is 0 where a count it divides by is 0.

``irrelevance_accuracy`` is the share of "no call" examples (gold ``[]``) where the model made
no call; unparsable output counts as no call, as in BFCL.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Iterable

Call = dict[str, Any]  # {"name": str, "arguments": {...}}


@dataclass
class HammerCounts:
    gold_calls: int = 0
    pred_calls: int = 0
    name_hits: int = 0
    gold_args: int = 0
    pred_args: int = 0
    arg_hits: int = 0
    no_call_rows: int = 0
    no_call_hits: int = 0

    def __iadd__(self, other: "HammerCounts") -> "HammerCounts":
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self


def _set_args(args: Any) -> dict[str, str]:
    return {k: str(v) for k, v in args.items() if v != ""}


def _arg_hits(gold: dict[str, Any], pred: Any) -> int:
    """Hammer's ``get_p_r_exact``: argument values of ``gold`` that ``pred`` repeats."""
    if not gold and gold == pred:
        return 1
    if not isinstance(pred, dict):
        return 0
    g, p = _set_args(gold), _set_args(pred)
    if not gold and g == p:
        return 1
    return sum(1 for k, v in g.items() if k in p and p[k] == v)


def count_example(target: list[Call], predicted: list[Call] | None) -> HammerCounts:
    """Counts for one example (``predicted`` None: the output did not parse)."""
    c = HammerCounts(gold_calls=len(target),
                     gold_args=sum(len(_set_args(call.get("arguments") or {})) for call in target))
    if not target:
        c.no_call_rows = 1
        c.no_call_hits = int(not predicted)
    if predicted is None:
        c.pred_calls = 1
        return c
    gold_names = [call["name"] for call in target]
    for call in predicted:
        c.pred_calls += 1
        args = call.get("arguments") or {}
        if isinstance(args, dict):
            c.pred_args += len(_set_args(args))
        if call.get("name") not in gold_names:
            continue
        c.name_hits += 1
        for gold in target:
            if gold["name"] == call["name"]:
                hits = _arg_hits(gold.get("arguments") or {}, args)
                if hits > 0:
                    c.arg_hits += hits
                    break
    return c


def _prf(hits: int, predicted: int, gold: int) -> tuple[float, float, float]:
    if hits == 0 or predicted == 0 or gold == 0:
        return 0.0, 0.0, 0.0
    p, r = hits / predicted, hits / gold
    return p, r, 2 * p * r / (p + r)


def hammer_metrics(counts: HammerCounts) -> dict[str, float]:
    """Micro precision/recall/F1 of names and arguments, and irrelevance accuracy."""
    np_, nr, nf = _prf(counts.name_hits, counts.pred_calls, counts.gold_calls)
    ap, ar, af = _prf(counts.arg_hits, counts.pred_args, counts.gold_args)
    out = {"name_precision": np_, "name_recall": nr, "name_f1": nf,
           "arg_precision": ap, "arg_recall": ar, "arg_f1": af}
    if counts.no_call_rows:
        out["irrelevance_accuracy"] = counts.no_call_hits / counts.no_call_rows
    return {k: round(v, 6) for k, v in out.items()}


def score_examples(pairs: Iterable[tuple[list[Call], list[Call] | None]]) -> dict[str, float]:
    """Hammer's metrics over (target calls, predicted calls or None) pairs."""
    total = HammerCounts()
    for target, predicted in pairs:
        total += count_example(target, predicted)
    return hammer_metrics(total)
