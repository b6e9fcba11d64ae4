"""Ingest: raw corpus files → ``examples.parquet`` + ``rejects.parquet`` + ``summary.json``.

Readers (:func:`read_records`) turn a file into ``(location, record)`` pairs, where a record is
a dict or, for input that cannot even be parsed (a bad JSON line), a
:class:`~hammer_core.formats.RowError`. Each record then goes through its format's normalizer
(:mod:`hammer_core.formats`), which validates it (:mod:`hammer_core.validation`). Nothing a row
contains can stop the run: every unusable row lands in the rejects artifact with its
location, reason code, detail and raw text, so ``read == kept + rejected`` always.

A source (:class:`SourceSpec`) is one file, a folder (its files with a supported extension,
not recursive) or a glob (``data/*.jsonl.gz``); its files are read in sorted path order.

Supported inputs: ``.jsonl`` / ``.ndjson`` (one object per line; blank lines are skipped and
not counted), ``.json`` (a JSON array; a file that is not an array is read as a single object
or, failing that, as JSON lines, which is how BFCL ships its ``.json`` files), ``.parquet``,
and gzip variants ``.jsonl.gz`` / ``.ndjson.gz`` / ``.json.gz``. Locations are
``"<path>:<line>"`` (1-based) for line-based input and ``"<path>#<index>"`` (0-based) otherwise.
Whole-file problems (missing file, unknown extension, a corrupt JSON array, a file in no
known format) are configuration errors and raise.

Output order is input order (sources in the given order, rows in file order), and the writes
are deterministic, so the same inputs give byte-identical artifacts. Rows are held in memory
for now; :func:`iter_source` yields one outcome at a time so batching is a local change.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from hammer_core.artifacts import Artifact, atomic_write_json, sha256_file, write_table
from hammer_core.formats import FORMATS, Format, RowError, detect_format, get_format
from hammer_core.schema import REJECT_SCHEMA, examples_table

#: The most bytes of a rejected row's raw text kept in ``rejects.parquet``.
RAW_LIMIT_BYTES = 10_000
_TRUNCATION_MARK = "…[truncated]"

#: How many records ``format="auto"`` looks at to recognize a source's format.
DETECT_SCAN_LIMIT = 1_000

_SUFFIXES: dict[str, tuple[str, bool]] = {  # suffix -> (kind, gzipped); longest first
    ".jsonl.gz": ("jsonl", True),
    ".ndjson.gz": ("jsonl", True),
    ".json.gz": ("json", True),
    ".jsonl": ("jsonl", False),
    ".ndjson": ("jsonl", False),
    ".json": ("json", False),
    ".parquet": ("parquet", False),
}

Record = dict[str, Any] | RowError


# --------------------------------------------------------------------------- readers


def _known_suffix(path: Path) -> str | None:
    name = path.name.lower()
    return next((suffix for suffix in _SUFFIXES if name.endswith(suffix)), None)


def _suffix(path: Path) -> str:
    suffix = _known_suffix(path)
    if suffix is None:
        raise ValueError(f"{path}: unknown input extension; supported: {', '.join(_SUFFIXES)}")
    return suffix


def _is_glob(path: str) -> bool:
    return not os.path.exists(path) and glob.has_magic(path)


def expand_source_path(path: str | os.PathLike[str]) -> list[Path]:
    """The input files of a source path: the file itself; a folder's files with a supported
    extension (not recursive); or a glob's matches (``**`` recursive). Sorted; never empty."""
    text = os.fspath(path)
    if _is_glob(text):
        files = sorted(Path(m) for m in glob.glob(text, recursive=True) if os.path.isfile(m))
        if not files:
            raise FileNotFoundError(f"no input files match {text!r}")
        return files
    p = Path(text)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and _known_suffix(f))
        if not files:
            raise FileNotFoundError(f"folder {p} holds no input files ({', '.join(_SUFFIXES)})")
        return files
    return [p]


def _open_binary(path: Path, gzipped: bool) -> IO[bytes]:
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def _not_an_object(value: Any, where: str) -> RowError:
    return RowError("bad_json", f"{where} is valid JSON but a {type(value).__name__}, "
                                "not an object", raw=json.dumps(value, ensure_ascii=False))


def _read_json_lines(lines: Iterator[bytes], where: str) -> Iterator[tuple[str, Record]]:
    for lineno, raw_line in enumerate(lines, start=1):
        if lineno == 1:
            raw_line = raw_line.removeprefix(b"\xef\xbb\xbf")  # UTF-8 byte order mark
        location = f"{where}:{lineno}"
        try:
            text = raw_line.decode("utf-8")
        except UnicodeDecodeError as e:
            yield location, RowError("bad_json", f"line {lineno} is not valid UTF-8: {e}",
                                     raw=raw_line.decode("utf-8", "replace"))
            continue
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            yield location, RowError("bad_json", f"line {lineno} is not valid JSON: {e}",
                                     raw=text.rstrip("\r\n"))
            continue
        yield location, value if isinstance(value, dict) else _not_an_object(value,
                                                                             f"line {lineno}")


