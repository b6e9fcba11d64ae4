"""Corpora shaped like the real ones, for the prepare benchmark (written in their own formats and
read through ``hammer ingest``, as a user's corpus would be).

Three shapes, each a seeded generator of raw rows:

* ``xlam``: xLAM-function-calling-60k's shape. A pool of a few thousand APIs reused across rows
  (1-5 tools a row, 1-3 calls), long descriptions, typed parameters (``str``, ``int``,
  ``float``, ``bool``, ``List[str]``, ``", optional"``) with defaults that the gold arguments
  often equal.
* ``glaive``: Glaive-function-calling-v2's shape. Every row has its own 1-5 tools (tools
  rarely repeat, as in Glaive, ToolACE or BFCL), multi-turn conversations with function
  responses and text answers, JSON-schema parameters with typed defaults.
* ``long``: long tool lists (5-13 short tools a row from a large pool, most used once), rows near
  or over the 2,048-token budget.

The words come from the Python standard library's docstrings (fixed for a Python version), so
the text tokenizes like English rather than like random letters.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SHAPES = ("xlam", "glaive", "long")


def _vocabulary() -> list[str]:
    import argparse
    import collections
    import email
    import json as json_mod
    import logging
    import subprocess
    import typing
    import unittest
    docs = " ".join(str(getattr(m, "__doc__", "") or "") for m in
                    (argparse, collections, email, json_mod, logging, subprocess, typing, unittest, re))
    docs += " ".join(str(f.__doc__ or "") for m in (collections, logging, subprocess, json_mod)
                     for f in vars(m).values() if callable(f))
    words = sorted({w.lower() for w in re.findall(r"[A-Za-z]{3,12}", docs)})
    return words


class _Words:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.vocab = _vocabulary()

    def phrase(self, lo: int, hi: int) -> str:
        return " ".join(self.rng.choices(self.vocab, k=self.rng.randint(lo, hi)))

    def sentence(self, lo: int, hi: int) -> str:
        text = self.phrase(lo, hi)
        return text[:1].upper() + text[1:] + "."

    def ident(self, parts: int) -> str:
        return "_".join(self.rng.choices(self.vocab, k=parts))


_XLAM_TYPES = ("str", "int", "float", "bool", "List[str]", "str, optional", "int, optional")


def _value(rng: random.Random, words: _Words, typ: str) -> Any:
    base = typ.removesuffix(", optional")
    if base == "int":
        return rng.randint(1, 500)
    if base == "float":
        return round(rng.uniform(0, 100), 2)
    if base == "bool":
        return rng.random() < 0.5
    if base == "List[str]":
        return [words.phrase(1, 1) for _ in range(rng.randint(1, 3))]
    return words.phrase(1, 3)


def _xlam_api(rng: random.Random, words: _Words, long_desc: bool, max_params: int = 6) -> dict[str, Any]:
    params = {}
    for _ in range(rng.randint(1, max_params)):
        typ = rng.choice(_XLAM_TYPES)
        spec: dict[str, Any] = {"description": words.sentence(4, 16), "type": typ}
        if rng.random() < 0.45 and typ != "List[str]":
            spec["default"] = _value(rng, words, typ)
        params[words.ident(rng.randint(1, 2))] = spec
    desc = " ".join(words.sentence(6, 18) for _ in range(rng.randint(2, 5))) if long_desc else words.sentence(4, 10)
    return {"name": words.ident(rng.randint(2, 3)), "description": desc, "parameters": params}


def _xlam_row(rng: random.Random, words: _Words, i: int, tools: list[dict[str, Any]]) -> dict[str, Any]:
    used = rng.sample(tools, k=min(len(tools), rng.randint(1, 3)))
    answers, mentions = [], []
    for t in used:
        args = {}
        for p, spec in t["parameters"].items():
            optional = spec["type"].endswith("optional") or "default" in spec
            if optional and rng.random() < 0.5:
                continue
            if "default" in spec and rng.random() < 0.5:
                args[p] = spec["default"]  # the gold argument equals the default
            else:
                args[p] = _value(rng, words, spec["type"])
            mentions.append(json.dumps(args[p]) if not isinstance(args[p], str) else args[p])
        answers.append({"name": t["name"], "arguments": args})
    query = f"{words.sentence(5, 14)} {' and '.join(mentions[:6])} {words.phrase(2, 8)}?"
    return {"id": i, "query": query, "tools": json.dumps(tools), "answers": json.dumps(answers)}


def xlam_rows(n: int, seed: int = 0, pool: int = 3600) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    words = _Words(rng)
    apis = [_xlam_api(rng, words, long_desc=True) for _ in range(pool)]
    seen: set[str] = set()
    apis = [a for a in apis if not (a["name"] in seen or seen.add(a["name"]))]  # type: ignore[func-returns-value]
    for i in range(n):
        yield _xlam_row(rng, words, i, rng.sample(apis, k=rng.randint(1, 5)))


def long_rows(n: int, seed: int = 0, pool: int = 200_000) -> Iterator[dict[str, Any]]:
    """xLAM rows of 5-13 short tools each, drawn lazily from a pool so large most are used once."""
    rng = random.Random(seed)
    words = _Words(rng)
    made: dict[int, dict[str, Any]] = {}
    for i in range(n):
        tools, names = [], set()
        for k in rng.sample(range(pool), k=rng.randint(5, 13)):
            if k not in made:
                made[k] = _xlam_api(random.Random(seed * 1_000_003 + k), words, long_desc=False, max_params=2)
                made[k]["name"] += f"_{k}"
            if made[k]["name"] not in names:
                names.add(made[k]["name"])
                tools.append(made[k])
        yield _xlam_row(rng, words, i, tools)


_SCHEMA_TYPES = ("string", "integer", "number", "boolean", "array")


def _glaive_tool(rng: random.Random, words: _Words) -> dict[str, Any]:
    props, required = {}, []
    for _ in range(rng.randint(1, 5)):
        typ = rng.choice(_SCHEMA_TYPES)
        name = words.ident(rng.randint(1, 2))
        spec: dict[str, Any] = {"type": typ, "description": words.sentence(3, 12)}
        if typ == "array":
            spec["items"] = {"type": "string"}
        elif rng.random() < 0.3:
            spec["default"] = {"string": words.phrase(1, 2), "integer": rng.randint(0, 100),
                               "number": round(rng.uniform(0, 10), 1), "boolean": False}[typ]
        elif rng.random() < 0.6:
            required.append(name)
        props[name] = spec
    return {"name": words.ident(rng.randint(2, 3)), "description": words.sentence(6, 20),
            "parameters": {"type": "object", "properties": props, "required": required}}


def _glaive_args(rng: random.Random, words: _Words, tool: dict[str, Any]) -> dict[str, Any]:
    args = {}
    for p, spec in tool["parameters"]["properties"].items():
        if p not in tool["parameters"]["required"] and rng.random() < 0.5:
            continue
        typ = spec["type"]
        if "default" in spec and rng.random() < 0.5:
            args[p] = spec["default"]
        elif typ == "array":
            args[p] = [words.phrase(1, 1) for _ in range(rng.randint(1, 3))]
        else:
            args[p] = {"string": words.phrase(1, 3), "integer": rng.randint(0, 1000),
                       "number": round(rng.uniform(0, 100), 2), "boolean": rng.random() < 0.5}[typ]
    return args


def glaive_rows(n: int, seed: int = 0) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    words = _Words(rng)
    for i in range(n):
        tools, names = [], set()
        for _ in range(rng.randint(1, 5)):
            t = _glaive_tool(rng, words)
            t["name"] += f"_{i}"  # tools do not repeat across rows
            if t["name"] not in names:
                names.add(t["name"])
                tools.append(t)
        system = ("SYSTEM: You are a helpful assistant with access to the following functions. "
                  "Use them if required -\n" + "\n\n".join(json.dumps(t, indent=4) for t in tools) + "\n")
        turns = []
        for _ in range(rng.randint(1, 3)):
            turns.append(f"USER: {words.sentence(6, 25)}")
            if rng.random() < 0.75:
                t = rng.choice(tools)
                args = json.dumps(_glaive_args(rng, words, t))
                turns.append(f"ASSISTANT: <functioncall> {{\"name\": \"{t['name']}\", \"arguments\": "
                             f"'{args}'}} <|endoftext|>")
                turns.append(f"FUNCTION RESPONSE: {json.dumps({'result': words.phrase(3, 12)})}")
            turns.append(f"ASSISTANT: {words.sentence(8, 30)} <|endoftext|>")
        yield {"system": system, "chat": "\n\n\n".join(turns) + "\n\n\n"}


def write_corpus(shape: str, rows: int, path: Path, seed: int = 0) -> Path:
    """Write ``rows`` raw rows of ``shape`` to ``path`` (JSONL), atomically."""
    gen = {"xlam": xlam_rows, "glaive": glaive_rows, "long": long_rows}[shape]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as f:
        for row in gen(rows, seed=seed):
            f.write(json.dumps(row) + "\n")
    tmp.replace(path)
    return path
