"""Hammer's robustness study: the same test set with names replaced by random strings.

A model that learned to call ``get_weather`` because the name says "weather" fails when the
name says ``xQ3_.k``; one that reads descriptions does not. At evaluation time every row of
the held-out split is rewritten three ways:

* ``function``  -- every function name becomes a random string (and every gold call of it);
* ``parameter`` -- every parameter name becomes a random string (in ``properties``,
  ``required`` and the gold calls' arguments);
* ``both``      -- both at once.

Descriptions, values, defaults and the order of tools stay as they are, so the only thing
that changes is the names. Random names come from :mod:`hammer_core.data.masking`'s generator (the
training recipe's alphabet and lengths: functions 5-15 characters, parameters 4-10; unique
within a row here), drawn from a counter-based stream keyed by (seed, mode, row id), so the
study is reproducible and independent of batch order. The accuracy drop of a mode is the
accuracy on the original rows minus the accuracy on the renamed ones, over the same rows.
"""

from __future__ import annotations

import json
from typing import Any

from hammer_core.data.masking import FN_LENGTHS, PARAM_LENGTHS, NameGenerator, mix64_scalar, rename_history, stable_key
from hammer_core.schema import dumps

MODES = ("function", "parameter", "both")


_REDRAW = 1 << 40  # counters of redraws after a name collision


class _Names:
    """Unique random names for one row: draw ``k`` of the row's stream names slot ``k``."""

    def __init__(self, seed: int, mode: str, row_id: str):
        self.key = stable_key(seed, "robustness", mode, row_id)
        self.gens = {"function": NameGenerator(seed, "robustness-function", FN_LENGTHS),
                     "parameter": NameGenerator(seed, "robustness-parameter", PARAM_LENGTHS)}
        self.slot = 0

    def take(self, kind: str, taken: set[str]) -> str:
        slot, self.slot = self.slot, self.slot + 1
        name, attempt = self.gens[kind].names([mix64_scalar(self.key, slot)])[0], 0
        while name in taken:
            name = self.gens[kind].names([mix64_scalar(self.key, _REDRAW + 4096 * slot + attempt)])[0]
            attempt += 1
        taken.add(name)
        return name


def rename_row(row: dict[str, Any], mode: str, seed: int) -> dict[str, Any]:
    """``row`` (canonical) with function and/or parameter names replaced; ``row`` is not modified."""
    if mode not in MODES:
        raise ValueError(f"unknown robustness mode {mode!r}; choose from {MODES}")
    functions, parameters = mode in ("function", "both"), mode in ("parameter", "both")
    names = _Names(seed, mode, row["id"])
    tools = json.loads(row["tools"])
    calls = json.loads(row["calls"])
    fn_taken: set[str] = set()
    renames: dict[str, tuple[str, dict[str, str]]] = {}  # old function -> (new name, {old param: new})
    for tool in tools:
        old = tool["name"]
        mine = [c for c in calls if c["name"] == old]
        if functions:
            tool["name"] = names.take("function", fn_taken)
            for c in mine:
                c["name"] = tool["name"]
        renamed: dict[str, str] = {}
        params = tool.get("parameters")
        if parameters and isinstance(params, dict) and params.get("properties"):
            p_taken: set[str] = set()
            renamed = {p: names.take("parameter", p_taken) for p in params["properties"]}
            params["properties"] = {renamed[p]: spec for p, spec in params["properties"].items()}
            if "required" in params:
                params["required"] = [renamed.get(p, p) for p in params["required"]]
            for c in mine:
                c["arguments"] = {renamed.get(k, k): v for k, v in c["arguments"].items()}
        renames[old] = (tool["name"], renamed)
    out = {**row, "id": f"{row['id']}~rb-{mode}", "tools": dumps(tools), "calls": dumps(calls),
           "parent_id": row["id"], "variant": f"{row.get('variant', 'original')}+renamed-{mode}"}
    history = rename_history(row["messages"], renames) if len(row.get("messages") or ()) > 1 else None
    if history is not None:  # a conversation: its earlier call turns use the new names too
        out["messages"] = history
    return out


def renamed_rows(rows: list[dict[str, Any]], mode: str, seed: int) -> list[dict[str, Any]]:
    """Every row of ``rows`` renamed for ``mode``."""
    return [rename_row(r, mode, seed) for r in rows]


def accuracy_drops(original: dict[str, bool], renamed: dict[str, dict[str, bool]]) -> dict[str, dict[str, float]]:
    """Per mode: accuracy on the original rows, on the renamed ones (same parent ids), the drop.

    ``original`` maps row id -> correct; ``renamed[mode]`` maps parent row id -> correct.
    """
    out = {}
    for mode, results in renamed.items():
        ids = [i for i in results if i in original]
        n = len(ids)
        base = sum(original[i] for i in ids) / n if n else 0.0
        acc = sum(results[i] for i in ids) / n if n else 0.0
        out[mode] = {"rows": n, "original": round(base, 6), "renamed": round(acc, 6),
                     "drop": round(base - acc, 6)}
    return out