def _read_json_file(path: Path, gzipped: bool, where: str) -> Iterator[tuple[str, Record]]:
    with _open_binary(path, gzipped) as f:
        data = f.read()
    text = data.decode("utf-8-sig")
    if text.lstrip().startswith("["):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where} is not a valid JSON array: {e}") from None
        for i, value in enumerate(values):
            yield f"{where}#{i}", value if isinstance(value, dict) else _not_an_object(
                value, f"element {i}")
        return
    try:  # a single object, pretty-printed or not
        value = json.loads(text)
    except json.JSONDecodeError:
        yield from _read_json_lines(iter(data.splitlines(keepends=True)), where)
        return
    yield f"{where}#0", value if isinstance(value, dict) else _not_an_object(value, "the file")


def _read_parquet(path: Path, where: str) -> Iterator[tuple[str, Record]]:
    index = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            yield f"{where}#{index}", row
            index += 1


def read_records(path: str | os.PathLike[str]) -> Iterator[tuple[str, Record]]:
    """Yield ``(location, record)`` for each row of ``path``; see the module doc for formats.

    A row that cannot be parsed is yielded as a ``RowError("bad_json")`` (never raised), so a
    corrupt line costs one row, not the run. Raises ValueError for an unknown extension or a
    corrupt JSON array, FileNotFoundError for a missing file.
    """
    path = Path(path)
    kind, gzipped = _SUFFIXES[_suffix(path)]
    if not path.is_file():
        raise FileNotFoundError(f"input file {path} does not exist")
    where = os.fspath(path)
    if kind == "parquet":
        yield from _read_parquet(path, where)
    elif kind == "json":
        yield from _read_json_file(path, gzipped, where)
    else:
        with _open_binary(path, gzipped) as f:
            yield from _read_json_lines(iter(f), where)


# --------------------------------------------------------------------------- sources


@dataclass
class SourceSpec:
    """One corpus: a file, a folder or a glob (see :func:`expand_source_path`). ``name``
    (default: the file name without its extension; for a folder its name; for a glob the name
    of its last literal folder) fills the ``source`` column; ``task`` (default: ``name``) the
    ``task`` column; ``format`` is a key of :data:`~hammer_core.formats.FORMATS` or ``"auto"``;
    ``max_rows`` caps the records read from the source (all its files together)."""

    path: str
    format: str = "auto"
    task: str | None = None
    name: str | None = None
    max_rows: int | None = None

    def __post_init__(self) -> None:
        self.path = os.fspath(self.path)
        if self.name is None:
            self.name = _default_name(self.path)
        if self.task is None:
            self.task = self.name
        if self.format != "auto":
            get_format(self.format)  # ValueError listing the known formats
        if self.max_rows is not None and self.max_rows < 0:
            raise ValueError(f"max_rows must be >= 0, got {self.max_rows}")


def _default_name(path: str) -> str:
    if _is_glob(path):
        literal = [part for part in Path(path).parts if not glob.has_magic(part)]
        return Path(*literal).name if literal else "glob"
    p = Path(path)
    if p.is_dir() or _known_suffix(p) is None:
        return p.name
    return p.name[: len(p.name) - len(_suffix(p))]


def _source_records(spec: SourceSpec) -> Iterator[tuple[str, Record]]:
    for path in expand_source_path(spec.path):
        yield from read_records(path)


@dataclass(frozen=True)
class Outcome:
    """What became of one input record: a canonical row, or a row of REJECT_SCHEMA."""

    kept: dict[str, Any] | None = None
    rejected: dict[str, Any] | None = None


def _truncate(text: str, limit: int = RAW_LIMIT_BYTES) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    keep = limit - len(_TRUNCATION_MARK.encode("utf-8"))
    return data[:keep].decode("utf-8", "ignore") + _TRUNCATION_MARK


def _raw_text(record: Record) -> str:
    if isinstance(record, RowError):
        return record.raw or ""
    return json.dumps(record, ensure_ascii=False, default=str)


def resolve_format(spec: SourceSpec) -> Format | None:
    """The source's format; for ``auto``, the first recognizable record decides. None when the
    source has no parseable record at all (then every row is a reject anyway)."""
    if spec.format != "auto":
        return get_format(spec.format)
    first_error: ValueError | None = None
    for n, (_, record) in enumerate(_source_records(spec)):
        if n >= DETECT_SCAN_LIMIT:
            break
        if isinstance(record, RowError):
            continue
        try:
            return FORMATS[detect_format(record)]
        except ValueError as e:
            first_error = first_error or e
    if first_error is not None:
        raise ValueError(f"{spec.path}: cannot detect the format ({first_error}); "
                         "pass an explicit format") from None
    return None


