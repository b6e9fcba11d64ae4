"""Ingest: raw corpora → ``examples.parquet`` + ``rejects.parquet`` + ``summary.json``, streamed.

Readers (:func:`read_records`) turn a file into ``(location, record)`` pairs, where a record is
a dict or, for input that cannot even be parsed (a bad JSON line, invalid UTF-8, a row over the
size limit, a row nested too deep for the JSON decoder), a :class:`~hammer_core.data.row_errors.RowError`.
Each record then goes through its format's normalizer (:mod:`hammer_core.data.formats`), which yields
one candidate row per target (one for single-turn formats, one per learned-from assistant turn
of a conversation) and validates each (:mod:`hammer_core.data.validation`). Nothing a row contains
can stop the run: a row nested deeper than the normalizers go is a ``too_deep`` reject too.

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

Supported files: ``.jsonl`` / ``.ndjson`` (one object per line; blank lines are skipped and
not counted), ``.json`` (a JSON array; a file that is not an array is read as JSON lines when
its first line is a whole object, which is how BFCL ships its ``.json`` files, else as one
object), ``.parquet``, and gzip variants ``.jsonl.gz`` / ``.ndjson.gz`` / ``.json.gz``.
Whole-source problems (missing file, unknown extension, a corrupt JSON array, a source in no
known format, an unavailable dataset) are configuration errors and raise (:class:`SourceError`
or FileNotFoundError).

Scale
-----
Nothing holds the corpus: JSON lines are read line by line (a line over ``max_row_bytes`` is
skipped to its end without being held), Parquet by record batches, JSON arrays by an
incremental decoder over a 1 MiB window, and the outputs are written in batches of
``batch_rows`` by :class:`~hammer_core.artifacts.ArtifactWriter`. What grows with the corpus
is the duplicate bookkeeping: a 16-byte digest per kept row and its id with its location
(~200 bytes a row). Limitation: a JSON array element is decoded only once it fits in memory,
so an array whose single element is larger than max(64 MiB, 2 × ``max_row_bytes``) is a
:class:`SourceError` (convert such a file to JSON lines).

Output order is input order (sources in the given order, rows in file order), and writes are
deterministic, so the same inputs give byte-identical artifacts.
"""

from __future__ import annotations

import codecs
import glob
import gzip
import hashlib
import json
import os
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hammer_core.artifacts import Artifact, ArtifactWriter, atomic_write_json, open_artifact, sha256_file
from hammer_core.config import ConfigError
from hammer_core.data.formats import (FORMATS, Candidate, Format, Records, RowError, detect_format,
                                 get_format)
from hammer_core.data.formats.common import tool_set_digest
from hammer_core.schema import EXAMPLE_SCHEMA, REJECT_SCHEMA, SCHEMA_VERSION, dumps

if TYPE_CHECKING:
    from hammer_core.config import SourceConfig

#: The most bytes of a rejected row's raw text kept in ``rejects.parquet``.
RAW_LIMIT_BYTES = 10_000
_TRUNCATION_MARK = "…[truncated]"

#: Default limit on one raw row (a JSON line, an array element, a Parquet row).
DEFAULT_MAX_ROW_BYTES = 1 << 20

#: Rows per Parquet write (one row group each); bounds the memory of the output side.
BATCH_ROWS = 8192

#: How many records ``format="auto"`` looks at to recognize a source's format.
DETECT_SCAN_LIMIT = 1_000

HF_PREFIX = "hf://"
_CHUNK = 1 << 20

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
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class SourceError(ConfigError):
    """A source cannot be read as a whole: the message names it and says what to do."""


# --------------------------------------------------------------------------- readers


def _known_suffix(path: Path) -> str | None:
    name = path.name.lower()
    return next((suffix for suffix in _SUFFIXES if name.endswith(suffix)), None)


def _suffix(path: Path) -> str:
    suffix = _known_suffix(path)
    if suffix is None:
        raise SourceError(f"{path}: unknown input extension; supported: {', '.join(_SUFFIXES)}")
    return suffix


