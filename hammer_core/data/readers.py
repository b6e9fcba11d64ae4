"""Readers: a corpus file, folder, glob or ``hf://`` dataset -> ``(location, record)`` pairs, streamed.

A record is a dict or, for input that cannot even be parsed (a bad JSON line, invalid UTF-8, a
row over the size limit, a row nested too deep for the JSON decoder), a
:class:`~hammer_core.data.row_errors.RowError`; :mod:`hammer_core.data.ingest` normalizes,
validates and accounts for them. Locations are ``"<file>:<line>"`` (1-based) for line input and
``"<file>#<index>"`` (0-based) otherwise.

Supported files: ``.jsonl`` / ``.ndjson`` (one object per line; blank lines are skipped and
not counted), ``.json`` (a JSON array; a file that is not an array is read as JSON lines when
its first line is a whole object, which is how BFCL ships its ``.json`` files, else as one
object), ``.parquet``, and gzip variants ``.jsonl.gz`` / ``.ndjson.gz`` / ``.json.gz``.
Whole-source problems (missing file, unknown extension, a corrupt JSON array, a source in no
known format, an unavailable dataset) are configuration errors and raise (:class:`SourceError`
or FileNotFoundError).

Nothing holds the corpus: JSON lines are read line by line (a line over ``max_row_bytes`` is
skipped to its end without being held), Parquet by record batches, JSON arrays by an
incremental decoder over a 1 MiB window. A JSON array element is decoded only once it fits in
memory, so an array whose single element is larger than max(64 MiB, 2 × ``max_row_bytes``) is a
:class:`SourceError` (convert such a file to JSON lines).
"""

from __future__ import annotations

import codecs
import glob
import gzip
import json
import os
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hammer_core.config import ConfigError
from hammer_core.data.row_errors import RowError

#: Default limit on one raw row (a JSON line, an array element, a Parquet row).
DEFAULT_MAX_ROW_BYTES = 1 << 20

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


def default_source_name(path: str) -> str:
    """A source's name when none is given: its file name without the extension, its folder's
    name, the literal part of a glob, or the dataset's name."""
    if is_hf_source(path):
        return parse_hf_source(path)[0].rstrip("/").rsplit("/", 1)[-1]
    if _is_glob(path):
        literal = [part for part in Path(path).parts if not glob.has_magic(part)]
        return Path(*literal).name if literal else "glob"
    p = Path(path)
    if p.is_dir() or _known_suffix(p) is None:
        return p.name
    return p.name[: len(p.name) - len(_suffix(p))]


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


__all__ = ["DEFAULT_MAX_ROW_BYTES", "HF_PREFIX", "Record", "SourceError", "default_source_name", "expand_source_path", "is_hf_source",
           "parse_hf_source", "read_hf_records", "read_records"]