def iter_source(spec: SourceSpec, seen_ids: dict[str, str], *,
                fmt: Format | None = None) -> Iterator[Outcome]:
    """Read, normalize and validate one source, one :class:`Outcome` per record read.

    ``seen_ids`` maps every id kept so far in the run to its location; it is updated, and a
    row whose id is already in it is rejected with ``duplicate_id``. ``fmt`` defaults to the
    source's resolved format (:func:`resolve_format`).
    """
    assert spec.name is not None and spec.task is not None  # set by SourceSpec.__post_init__
    if fmt is None:
        fmt = resolve_format(spec)
    for index, (location, record) in enumerate(_source_records(spec)):
        if spec.max_rows is not None and index >= spec.max_rows:
            break
        try:
            if isinstance(record, RowError):
                raise record
            if fmt is None:
                raise RowError("unknown_format",
                               f"no format for this source; known: {sorted(FORMATS)}")
            row = fmt.normalize(record, source=spec.name, task=spec.task, index=index)
            first = seen_ids.get(row["id"])
            if first is not None:
                raise RowError("duplicate_id", f"id {row['id']!r} was already kept from {first}")
            seen_ids[row["id"]] = location
            yield Outcome(kept=row)
        except RowError as e:
            yield Outcome(rejected={"source": spec.name, "location": location, "reason": e.reason,
                                    "detail": e.detail, "raw": _truncate(_raw_text(record))})


# --------------------------------------------------------------------------- ingest


@dataclass(frozen=True)
class IngestResult:
    """The two artifacts, the run summary (``read/kept/rejected/by_reason/by_task``) and
    per-source counts (name, path, format, task, files with their sha256,
    read/kept/rejected/by_reason)."""

    examples: Artifact
    rejects: Artifact
    summary: dict[str, Any]
    sources: list[dict[str, Any]] = field(default_factory=list)


def ingest(sources: list[SourceSpec], out_dir: str | os.PathLike[str]) -> IngestResult:
    """Ingest ``sources`` into ``out_dir``: ``examples.parquet`` (kind ``examples``),
    ``rejects.parquet`` (kind ``rejects``), each with its manifest, and ``summary.json``
    (the summary plus per-source counts; written last)."""
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"source names must be unique, got {names}")
    out_dir = Path(out_dir)
    kept: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    per_source: list[dict[str, Any]] = []
    seen_ids: dict[str, str] = {}
    for spec in sources:
        n_kept = n_rejected = 0
        reasons: Counter[str] = Counter()
        fmt = resolve_format(spec)
        for outcome in iter_source(spec, seen_ids, fmt=fmt):
            if outcome.kept is not None:
                kept.append(outcome.kept)
                n_kept += 1
            elif outcome.rejected is not None:
                rejected.append(outcome.rejected)
                reasons[outcome.rejected["reason"]] += 1
                n_rejected += 1
        per_source.append({
            "name": spec.name, "path": spec.path, "format": fmt.name if fmt else None,
            "task": spec.task,
            "files": [{"path": os.fspath(f), "sha256": sha256_file(f)}
                      for f in expand_source_path(spec.path)],
            "read": n_kept + n_rejected, "kept": n_kept,
            "rejected": n_rejected, "by_reason": dict(sorted(reasons.items())),
        })

    by_reason: Counter[str] = Counter(r["reason"] for r in rejected)
    by_task: dict[str, int] = {str(s.task): 0 for s in sources}
    for row in kept:
        by_task[row["task"]] += 1
    summary = {
        "read": sum(s["read"] for s in per_source),
        "kept": len(kept),
        "rejected": len(rejected),
        "by_reason": dict(sorted(by_reason.items())),
        "by_task": dict(sorted(by_task.items())),
    }
    if summary["read"] != summary["kept"] + summary["rejected"]:
        raise AssertionError(f"ingest lost rows: {summary}")

    extra = {"summary": summary, "sources": per_source}
    examples = write_table(examples_table(kept), out_dir / "examples.parquet",
                           kind="examples", extra=extra)
    rejects = write_table(pa.Table.from_pylist(rejected, schema=REJECT_SCHEMA),
                          out_dir / "rejects.parquet", kind="rejects", extra=extra)
    atomic_write_json(out_dir / "summary.json", {**summary, "sources": per_source})
    return IngestResult(examples=examples, rejects=rejects, summary=summary, sources=per_source)


__all__ = ["IngestResult", "Outcome", "SourceSpec", "expand_source_path", "ingest", "iter_source",
           "read_records", "resolve_format"]