def _is_glob(path: str) -> bool:
    return not os.path.exists(path) and glob.has_magic(path)


def is_hf_source(path: str) -> bool:
    """Whether ``path`` names a Hugging Face dataset (``hf://<id>[:split]``)."""
    return path.startswith(HF_PREFIX)


def parse_hf_source(path: str) -> tuple[str, str]:
    """``"hf://org/name:test"`` → ``("org/name", "test")``; the split defaults to ``train``."""
    dataset_id, _, split = path.removeprefix(HF_PREFIX).partition(":")
    if not dataset_id.strip("/"):
        raise SourceError(f"source {path!r}: no dataset id after {HF_PREFIX}")
    return dataset_id, split or "train"


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


def _too_large(what: str, nbytes: int, limit: int, raw: str) -> RowError:
    return RowError("row_too_large", f"{what} is {nbytes:,} bytes, over the limit of "
                                     f"{limit:,} (max_row_bytes)", raw=raw)


def _as_record(value: Any, text: str, what: str) -> Record:
    """A parsed JSON value as a record: objects pass (unless their escapes hold a lone
    surrogate), anything else is a ``bad_json`` row error."""
    if not isinstance(value, dict):
        return RowError("bad_json", f"{what} is valid JSON but a {type(value).__name__}, "
                                    "not an object", raw=text)
    if _SURROGATE_ESCAPE.search(text) and not _encodable(value):
        return RowError("invalid_utf8", f"{what} holds a \\u escape of a lone surrogate, "
                                        "which is not valid UTF-8 text", raw=text)
    return value


