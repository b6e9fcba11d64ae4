"""Synthetic xLAM-shaped corpora of any size, for benchmarks and scale tests (``hammer synth``).

Each row is a valid xLAM-function-calling-60k record ``{"id", "query", "tools", "answers"}``
(``tools`` and ``answers`` as JSON *strings*, flat parameter dicts with Python-ish types),
shaped like the reference benchmark's corpus: 1-5 tools of 1-5 parameters each, about 2.2 KB a
row as a JSON line. Parameters mix the xLAM types (``str``, ``int``, ``float``, ``bool``,
``List[str]``, ``List[int]``, ``Dict[str, Any]``), about a third are optional
(``"<type>, optional"``), most optional ones with a ``default``. Each row calls one of its
tools (two in about 15% of rows) with every required argument, some optional ones, and values
that fit the declared types, and the query names the values; so every row passes
:func:`hammer_core.data.validation.validate_example`, and ingesting a synthetic corpus keeps every
row (ids are unique, and the random values make exact duplicates vanishingly rare).

Functions come from a fixed pool of :data:`POOL_SIZE` generated per seed (real corpora reuse
functions too: xLAM has about 3.7k distinct APIs), serialized once; a row draws its tools from
the pool. Generation is one seeded :class:`random.Random` stream in row order, so the same
seed gives the same bytes, and the first N rows of a larger corpus are the N-row corpus.

Output is streamed: JSON lines (``.jsonl``, or ``.jsonl.gz``) or Parquet (string columns
``id``/``query``/``tools``/``answers`` with an int64 ``id``, in row groups of
:data:`PARQUET_BATCH` rows), written to a temp file and renamed into place.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

POOL_SIZE = 2_000
PARQUET_BATCH = 16_384
PARALLEL_SHARE = 0.15
OPTIONAL_SHARE = 0.35
OPTIONAL_ARG_SHARE = 0.4

SynthFormat = Literal["jsonl", "parquet"]

_VERBS = ("get", "fetch", "search", "list", "calculate", "find", "create", "update", "convert",
          "estimate", "lookup", "validate", "schedule", "summarize", "translate", "compare")
_NOUNS = ("weather", "stock_quote", "flight", "hotel", "recipe", "exchange_rate", "invoice",
          "playlist", "route", "article", "order", "loan_payment", "movie", "event", "user",
          "product", "review", "timezone", "holiday", "vaccine", "restaurant", "parcel",
          "carbon_footprint", "sports_score", "crypto_price", "air_quality", "tax", "bmi")
_WORDS = ("the", "given", "a", "for", "with", "of", "returns", "details", "current", "data",
          "value", "optional", "specified", "list", "items", "result", "based", "on", "user",
          "request", "service", "record", "format", "number", "default", "when", "provided",
          "filter", "to", "apply", "in", "and", "by", "from", "match", "each", "unique", "page")
_PARAM_NAMES = ("city", "symbol", "date", "limit", "query", "country", "currency", "amount",
                "start_date", "end_date", "category", "page", "lang", "units", "radius", "id",
                "email", "sort_by", "include_details", "max_results", "tags", "region", "year",
                "month", "ratio", "threshold", "keywords", "scores", "options", "verbose")
_VALUES = ("Paris", "Tokyo", "AAPL", "2024-05-01", "electronics", "EUR", "metric", "berlin",
           "jazz", "New York", "sushi", "alice@example.com", "price", "Lisbon", "Nairobi",
           "quarterly", "TSLA", "2023-12-31", "Oslo", "vegan", "São Paulo", "Zürich")


@dataclass(frozen=True)
class _Param:
    name: str
    type: str  # the xLAM type string, e.g. "int, optional"
    kind: str  # str | int | float | bool | List[str] | List[int] | Dict[str, Any]
    spec: dict[str, Any]

    @property
    def required(self) -> bool:
        return "default" not in self.spec and not self.type.endswith(", optional")


@dataclass(frozen=True)
class _Function:
    name: str
    params: tuple[_Param, ...]
    json: str  # the tool, serialized once


def _value(rng: random.Random, kind: str) -> Any:
    if kind == "str":
        return rng.choice(_VALUES)
    if kind == "int":
        return rng.randint(1, 500)
    if kind == "float":
        return round(rng.uniform(0, 1000), 2)
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "List[str]":
        return rng.sample(_VALUES, rng.randint(1, 3))
    if kind == "List[int]":
        return [rng.randint(1, 99) for _ in range(rng.randint(1, 4))]
    return {"key": rng.choice(_VALUES), "n": rng.randint(1, 9)}


_KINDS: tuple[tuple[str, float], ...] = (("str", 0.4), ("int", 0.2), ("float", 0.12),
                                         ("bool", 0.1), ("List[str]", 0.08),
                                         ("List[int]", 0.06), ("Dict[str, Any]", 0.04))


def _sentence(rng: random.Random, low: int, high: int) -> str:
    words = rng.choices(_WORDS, k=rng.randint(low, high))
    return " ".join(words).capitalize() + "."


def _make_param(rng: random.Random, name: str) -> _Param:
    kind = rng.choices([k for k, _ in _KINDS], [w for _, w in _KINDS])[0]
    optional = rng.random() < OPTIONAL_SHARE
    spec: dict[str, Any] = {"description": _sentence(rng, 8, 20),
                            "type": f"{kind}, optional" if optional else kind}
    if optional and kind in ("str", "int", "float", "bool") and rng.random() < 0.7:
        spec["default"] = _value(rng, kind)
        spec["description"] = spec["description"][:-1] + f", default is {spec['default']}."
    return _Param(name=name, type=spec["type"], kind=kind, spec=spec)


def _make_function(rng: random.Random, number: int) -> _Function:
    name = f"{rng.choice(_VERBS)}_{rng.choice(_NOUNS)}_{number}"
    names = rng.sample(_PARAM_NAMES, rng.randint(1, 5))
    params = tuple(_make_param(rng, n) for n in names)
    tool = {"name": name, "description": _sentence(rng, 12, 28),
            "parameters": {p.name: p.spec for p in params}}
    return _Function(name=name, params=params, json=json.dumps(tool, ensure_ascii=False))


def _pool(seed: int) -> list[_Function]:
    rng = random.Random(f"hammer-synth-pool-{seed}")
    return [_make_function(rng, i) for i in range(POOL_SIZE)]


def _call(rng: random.Random, fn: _Function) -> dict[str, Any]:
    args = {p.name: _value(rng, p.kind) for p in fn.params
            if p.required or rng.random() < OPTIONAL_ARG_SHARE}
    return {"name": fn.name, "arguments": args}


def _query(rng: random.Random, calls: list[dict[str, Any]]) -> str:
    parts = []
    for call in calls:
        values = ", ".join(f"{k} {json.dumps(v, ensure_ascii=False)}"
                           for k, v in call["arguments"].items())
        verb = call["name"].split("_", 1)[0]
        parts.append(f"Please {verb} {call['name'].split('_', 1)[1].rsplit('_', 1)[0]}"
                     + (f" with {values}" if values else ""))
    return " Then ".join(parts) + f". {_sentence(rng, 4, 12)}"


def synth_rows(rows: int, seed: int = 0, *, start_id: int = 1) -> Iterator[dict[str, Any]]:
    """Yield ``rows`` xLAM records (``tools``/``answers`` as JSON strings), deterministically."""
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    pool = _pool(seed)
    rng = random.Random(f"hammer-synth-rows-{seed}")
    for i in range(rows):
        tools = rng.sample(pool, rng.randint(1, 5))
        n_calls = 2 if len(tools) > 1 and rng.random() < PARALLEL_SHARE else 1
        calls = [_call(rng, fn) for fn in rng.sample(tools, n_calls)]
        yield {"id": start_id + i, "query": _query(rng, calls),
               "tools": "[" + ", ".join(fn.json for fn in tools) + "]",
               "answers": json.dumps(calls, ensure_ascii=False)}


def _batches(rows: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


_PARQUET_SCHEMA = pa.schema([("id", pa.int64()), ("query", pa.string()), ("tools", pa.string()),
                             ("answers", pa.string())])


def _write_jsonl(tmp: Path, rows: Iterator[dict[str, Any]], gzipped: bool) -> None:
    opener: Callable[..., Any] = (lambda p: gzip.GzipFile(p, "wb", mtime=0)) if gzipped else \
        (lambda p: open(p, "wb"))
    with opener(tmp) as f:
        for batch in _batches(rows, 1024):
            f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in batch)
                    .encode("utf-8"))


def _write_parquet(tmp: Path, rows: Iterator[dict[str, Any]]) -> None:
    with pq.ParquetWriter(tmp, _PARQUET_SCHEMA, compression="zstd") as writer:
        for batch in _batches(rows, PARQUET_BATCH):
            writer.write_table(pa.Table.from_pylist(batch, schema=_PARQUET_SCHEMA))


def format_for(path: str | os.PathLike[str]) -> SynthFormat:
    """The output format a file name implies: ``parquet`` for ``.parquet``, else ``jsonl``."""
    return "parquet" if os.fspath(path).lower().endswith(".parquet") else "jsonl"


def write_synth(path: str | os.PathLike[str], rows: int, seed: int = 0,
                fmt: SynthFormat | None = None) -> dict[str, Any]:
    """Write a synthetic corpus of ``rows`` rows to ``path`` (format from ``fmt`` or the file
    name; ``.jsonl.gz`` is gzipped JSON lines), atomically. Returns ``{"path", "rows", "seed",
    "format", "bytes"}``."""
    path = Path(path)
    fmt = fmt or format_for(path)
    if fmt not in ("jsonl", "parquet"):
        raise ValueError(f"unknown synth format {fmt!r}; use 'jsonl' or 'parquet'")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        stream = synth_rows(rows, seed)
        if fmt == "parquet":
            _write_parquet(tmp, stream)
        else:
            _write_jsonl(tmp, stream, gzipped=path.name.lower().endswith(".gz"))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {"path": str(path), "rows": rows, "seed": seed, "format": fmt,
            "bytes": path.stat().st_size}


__all__ = ["POOL_SIZE", "format_for", "synth_rows", "write_synth"]
