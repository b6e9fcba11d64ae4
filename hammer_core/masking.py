"""Function masking (Hammer): names become random strings so the model must read descriptions.

Per row, with probability ``p``:

* tools are de-duplicated by name and shuffled;
* every function name becomes a random string of length 5-15 over ``A-Za-z0-9_.``, unique
  within the row, and every call of that function in the target is renamed the same way;
* every parameter name becomes a random string of length 4-10 (unique within its tool),
  renamed in ``properties``, in ``required`` and in the target's arguments of that function;
* where a gold argument equals the parameter's default (a scalar, not a list, not empty), the
  default is perturbed (ints +1..4, floats +U(0,1), strings 5 random characters) and the new
  value replaces the old one in the spec's ``default``, in its description, in the target and
  in the query. Unlike Hammer's script, only whole-word occurrences are replaced (a default
  ``1`` must not turn ``2019`` into ``2059``), and booleans are left alone.

Descriptions are never masked. Each row draws from its own RNG seeded by (seed, copy, row
id), so the output depends only on the rows, the config and the seed.
"""

from __future__ import annotations

import json
import random
import re
import string
from typing import Any

from hammer_core.schema import dumps

ALPHABET = string.ascii_uppercase + string.ascii_lowercase + "_." + string.digits
VARIANT = "masked"


def _random_name(rng: random.Random, lo: int, hi: int, taken: set[str]) -> str:
    while True:
        name = "".join(rng.choices(ALPHABET, k=rng.randint(lo, hi)))
        if name not in taken:
            taken.add(name)
            return name


def _perturb(rng: random.Random, value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value + rng.randint(1, 4)
    if isinstance(value, float):
        return value + rng.random()
    return "".join(rng.choices(ALPHABET, k=5))


def _replace_word(text: str, old: str, new: str) -> str:
    """Replace whole-word ``old`` (as is, capitalized, lower, upper) by the same form of ``new``."""
    for o, n in ((old, new), (old.capitalize(), new.capitalize()), (old.lower(), new.lower()),
                 (old.upper(), new.upper())):
        if o:
            text = re.sub(rf"(?<![\w.]){re.escape(o)}(?![\w])", lambda _m, n=n: n, text)
    return text


def mask_row(row: dict[str, Any], rng: random.Random, *, copy: int = 0) -> dict[str, Any]:
    """Return the masked version of ``row`` (a canonical row dict); ``row`` is not modified."""
    tools_in = json.loads(row["tools"])
    calls = json.loads(row["calls"])
    messages = [dict(m) for m in row["messages"]]

    seen: set[str] = set()
    tools: list[dict[str, Any]] = []
    for t in tools_in:
        if t["name"] not in seen:
            seen.add(t["name"])
            tools.append(json.loads(json.dumps(t)))  # deep copy
    rng.shuffle(tools)

    fn_taken: set[str] = set()
    for tool in tools:
        old_fn = tool["name"]
        new_fn = _random_name(rng, 5, 15, fn_taken)
        tool["name"] = new_fn
        my_calls = [c for c in calls if c["name"] == old_fn]
        for c in my_calls:
            c["name"] = new_fn

        params = tool.setdefault("parameters", {"type": "object", "properties": {}})
        props = params.get("properties", {})
        p_taken: set[str] = set()
        renamed: dict[str, str] = {}
        new_props: dict[str, Any] = {}
        for old_p, spec in props.items():
            new_p = _random_name(rng, 4, 10, p_taken)
            renamed[old_p] = new_p
            new_props[new_p] = spec
            default = spec.get("default")
            if default is None or default == "" or isinstance(default, (list, dict, bool)):
                continue
            if not any(old_p in c["arguments"] and str(c["arguments"][old_p]) == str(default)
                       for c in my_calls):
                continue
            new_default = _perturb(rng, default)
            spec["default"] = new_default
            if "description" in spec:
                spec["description"] = _replace_word(spec["description"], str(default), str(new_default))
            for c in my_calls:
                if old_p in c["arguments"] and str(c["arguments"][old_p]) == str(default):
                    c["arguments"][old_p] = new_default
            for m in messages:
                if m["role"] == "user":
                    m["content"] = _replace_word(m["content"], str(default), str(new_default))
        params["properties"] = new_props
        if "required" in params:
            params["required"] = [renamed.get(p, p) for p in params["required"]]
        for c in my_calls:
            c["arguments"] = {renamed.get(k, k): v for k, v in c["arguments"].items()}

    return {
        **row,
        "id": f"{row['id']}~m{copy}",
        "messages": messages,
        "tools": dumps(tools),
        "calls": dumps(calls),
        "parent_id": row["id"],
        "variant": f"{row['variant']}+{VARIANT}",
    }


def row_rng(seed: int, copy: int, row_id: str) -> random.Random:
    return random.Random(f"{seed}:mask:{copy}:{row_id}")


def mask_rows(rows: list[dict[str, Any]], p: float, seed: int, copies: int = 1) -> list[dict[str, Any]]:
    """Hammer's mix: ``copies`` passes over ``rows``; each row masked with probability ``p``.

    Unmasked rows of the first copy keep their id; later unmasked copies get ``~c<k>``.
    """
    out = []
    for k in range(copies):
        for row in rows:
            rng = row_rng(seed, k, row["id"])
            if rng.random() < p:
                out.append(mask_row(row, rng, copy=k))
            elif k == 0:
                out.append(row)
            else:
                out.append({**row, "id": f"{row['id']}~c{k}", "parent_id": row["id"]})
    return out
