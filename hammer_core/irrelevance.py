"""Irrelevance augmentation (Hammer): rows whose right function was removed, labelled "no call".

From a sampled row with calls, every ground-truth function is removed from the candidate
tools and the target becomes ``[]``; the other candidates stay as distractors. A row is not
eligible when nothing would remain, or when a remaining candidate could still serve the
query (same name after normalization as a removed one, or the same description and
parameter set), because then "no call" would be a wrong label.

The number of synthesized rows is chosen so that "no call" rows make up ``ratio`` of the
final mix (Hammer found about 10% the best balance). Selection is deterministic: rows are
ranked by a hash of (seed, row id), so the result depends only on the rows and the seed,
never on batch size, order of processing or worker count.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from hammer_core.schema import dumps

VARIANT = "irrelevance"


def _norm_name(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _signature(tool: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    props = tool.get("parameters", {}).get("properties", {})
    return (tool.get("description", "").strip().lower(), tuple(sorted(props)))


def strip_gold_tools(row: dict[str, Any]) -> dict[str, Any] | None:
    """The irrelevance version of ``row``, or None if the row is not eligible."""
    calls = json.loads(row["calls"])
    if not calls:
        return None
    tools = json.loads(row["tools"])
    gold = {c["name"] for c in calls}
    removed = [t for t in tools if t["name"] in gold]
    kept = [t for t in tools if t["name"] not in gold]
    if not kept:
        return None
    removed_names = {_norm_name(t["name"]) for t in removed}
    removed_sigs = {_signature(t) for t in removed}
    if any(_norm_name(t["name"]) in removed_names or _signature(t) in removed_sigs for t in kept):
        return None
    return {
        **row,
        "id": f"{row['id']}~irr",
        "tools": dumps(kept),
        "calls": "[]",
        "parent_id": row["id"],
        "variant": VARIANT,
    }


def _rank(seed: int, row_id: str) -> bytes:
    return hashlib.sha256(f"{seed}:irrelevance:{row_id}".encode()).digest()


def count_for_ratio(n_rows: int, n_no_call: int, ratio: float) -> int:
    """How many rows to add so that no-call rows are ``ratio`` of ``n_rows + added``."""
    if ratio <= 0:
        return 0
    need = (ratio * n_rows - n_no_call) / (1.0 - ratio)
    return max(0, round(need))


def synthesize_irrelevance(rows: list[dict[str, Any]], ratio: float, seed: int) -> list[dict[str, Any]]:
    """New "no call" rows (to be added to ``rows``) so that they are ``ratio`` of the mix.

    Returns fewer rows than asked if not enough rows are eligible.
    """
    n_no_call = sum(1 for r in rows if r["calls"] == "[]")
    want = count_for_ratio(len(rows), n_no_call, ratio)
    if want == 0:
        return []
    out = []
    for row in sorted(rows, key=lambda r: _rank(seed, r["id"])):
        synth = strip_gold_tools(row)
        if synth is not None:
            out.append(synth)
            if len(out) == want:
                break
    return out