def _encodable(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    except RecursionError:
        return True  # too deep to check here; validation rejects it as too_deep
    return True


def _too_deep(what: str, raw: str) -> RowError:
    return RowError("too_deep", f"{what} nests arrays/objects deeper than the JSON decoder "
                                "goes (Python's recursion limit)", raw=raw)


def _lines(f: IO[bytes], limit: int) -> Iterator[tuple[bytes, int]]:
    """``(line, size)`` per line, size without the line break. A line over ``limit`` bytes is
    returned as its first ``limit`` bytes only; the rest is skipped without being held."""
    while True:
        line = f.readline(limit + 2)
        if not line:
            return
        if len(line) > limit and not line.endswith(b"\n"):
            size = len(line)
            while True:
                rest = f.readline(_CHUNK)
                size += len(rest)
                if not rest or rest.endswith(b"\n"):
                    break
            yield line[:limit], size - (1 if rest.endswith(b"\n") else 0)
        else:
            yield line, len(line.rstrip(b"\r\n"))


def _read_json_lines(f: IO[bytes], where: str, limit: int) -> Iterator[tuple[str, Record]]:
    for lineno, (raw_line, size) in enumerate(_lines(f, limit), start=1):
        if lineno == 1:
            raw_line = raw_line.removeprefix(b"\xef\xbb\xbf")  # UTF-8 byte order mark
        location = f"{where}:{lineno}"
        if size > limit:
            yield location, _too_large(f"line {lineno}", size, limit,
                                       raw_line.decode("utf-8", "replace"))
            continue
        try:
            text = raw_line.decode("utf-8")
        except UnicodeDecodeError as e:
            yield location, RowError("invalid_utf8", f"line {lineno} is not valid UTF-8: {e}",
                                     raw=raw_line.decode("utf-8", "replace"))
            continue
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except RecursionError:
            yield location, _too_deep(f"line {lineno}", text.rstrip("\r\n"))
            continue
        except ValueError as e:  # JSONDecodeError, or an integer over Python's 4,300 digits
            yield location, RowError("bad_json", f"line {lineno} is not valid JSON: {e}",
                                     raw=text.rstrip("\r\n"))
            continue
        yield location, _as_record(value, text.rstrip("\r\n"), f"line {lineno}")


class _TextWindow:
    """The decoded text of a binary stream, read in chunks, with a cursor (``pos``).
    Invalid UTF-8 bytes decode to lone surrogates (``surrogateescape``) so that the element
    holding them, not the file, is rejected."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self._decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self.text = ""
        self.pos = 0
        self.eof = False

    def more(self) -> bool:
        """Read one more chunk (dropping the consumed prefix); False at the end."""
        if self.eof:
            return False
        chunk = self._f.read(_CHUNK)
        self.eof = not chunk
        self.text = self.text[self.pos:] + self._decoder.decode(chunk, final=self.eof)
        self.pos = 0
        return True

    def peek(self) -> str:
        """The next non-whitespace character ('' at the end), cursor moved onto it."""
        while True:
            while self.pos < len(self.text) and self.text[self.pos] in " \t\r\n\ufeff":
                self.pos += 1
            if self.pos < len(self.text) or not self.more():
                return self.text[self.pos:self.pos + 1]


def _decode_element(window: _TextWindow, decoder: json.JSONDecoder, where: str, index: int,
                    max_window: int) -> tuple[Any, str]:
    """Decode the array element at the cursor, reading more text until it is whole. An element
    the decoder cannot build (nested too deep, an integer over Python's 4,300 digits) is
    skipped and returned as the RowError that rejects it."""
    window.peek()  # skip the whitespace before it
    while True:
        try:
            value, end = decoder.raw_decode(window.text, window.pos)
        except json.JSONDecodeError as e:
            if len(window.text) - window.pos > max_window or not window.more():
                raise SourceError(
                    f"{where} is not a valid JSON array (element {index}: {e}). A corrupt array "
                    "cannot be read past the error, and an element over "
                    f"{max_window >> 20} MiB cannot be streamed: convert the file to JSON "
                    "lines") from None
            continue
        except (RecursionError, ValueError) as e:
            text = _skip_element(window, where, index, max_window)
            if isinstance(e, RecursionError):
                return _too_deep(f"element {index}", text), text
            return RowError("bad_json", f"element {index} cannot be decoded: {e}", raw=text), text
        if end == len(window.text) and not window.eof:
            window.more()  # the element touches the end of the window: it may go on
            continue
        text = window.text[window.pos:end]
        window.pos = end
        return value, text


_ELEMENT_SYNTAX = re.compile(r'[][{}",\\]')


def _skip_element(window: _TextWindow, where: str, index: int, max_window: int) -> str:
    """Move the cursor past the array element at it without decoding it (bracket counting,
    strings skipped); return the element's text."""
    depth, in_string, i = 0, False, window.pos
    while True:
        match = _ELEMENT_SYNTAX.search(window.text, i)
        if match is None or (match.group() == "\\" and match.end() == len(window.text)):
            i = (match.start() if match else len(window.text)) - window.pos
            if len(window.text) - window.pos > max_window or not window.more():
                raise SourceError(f"{where} is not a valid JSON array: element {index} does not "
                                  "end (or is over the streaming window): convert the file to "
                                  "JSON lines")
            continue
        char, i = match.group(), match.end()
        if in_string:
            if char == "\\":
                i += 1  # the escaped character
            in_string = char != '"'
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
        elif depth == 0:  # the ',' or ']' after a scalar element
            i = match.start()
            break
        elif char != ",":
            depth -= 1
            if depth == 0:
                break
    text = window.text[window.pos:i].rstrip()
    window.pos = i
    return text


def _array_element(value: Any, text: str, index: int, limit: int) -> Record:
    size = len(text.encode("utf-8", "surrogateescape"))
    if size > limit:
        return _too_large(f"element {index}", size, limit, text[:limit])
    if isinstance(value, RowError):  # not decodable: see _decode_element
        return value
    if _SURROGATE.search(text):  # invalid bytes, decoded by surrogateescape
        return RowError("invalid_utf8", f"element {index} is not valid UTF-8",
                        raw=text.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
    return _as_record(value, text, f"element {index}")


def _read_json_array(window: _TextWindow, where: str, limit: int) -> Iterator[tuple[str, Record]]:
    """The elements of the JSON array whose '[' is at the cursor, one at a time."""
    decoder = json.JSONDecoder()
    max_window = max(64 << 20, 2 * limit)
    window.pos += 1
    index = 0
    separator = window.peek()
    if separator == "]":
        window.pos += 1
    while separator != "]":
        value, text = _decode_element(window, decoder, where, index, max_window)
        yield f"{where}#{index}", _array_element(value, text, index, limit)
        index += 1
        separator = window.peek()
        window.pos += 1
        if separator not in (",", "]"):
            raise SourceError(f"{where} is not a valid JSON array: expected ',' or ']' after "
                              f"element {index - 1}, found {separator or 'the end of the file'!r}")
    if window.peek():
        raise SourceError(f"{where} is not a valid JSON array: text after the closing ']'")


def _first_line_is_object(path: Path, gzipped: bool, limit: int) -> bool:
    with _open_binary(path, gzipped) as f:
        line = f.readline(limit + 2).removeprefix(b"\xef\xbb\xbf")
    try:
        return isinstance(json.loads(line), dict)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return False


def _read_json_file(path: Path, gzipped: bool, where: str,
                    limit: int) -> Iterator[tuple[str, Record]]:
    """A ``.json`` file: a streamed array, JSON lines, or one (pretty-printed) object."""
    with _open_binary(path, gzipped) as f:
        window = _TextWindow(f)
        first = window.peek()
        if first == "[":
            yield from _read_json_array(window, where, limit)
            return
    if first == "{" and not _first_line_is_object(path, gzipped, limit):
        with _open_binary(path, gzipped) as f:
            data = f.read(limit + 1)
        if len(data) <= limit:
            try:
                text = data.decode("utf-8-sig")
                value = json.loads(text)
            except (ValueError, RecursionError):
                pass  # not one object: read it as JSON lines, each line judged on its own
            else:
                yield f"{where}#0", _as_record(value, text, "the file")
                return
    with _open_binary(path, gzipped) as f:
        yield from _read_json_lines(f, where, limit)


def _row_sizes(batch: pa.RecordBatch) -> list[int] | None:
    """Byte sizes of the rows of a batch of flat (string/scalar) columns; None if any column
    is nested (then each row is measured as JSON)."""
    total = pa.array([0] * batch.num_rows, pa.int64())
    for column in batch.columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type) or \
                pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
            total = pc.add(total, pc.fill_null(pc.binary_length(column), 0))
        elif pa.types.is_nested(column.type):
            return None
        else:
            total = pc.add(total, 8)
    return total.to_pylist()


def _read_parquet(path: Path, where: str, limit: int) -> Iterator[tuple[str, Record]]:
    index = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=2048):
        sizes = _row_sizes(batch)
        try:
            rows: list[Any] = batch.to_pylist()
        except UnicodeDecodeError:  # some row holds bytes that are not UTF-8: find which
            rows = []
            for i in range(batch.num_rows):
                try:
                    rows.append(batch.slice(i, 1).to_pylist()[0])
                except UnicodeDecodeError as e:
                    rows.append(RowError("invalid_utf8", f"row {index + i} is not valid UTF-8: "
                                                         f"{e}", raw=""))
        for i, row in enumerate(rows):
            location = f"{where}#{index}"
            if not isinstance(row, RowError):
                size = sizes[i] if sizes is not None else len(
                    json.dumps(row, ensure_ascii=False, default=str).encode("utf-8"))
                if size > limit:
                    row = _too_large(f"row {index}", size, limit,
                                     json.dumps(row, ensure_ascii=False, default=str)[:limit])
            yield location, row
            index += 1


def read_records(path: str | os.PathLike[str], *,
                 max_row_bytes: int = DEFAULT_MAX_ROW_BYTES) -> Iterator[tuple[str, Record]]:
    """Yield ``(location, record)`` for each row of ``path``; see the module doc for formats.

    A row that cannot be used as input (not JSON, not UTF-8, over ``max_row_bytes``) is
    yielded as a :class:`RowError` (never raised), so a corrupt line costs one row, not the
    run. Raises :class:`SourceError` for an unknown extension, a corrupt JSON array or a
    corrupt gzip stream, FileNotFoundError for a missing file.
    """
    path = Path(path)
    kind, gzipped = _SUFFIXES[_suffix(path)]
    if not path.is_file():
        raise FileNotFoundError(f"input file {path} does not exist")
    where = os.fspath(path)
    try:
        if kind == "parquet":
            yield from _read_parquet(path, where, max_row_bytes)
        elif kind == "json":
            yield from _read_json_file(path, gzipped, where, max_row_bytes)
        else:
            with _open_binary(path, gzipped) as f:
                yield from _read_json_lines(f, where, max_row_bytes)
    except (EOFError, gzip.BadGzipFile, zlib.error, pa.ArrowInvalid) as e:
        raise SourceError(f"{where} is corrupt or truncated: {type(e).__name__}: {e}") from None


def read_hf_records(path: str, *,
                    max_row_bytes: int = DEFAULT_MAX_ROW_BYTES) -> Iterator[tuple[str, Record]]:
    """Stream the rows of ``hf://<dataset id>[:split]`` through ``datasets.load_dataset(...,
    streaming=True)``; locations are ``"hf://<id>:<split>#<index>"``. Raises
    :class:`SourceError` naming the source when ``datasets`` is not installed or the dataset
    cannot be reached."""
    dataset_id, split = parse_hf_source(path)
    try:
        import datasets  # optional: not a dependency of the pipeline
    except ImportError:
        raise SourceError(
            f"source {path!r}: reading a Hugging Face dataset needs the 'datasets' package, "
            "which is not installed. Install it (pip install datasets), or download the "
            "dataset's files and give their path instead") from None
    where = f"{HF_PREFIX}{dataset_id}:{split}"
    try:
        dataset = datasets.load_dataset(dataset_id, split=split, streaming=True)
        for index, row in enumerate(dataset):
            text = json.dumps(row, ensure_ascii=False, default=str)
            size = len(text.encode("utf-8", "surrogatepass"))
            yield f"{where}#{index}", (_too_large(f"row {index}", size, max_row_bytes,
                                                  text[:max_row_bytes])
                                       if size > max_row_bytes else dict(row))
    except Exception as e:  # noqa: BLE001 - hub, network and dataset-script errors alike
        raise SourceError(
            f"source {path!r}: cannot read Hugging Face dataset {dataset_id!r} (split "
            f"{split!r}): {type(e).__name__}: {e}. Offline? Download the dataset's files and "
            "give their path instead (or set HF_DATASETS_OFFLINE=1 to use a local cache)"
        ) from None


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
            self.name = _default_name(self.path)
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


def _default_name(path: str) -> str:
    if is_hf_source(path):
        return parse_hf_source(path)[0].rstrip("/").rsplit("/", 1)[-1]
    if _is_glob(path):
        literal = [part for part in Path(path).parts if not glob.has_magic(part)]
        return Path(*literal).name if literal else "glob"
    p = Path(path)
    if p.is_dir() or _known_suffix(p) is None:
        return p.name
    return p.name[: len(p.name) - len(_suffix(p))]


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


__all__ = ["BATCH_ROWS", "DEFAULT_MAX_ROW_BYTES", "HF_PREFIX", "IngestResult", "Outcome",
           "SHARD_SCHEMA", "SeenRows", "SourceError", "SourceSpec", "expand_source_path", "ingest",
           "ingest_shard", "merge_shards",
           "is_hf_source", "iter_source", "parse_hf_source", "read_hf_records", "read_records",
           "resolve_format"]
