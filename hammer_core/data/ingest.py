"""Ingest: raw corpora → ``examples.parquet`` + ``rejects.parquet`` + ``summary.json``, streamed.

Readers (:mod:`hammer_core.data.readers`) turn each source into ``(location, record)`` pairs,
where a record is a dict or a :class:`~hammer_core.data.row_errors.RowError` (input that cannot
even be parsed). Each record then goes through its format's normalizer
(:mod:`hammer_core.data.formats`), which yields one candidate row per target (one for
single-turn formats, one per learned-from assistant turn of a conversation) and validates each
(:mod:`hammer_core.data.validation`). Nothing a row contains can stop the run: a row nested
deeper than the normalizers go is a ``too_deep`` reject too.

Accounting
----------
``records`` counts the input records read (a JSON line, an array item, a dataset row, or an
unparseable line). ``examples`` counts the *candidate rows* made from them: each target of a
parsed record (a conversation with two assistant call turns gives two), plus one for each
record that is unusable as a whole. Every candidate ends in exactly one of three places:

- ``kept``: written to ``examples.parquet``;
- ``rejected``: written to ``rejects.parquet`` with its reason code, detail, raw text and
  location (``"<file>:<line>"`` 1-based for line input, ``"<file>#<index>"`` 0-based
  otherwise, with ``"#t<k>"`` appended for the k-th target of a conversation);
- ``duplicates``: dropped because an *exact* duplicate was kept earlier in the run: the same
  messages, the same tool *set* (tool order ignored) and the same calls (ids ignored). Only
  the count is kept: the twin in ``examples.parquet`` holds the same content.

so ``examples == kept + rejected + duplicates``, checked before anything is published. A row
with the id of a kept row but other content is a ``duplicate_id`` reject. The summary
(``{records, examples, kept, rejected, duplicates, by_reason, by_task}``) goes into both
manifests and ``summary.json``, with the same counts per source, its format and the input
files' sha256.

Sources
-------
A source (:class:`SourceSpec`) is one file, a folder (its files with a supported extension,
not recursive), a glob (``data/*.jsonl.gz``; ``**`` recursive), read in sorted path order, or
a Hugging Face dataset ``hf://<dataset id>[:split]`` (split ``train`` by default), streamed
through the optional ``datasets`` package (when it is missing or the hub cannot be reached,
:class:`SourceError` names the source and what to do instead). Each source has its own
``task`` label (CGC-LoRA task cluster; default: the source name), format (``auto`` detects it
from the first recognizable record) and optional ``max_rows`` cap (the first N records).

Supported files and how they are read: :mod:`hammer_core.data.readers`. Whole-source problems
(missing file, unknown extension, a corrupt JSON array, a source in no known format, an
unavailable dataset) are configuration errors and raise (:class:`SourceError` or
FileNotFoundError).

Scale
-----
Nothing holds the corpus: the readers stream their input, and the outputs are written in
batches of ``batch_rows`` by :class:`~hammer_core.artifacts.ArtifactWriter`. What grows with the
corpus is the duplicate bookkeeping: a 16-byte digest per kept row and its id with its location
(~200 bytes a row).

Output order is input order (sources in the given order, rows in file order), and writes are
deterministic, so the same inputs give byte-identical artifacts.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from hammer_core.artifacts import Artifact, ArtifactWriter, atomic_write_json, open_artifact, sha256_file
from hammer_core.data.formats import (FORMATS, Candidate, Format, Records, RowError, detect_format,
                                 get_format)
from hammer_core.data.formats.common import tool_set_digest
from hammer_core.data.readers import (DEFAULT_MAX_ROW_BYTES, Record, SourceError, default_source_name,
                                     expand_source_path, is_hf_source, parse_hf_source, read_hf_records,
                                     read_records)
from hammer_core.schema import EXAMPLE_SCHEMA, REJECT_SCHEMA, SCHEMA_VERSION, dumps

if TYPE_CHECKING:
    from hammer_core.config import SourceConfig

#: The most bytes of a rejected row's raw text kept in ``rejects.parquet``.
RAW_LIMIT_BYTES = 10_000
_TRUNCATION_MARK = "…[truncated]"

#: Rows per Parquet write (one row group each); bounds the memory of the output side.
BATCH_ROWS = 8192

#: How many records ``format="auto"`` looks at to recognize a source's format.
DETECT_SCAN_LIMIT = 1_000


# --------------------------------------------------------------------------- sources


@dataclass
class SourceSpec:
    """One corpus: a file, a folder, a glob (see :func:`expand_source_path`) or
    ``hf://<dataset id>[:split]``. ``name`` (default: the file name without its extension; for
    a folder its name; for a glob the name of its last literal folder; for a dataset the last
    part of its id) fills the ``source`` column; ``task`` (default: ``name``) the ``task``
    column; ``format`` is a key of :data:`~hammer_core.data.formats.FORMATS` or ``"auto"``;
    ``max_rows`` caps the records read from the source (the first ones, all its files
    together); a raw row over ``max_row_bytes`` is rejected as ``row_too_large``."""

    path: str
    format: str = "auto"
    task: str | None = None
    name: str | None = None
    max_rows: int | None = None
    max_row_bytes: int = DEFAULT_MAX_ROW_BYTES

    def __post_init__(self) -> None:
        self.path = os.fspath(self.path)
        if self.name is None:
            self.name = default_source_name(self.path)
        if self.task is None:
            self.task = self.name
        if self.format != "auto":
            get_format(self.format)  # ValueError listing the known formats
        if self.max_rows is not None and self.max_rows < 0:
            raise ValueError(f"max_rows must be >= 0, got {self.max_rows}")
        if self.max_row_bytes <= 0:
            raise ValueError(f"max_row_bytes must be > 0, got {self.max_row_bytes}")

    @classmethod
    def from_config(cls, source: SourceConfig) -> SourceSpec:
        """The spec of one ``data.sources`` entry of the pipeline config."""
        return cls(path=source.path, format=source.format, task=source.task, name=source.name,
                   max_rows=source.max_rows, max_row_bytes=source.max_row_bytes)


def _source_records(spec: SourceSpec, fmt: Format | None = None) -> Records:
    """The records of every file of ``spec``, each file bound by ``fmt`` when it binds files."""
    if is_hf_source(spec.path):
        yield from read_hf_records(spec.path, max_row_bytes=spec.max_row_bytes)
        return
    for path in expand_source_path(spec.path):
        records = read_records(path, max_row_bytes=spec.max_row_bytes)
        if fmt is not None and fmt.bind_file is not None:
            records = fmt.bind_file(path, records)
        yield from records


def _source_files(spec: SourceSpec) -> list[dict[str, Any]]:
    if is_hf_source(spec.path):
        dataset_id, split = parse_hf_source(spec.path)
        return [{"path": spec.path, "dataset": dataset_id, "split": split, "sha256": None}]
    return [{"path": os.fspath(f), "sha256": sha256_file(f)} for f in expand_source_path(spec.path)]


@dataclass(frozen=True)
class Outcome:
    """What became of one candidate row of record number ``record`` (0-based in its source):
    kept (a canonical row), rejected (a row of REJECT_SCHEMA), or a duplicate of the row kept
    at ``duplicate_of`` (a location)."""

    record: int
    kept: dict[str, Any] | None = None
    rejected: dict[str, Any] | None = None
    duplicate_of: str | None = None


@dataclass
class SeenRows:
    """What one ingest run has kept so far: ids and 16-byte content digests, each with the
    location of its row (the location strings are shared between the two maps)."""

    ids: dict[str, str] = field(default_factory=dict)
    content: dict[bytes, str] = field(default_factory=dict)
    _last_tools: tuple[str, bytes] = field(default=("", b""), init=False, repr=False)

    def content_digest(self, row: dict[str, Any], tools_digest: bytes | None = None) -> bytes:
        """Digest of the row's messages, tool *set* and calls (its id is not part of it).
        ``tools_digest`` is the normalizer's :func:`~hammer_core.data.formats.common.dump_tools`
        digest when it has one; otherwise it is computed from ``row["tools"]`` (and cached:
        the rows of one conversation share their tools)."""
        if tools_digest is None:
            if self._last_tools[0] != row["tools"]:
                texts = [dumps(t) for t in json.loads(row["tools"])]
                self._last_tools = (row["tools"], tool_set_digest(texts))
            tools_digest = self._last_tools[1]
        h = hashlib.blake2b(tools_digest, digest_size=16)
        for m in row["messages"]:
            h.update(f"{m['role']}\x1f{m['content']}\x1e".encode("utf-8", "surrogatepass"))
        h.update(row["calls"].encode("utf-8", "surrogatepass"))
        return h.digest()


def _truncate(text: str, limit: int = RAW_LIMIT_BYTES) -> str:
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return data.decode("utf-8")
    keep = limit - len(_TRUNCATION_MARK.encode("utf-8"))
    return data[:keep].decode("utf-8", "ignore") + _TRUNCATION_MARK


def _raw_text(record: Record) -> str:
    if isinstance(record, RowError):
        return record.raw or ""
    try:
        return json.dumps(record, ensure_ascii=False, default=str)
    except RecursionError:
        return "(not shown: nested too deep to print)"


def resolve_format(spec: SourceSpec) -> Format | None:
    """The source's format; for ``auto``, the first recognizable record decides. None when the
    source has no parseable record at all (then every row is a reject anyway)."""
    if spec.format != "auto":
        return get_format(spec.format)
    first_error: ValueError | None = None
    records = _source_records(spec)
    try:
        for n, (_, record) in enumerate(records):
            if n >= DETECT_SCAN_LIMIT:
                break
            if isinstance(record, RowError):
                continue
            try:
                return FORMATS[detect_format(record)]
            except ValueError as e:
                first_error = first_error or e
    finally:
        records.close()  # type: ignore[attr-defined]
    if first_error is not None:
        raise SourceError(f"{spec.path}: cannot detect the format ({first_error}); "
                          "pass an explicit format") from None
    return None


def _candidates(fmt: Format | None, record: Record, spec: SourceSpec,
                index: int) -> list[Candidate]:
    """The candidates of one record; a whole-record error is one candidate with no suffix."""
    assert spec.name is not None and spec.task is not None  # set by SourceSpec.__post_init__
    try:
        if isinstance(record, RowError):
            raise record
        if fmt is None:
            raise RowError("unknown_format", f"no format for this source; known: {sorted(FORMATS)}")
        candidates = fmt.normalize(record, source=spec.name, task=spec.task, index=index)
        if not candidates:
            raise RowError("no_target", "the record holds no example")
        return candidates
    except RowError as e:
        return [Candidate("", error=e)]
    except RecursionError:  # a value nested too deep for the normalizer's recursive walks
        return [Candidate("", error=RowError(
            "too_deep", "the record nests values deeper than its format's normalizer goes "
                        "(Python's recursion limit)"))]


def iter_source(spec: SourceSpec, seen: SeenRows | None = None, *,
                fmt: Format | None = None) -> Iterator[Outcome]:
    """Read, normalize, validate and de-duplicate one source: one :class:`Outcome` per
    candidate row (see the module doc's accounting).

    ``seen`` holds what the run kept so far (a fresh one by default) and is updated. ``fmt``
    defaults to the source's resolved format (:func:`resolve_format`).
    """
    return _iter_source(spec, SeenRows() if seen is None else seen,
                        resolve_format(spec) if fmt is None else fmt)


def _source_candidates(spec: SourceSpec, fmt: Format | None) -> Iterator[tuple[int, str, Candidate, Record]]:
    """``(record index, location, candidate, record)`` for every candidate row of the source,
    in input order (read, normalized and validated; not yet de-duplicated)."""
    for index, (location, record) in enumerate(_source_records(spec, fmt)):
        if spec.max_rows is not None and index >= spec.max_rows:
            break
        for candidate in _candidates(fmt, record, spec, index):
            yield index, location + candidate.suffix, candidate, record


def _decide(seen: SeenRows, source: str, index: int, where: str, row: dict[str, Any] | None,
            digest: bytes | None, error: RowError | None, raw: Callable[[], str]) -> Outcome:
    """Kept, duplicate or rejected: the run-wide de-duplication of one candidate row (``digest``
    is its :meth:`SeenRows.content_digest` when it has a row); ``raw()`` gives the reject's raw
    text. The one place this decision is made, for :func:`ingest` and :func:`merge_shards`."""
    if row is not None:
        assert digest is not None
        first = seen.content.get(digest)
        if first is not None:
            return Outcome(index, duplicate_of=first)
        first = seen.ids.get(row["id"])
        if first is None:
            seen.ids[row["id"]] = where
            seen.content[digest] = where
            return Outcome(index, kept=row)
        error = RowError("duplicate_id", f"id {row['id']!r} was already kept, with "
                                         f"other content, from {first}")
    assert error is not None
    return Outcome(index, rejected={"source": source, "location": where, "reason": error.reason,
                                    "detail": error.detail, "raw": raw()})


def _iter_source(spec: SourceSpec, seen: SeenRows, fmt: Format | None) -> Iterator[Outcome]:
    """:func:`iter_source` with the format already resolved (None: no parseable record)."""
    assert spec.name is not None
    for index, where, candidate, record in _source_candidates(spec, fmt):
        row = candidate.row
        digest = seen.content_digest(row, candidate.tools_digest) if row is not None else None
        yield _decide(seen, spec.name, index, where, row, digest, candidate.error,
                      lambda: _truncate(_raw_text(record)))  # noqa: B023 (called at once)


# --------------------------------------------------------------------------- ingest


@dataclass(frozen=True)
class IngestResult:
    """The two artifacts, the run summary (``records/examples/kept/rejected/duplicates/
    by_reason/by_task``) and per-source counts (name, path, format, task, files with their
    sha256, records/examples/kept/rejected/duplicates/by_reason)."""

    examples: Artifact
    rejects: Artifact
    summary: dict[str, Any]
    sources: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Tally:
    records: int = 0
    kept: int = 0
    rejected: int = 0
    duplicates: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)

    @property
    def examples(self) -> int:
        return self.kept + self.rejected + self.duplicates


def ingest(sources: list[SourceSpec], out_dir: str | os.PathLike[str], *,
           batch_rows: int = BATCH_ROWS) -> IngestResult:
    """Ingest ``sources`` into ``out_dir``: ``examples.parquet`` (kind ``examples``),
    ``rejects.parquet`` (kind ``rejects``), each with its manifest, and ``summary.json``
    (the summary plus per-source counts; written last). Streams: memory does not grow with
    the corpus beyond the duplicate bookkeeping (see the module doc)."""
    seen = SeenRows()

    def one(spec: SourceSpec) -> tuple[str | None, Iterator[Outcome], Callable[[], list[dict[str, Any]]]]:
        fmt = resolve_format(spec)
        return fmt.name if fmt else None, _iter_source(spec, seen, fmt), lambda: _source_files(spec)

    return _publish(sources, one, Path(out_dir), batch_rows)


def _publish(sources: list[SourceSpec], outcomes_of: Callable[[SourceSpec], tuple[
        str | None, Iterator[Outcome], Callable[[], list[dict[str, Any]]]]],
             out_dir: Path, batch_rows: int) -> IngestResult:
    """Write the outcomes of every source, in order, as the two artifacts and the summary.
    ``outcomes_of(spec)`` gives the source's format name, its outcome stream and a callable
    for its input files (called after the stream is consumed)."""
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"source names must be unique, got {names}")
    per_source: list[dict[str, Any]] = []
    by_task: Counter[str] = Counter({str(s.task): 0 for s in sources})
    with ArtifactWriter(out_dir / "examples.parquet", EXAMPLE_SCHEMA, kind="examples") as kept_out, \
            ArtifactWriter(out_dir / "rejects.parquet", REJECT_SCHEMA, kind="rejects") as rejects_out:
        kept_rows: list[dict[str, Any]] = []
        rejected_rows: list[dict[str, Any]] = []
        for spec in sources:
            tally = _Tally()
            fmt_name, outcomes, files = outcomes_of(spec)
            for outcome in outcomes:
                tally.records = outcome.record + 1
                if outcome.kept is not None:
                    kept_rows.append(outcome.kept)
                    tally.kept += 1
                    if len(kept_rows) >= batch_rows:
                        kept_out.write_rows(kept_rows)
                        kept_rows.clear()
                elif outcome.rejected is not None:
                    rejected_rows.append(outcome.rejected)
                    tally.rejected += 1
                    tally.by_reason[outcome.rejected["reason"]] += 1
                    if len(rejected_rows) >= batch_rows:
                        rejects_out.write_rows(rejected_rows)
                        rejected_rows.clear()
                else:
                    tally.duplicates += 1
            by_task[str(spec.task)] += tally.kept
            per_source.append({
                "name": spec.name, "path": spec.path, "format": fmt_name,
                "task": spec.task, "files": files(), "records": tally.records,
                "examples": tally.examples, "kept": tally.kept, "rejected": tally.rejected,
                "duplicates": tally.duplicates, "by_reason": dict(sorted(tally.by_reason.items())),
            })
        kept_out.write_rows(kept_rows)
        rejects_out.write_rows(rejected_rows)

        by_reason: Counter[str] = Counter()
        for s in per_source:
            by_reason.update(s["by_reason"])
        summary = {
            "records": sum(s["records"] for s in per_source),
            "examples": sum(s["examples"] for s in per_source),
            "kept": kept_out.rows,
            "rejected": rejects_out.rows,
            "duplicates": sum(s["duplicates"] for s in per_source),
            "by_reason": dict(sorted(by_reason.items())),
            "by_task": dict(sorted(by_task.items())),
        }
        if summary["examples"] != summary["kept"] + summary["rejected"] + summary["duplicates"]:
            raise AssertionError(f"ingest lost rows: {summary}")
        extra = {"summary": summary, "sources": per_source}
        examples = kept_out.finish(extra=extra)
        rejects = rejects_out.finish(extra=extra)
    atomic_write_json(out_dir / "summary.json", {**summary, "sources": per_source})
    return IngestResult(examples=examples, rejects=rejects, summary=summary, sources=per_source)


# --------------------------------------------------------------------------- shards
#
# A distributed ingest reads, normalizes and validates each source on its own (a *shard*,
# :func:`ingest_shard`, one per source, in any order and on any machine that sees the files),
# then :func:`merge_shards` replays the shards in source order through the same
# de-duplication and writer as :func:`ingest`. A shard keeps every candidate row with its
# content digest and raw text, so the merge can make the run-wide decisions (a row that is
# unique in its source may duplicate a row of an earlier source); the merged artifacts and
# summary are byte-identical to :func:`ingest` over the same sources.

SHARD_SCHEMA = pa.schema(
    [pa.field("record", pa.int64(), nullable=False), pa.field("where", pa.string(), nullable=False),
     pa.field("digest", pa.binary(), nullable=True)]
    + [pa.field(f.name, f.type, nullable=True) for f in EXAMPLE_SCHEMA]
    + [pa.field("reason", pa.string(), nullable=True), pa.field("detail", pa.string(), nullable=True),
       pa.field("raw", pa.string(), nullable=False)],
    metadata={"hammer.schema_version": SCHEMA_VERSION, "hammer.kind": "ingest_shard"},
)
_EXAMPLE_FIELDS = EXAMPLE_SCHEMA.names


def ingest_shard(spec: SourceSpec, out_path: str | os.PathLike[str], *,
                 batch_rows: int = BATCH_ROWS) -> Artifact:
    """Read, normalize and validate one source into a shard artifact (kind ``ingest_shard``,
    :data:`SHARD_SCHEMA`), for :func:`merge_shards`. Whole-source problems raise as in
    :func:`ingest`."""
    fmt = resolve_format(spec)
    digests = SeenRows()  # only its tools-digest cache is used
    with ArtifactWriter(out_path, SHARD_SCHEMA, kind="ingest_shard") as out:
        batch: list[dict[str, Any]] = []
        for index, where, candidate, record in _source_candidates(spec, fmt):
            row, error = candidate.row, candidate.error
            item: dict[str, Any] = {"record": index, "where": where, "raw": _truncate(_raw_text(record))}
            if row is not None:
                item["digest"] = digests.content_digest(row, candidate.tools_digest)
                item.update(row)
            else:
                assert error is not None
                item["reason"], item["detail"] = error.reason, error.detail
            batch.append(item)
            if len(batch) >= batch_rows:
                out.write_rows(batch)
                batch.clear()
        out.write_rows(batch)
        return out.finish(extra={"source": spec.name, "format": fmt.name if fmt else None,
                                 "files": _source_files(spec)})


def _shard_outcomes(shard: Artifact, source: str, seen: SeenRows, batch_rows: int) -> Iterator[Outcome]:
    for batch in pq.ParquetFile(shard.path).iter_batches(batch_size=batch_rows):
        for item in batch.to_pylist():
            digest = item["digest"]
            row = {k: item[k] for k in _EXAMPLE_FIELDS} if digest is not None else None
            error = RowError(item["reason"], item["detail"]) if digest is None else None
            yield _decide(seen, source, item["record"], item["where"], row, digest, error,
                          lambda: item["raw"])  # noqa: B023 (called at once)


def merge_shards(sources: list[SourceSpec], shards: list[str | os.PathLike[str]],
                 out_dir: str | os.PathLike[str], *, batch_rows: int = BATCH_ROWS) -> IngestResult:
    """Merge the shards of ``sources`` (one each, same order) into the artifacts of
    :func:`ingest`: same bytes, same summary."""
    if len(shards) != len(sources):
        raise ValueError(f"{len(sources)} sources but {len(shards)} shards")
    artifacts = {s.name: open_artifact(p) for s, p in zip(sources, shards)}
    for spec, shard in artifacts.items():
        if shard.manifest.get("kind") != "ingest_shard" or shard.manifest["extra"].get("source") != spec:
            raise ValueError(f"{shard.path} is not the ingest shard of source {spec!r}")
    seen = SeenRows()

    def one(spec: SourceSpec) -> tuple[str | None, Iterator[Outcome], Callable[[], list[dict[str, Any]]]]:
        shard = artifacts[str(spec.name)]
        extra = shard.manifest["extra"]
        return extra["format"], _shard_outcomes(shard, str(spec.name), seen, batch_rows), lambda: extra["files"]

    return _publish(sources, one, Path(out_dir), batch_rows)


__all__ = ["BATCH_ROWS", "IngestResult", "Outcome", "SHARD_SCHEMA", "SeenRows", "SourceSpec", "ingest", "ingest_shard",
           "iter_source", "merge_shards", "resolve_format"]
