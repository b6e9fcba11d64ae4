"""Parquet artifacts with a manifest beside them, written atomically.

Every stage hands its output to the next as ``<name>.parquet`` plus ``<name>.manifest.json``:

.. code-block:: json

    {"name": "examples", "rows": 412, "schema_version": "1", "kind": "examples",
     "content_hash": "sha256:...", "parents": ["sha256:..."], "columns": [...], "extra": {...}}

The content hash is the SHA-256 of the Parquet bytes; writes are deterministic (no
timestamps anywhere), so the same input, config and seed give the same bytes and the same
hash, and the ``parents`` hashes chain every artifact back to the corpus it came from.

:func:`write_table` writes a table held in memory; :class:`ArtifactWriter` streams one that
is not (ingesting a million rows): record batches go to a temp file in the target folder,
hashed as it grows and renamed into place only when the writer finishes, so a reader never
sees a half-written artifact. Written in one batch, both give the same bytes.

A writer publishes the Parquet file and its manifest together: both are written to temp
files first, then the data file and the manifest are renamed into place, in that order. A run
that dies between the two renames leaves a data file that does not match its manifest, and
:func:`open_artifact` refuses it (it checks the file's SHA-256 against the manifest's
``content_hash``; a check is remembered per file identity within a process, and a writer seeds
it with the hash it computed, so a flow's next stage does not read the file twice).

Temp files are named ``.<target name>.<pid>-<host>.<random>.tmp`` (:func:`temp_prefix`): a
writer that is killed cannot remove its own, so a stage calls :func:`remove_stale_temp_files`
on its output folder when it starts, which removes those whose writer is no process on this
host any more (a live writer's, and other hosts', are left alone).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from hammer_core.schema import SCHEMA_VERSION

MANIFEST_SUFFIX = ".manifest.json"
_UMASK = os.umask(0)
os.umask(_UMASK)

#: Content hashes this process computed or checked, by file identity (path, device, inode,
#: size, mtime): files are only ever replaced by a rename (a new inode), never rewritten.
_VERIFIED: dict[tuple[str, int, int, int, int], str] = {}

_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())
# .<target name>.<pid>-<host>.<mkstemp's random part>.tmp
_TEMP_NAME = re.compile(r"^\..+\.(\d+)-([A-Za-z0-9-]*)\.[a-z0-9_]+\.tmp$")


class ArtifactError(ValueError):
    """An artifact that cannot be used as it is; the message says what to do."""


def temp_prefix(path: str | os.PathLike) -> str:
    """The ``prefix`` for ``tempfile.mkstemp`` of a temp file standing in for ``path`` (with
    ``suffix=".tmp"``): it names the writing process, for :func:`remove_stale_temp_files`."""
    return f".{Path(path).name}.{os.getpid()}-{_HOST}."


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Remove the temp files and folders under ``folder`` that writers killed before they
    finished left behind: named by :func:`temp_prefix` on this host, for a process id that no
    process has any more. Returns what was removed."""
    removed: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in filenames + dirnames:
            match = _TEMP_NAME.match(name)
            if match is None or match.group(2) != _HOST or _alive(int(match.group(1))):
                continue
            path = Path(dirpath) / name
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
        dirnames[:] = [d for d in dirnames if _TEMP_NAME.match(d) is None]
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # a process of another user
    except (OverflowError, ValueError):
        return False  # not a process id at all
    return True


def _temp_copy(path: Path, data: bytes) -> str:
    """``data`` written and synced to a temp file beside ``path`` (named for the stale-temp sweep),
    readable like any artifact; nothing is left behind when that fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; artifacts are meant to be shared
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder and ``os.replace``."""
    path = Path(path)
    tmp = _temp_copy(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def sha256_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    hash_file_from(h, path)
    return "sha256:" + h.hexdigest()


def hash_file_from(h: Any, path: str | os.PathLike, start: int = 0) -> int:
    """Feed ``h`` the bytes of ``path`` from offset ``start`` to its end; return that end."""
    with open(path, "rb") as f:
        f.seek(start)
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            start += len(chunk)
    return start


@dataclass(frozen=True)
class Artifact:
    """A Parquet file and its manifest."""

    path: Path
    manifest: dict[str, Any] = field(hash=False, compare=False)

    @property
    def content_hash(self) -> str:
        return self.manifest["content_hash"]

    @property
    def rows(self) -> int:
        return self.manifest["rows"]

    def read(self) -> pa.Table:
        return pq.read_table(self.path)


def manifest_path(parquet_path: str | os.PathLike) -> Path:
    p = Path(parquet_path)
    return p.with_name(p.name.removesuffix(".parquet") + MANIFEST_SUFFIX)


def write_table(
    table: pa.Table,
    path: str | os.PathLike,
    *,
    kind: str,
    parents: list[Artifact] | None = None,
    extra: dict[str, Any] | None = None,
) -> Artifact:
    """Write ``table`` as Parquet (zstd, deterministic) and its manifest, both atomically."""
    path = Path(path)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", use_dictionary=True, write_statistics=True)
    data = buf.getvalue()
    manifest = {
        "name": path.name.removesuffix(".parquet"),
        "kind": kind,
        "rows": table.num_rows,
        "schema_version": SCHEMA_VERSION,
        "columns": table.column_names,
        "content_hash": sha256_bytes(data),
        "parents": [p.content_hash for p in (parents or [])],
        "extra": extra or {},
    }
    _publish(Path(_temp_copy(path, data)), path, manifest)
    return Artifact(path=path, manifest=manifest)


def _publish(tmp: Path, path: Path, manifest: dict[str, Any]) -> None:
    """Rename the finished data file ``tmp`` to ``path`` and put its manifest beside it: the
    manifest goes to a temp file first and is renamed right after the data, so a reader finds
    the previous pair, the new pair, or (after a crash between the renames) a data file that
    :func:`open_artifact` refuses, never a file it takes for another."""
    mpath = manifest_path(path)
    text = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    try:
        mtmp = _temp_copy(mpath, text.encode("utf-8"))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # a streamed temp file is mkstemp's 0600 until now
        os.replace(tmp, path)
        os.replace(mtmp, mpath)
    except BaseException:
        tmp.unlink(missing_ok=True)
        Path(mtmp).unlink(missing_ok=True)
        raise
    _VERIFIED[_identity(path)] = manifest["content_hash"]


def _identity(path: Path) -> tuple[str, int, int, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class ArtifactWriter:
    """Stream rows into a Parquet artifact, atomically; use as a context manager::

        with ArtifactWriter(out / "examples.parquet", EXAMPLE_SCHEMA, kind="examples") as w:
            for batch in batches:
                w.write_rows(batch)
            artifact = w.finish(extra={"summary": ...})  # optional: done on exit otherwise

    Rows go to a temp file beside ``path`` (zstd, dictionary encoding, statistics: the
    settings of :func:`write_table`; each ``write_*`` call becomes one or more row groups, so
    the bytes depend on the batching, and the same batching gives the same bytes).
    The content hash follows the writing: after each ``write_*`` call the bytes the file has
    grown by are hashed (Parquet is written front to back, never rewritten), so sealing hashes
    only the footer and the last buffered bytes instead of reading the whole file again.
    :meth:`finish` closes it, fsyncs, and renames it and then its manifest into place; an
    exception inside the ``with`` block removes the temp file and leaves any previous
    artifact at ``path`` untouched.
    """

    def __init__(self, path: str | os.PathLike, schema: pa.Schema, *, kind: str,
                 parents: list[Artifact] | None = None,
                 extra: dict[str, Any] | None = None,
                 dictionary: bool | list[str] = True, statistics: bool | list[str] = True,
                 compression: str = "zstd") -> None:
        """``dictionary``: dictionary-encode every column (True), or only these column paths
        (``"messages.list.element.role"`` for a nested one): encoding a column of mostly
        distinct values (prompts, token ids) costs time and saves nothing. ``statistics``:
        min/max statistics for every column, or only these (none for long texts and token ids:
        nothing filters on them). ``compression``: the Parquet codec (``"zstd"``, ``"lz4"``)."""
        self.path = Path(path)
        self.schema = schema
        self.kind = kind
        self.parents = list(parents or [])
        self.extra = extra
        self.rows = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=temp_prefix(self.path), suffix=".tmp")
        os.close(fd)
        self._tmp = Path(tmp)
        self._writer: pq.ParquetWriter | None = pq.ParquetWriter(
            self._tmp, schema, compression=compression, use_dictionary=dictionary, write_statistics=statistics)
        self._sha = hashlib.sha256()  # of the bytes [0, self._hashed) of the temp file
        self._hashed = 0
        self._hash: str | None = None  # set by seal()
        self._aborted = False
        self._artifact: Artifact | None = None

    def write_table(self, table: pa.Table) -> None:
        """Append ``table`` (its schema must be this writer's)."""
        if self._writer is None:
            raise RuntimeError(f"ArtifactWriter for {self.path} is already finished or aborted")
        self._writer.write_table(table)
        self.rows += table.num_rows
        self._hash_written()

    def _hash_written(self) -> None:
        """Hash what the file has grown by since the last call (from the page cache)."""
        self._hashed = hash_file_from(self._sha, self._tmp, self._hashed)

    def write_rows(self, rows: list[dict[str, Any]]) -> None:
        """Append row dicts (keys of the schema); an empty list writes nothing."""
        if rows:
            self.write_table(pa.Table.from_pylist(rows, schema=self.schema))

    def seal(self) -> str:
        """Close the Parquet file, fsync it and return its content hash, without publishing it
        (:meth:`finish` does that; it seals first if this was not called). Lets several
        artifacts be sealed at once on their writer threads. Idempotent."""
        if self._aborted:
            raise RuntimeError(f"ArtifactWriter for {self.path} was aborted")
        if self._hash is None:
            assert self._writer is not None, "a writer neither sealed nor aborted is open"
            self._writer.close()
            self._writer = None
            try:
                with open(self._tmp, "rb") as f:
                    os.fsync(f.fileno())
                self._hash_written()  # the rest: the footer
                self._hash = "sha256:" + self._sha.hexdigest()
            except BaseException:
                self._tmp.unlink(missing_ok=True)
                raise
        return self._hash

    def finish(self, extra: dict[str, Any] | None = None) -> Artifact:
        """Publish the artifact (``extra`` replaces the one given at construction)."""
        if self._artifact is not None:
            return self._artifact
        content_hash = self.seal()
        manifest = {
            "name": self.path.name.removesuffix(".parquet"),
            "kind": self.kind,
            "rows": self.rows,
            "schema_version": SCHEMA_VERSION,
            "columns": self.schema.names,
            "content_hash": content_hash,
            "parents": [p.content_hash for p in self.parents],
            "extra": (self.extra if extra is None else extra) or {},
        }
        _publish(self._tmp, self.path, manifest)
        self._artifact = Artifact(path=self.path, manifest=manifest)
        return self._artifact

    def abort(self) -> None:
        """Drop everything written so far (the temp file); ``path`` is left as it was."""
        if self._artifact is not None:
            return  # published: nothing to drop
        if self._writer is not None:
            try:
                self._writer.close()
            finally:
                self._writer = None
        self._aborted = True
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "ArtifactWriter":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.abort()
        elif self._artifact is None:
            self.finish()


def open_artifact(path: str | os.PathLike) -> Artifact:
    """Open an artifact written by :func:`write_table`; a clear error if it is not one, or if
    the data file is not the one its manifest describes (:class:`ArtifactError`)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; expected a .parquet artifact inside it")
    if not path.exists():
        raise FileNotFoundError(f"artifact {path} does not exist")
    mpath = manifest_path(path)
    if not mpath.exists():
        raise FileNotFoundError(f"artifact {path} has no manifest ({mpath.name}); "
                                "was it written by hammer?")
    manifest = json.loads(mpath.read_text())
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{path}: schema version {manifest.get('schema_version')!r}, "
                         f"this hammer reads {SCHEMA_VERSION!r}")
    verify(path, manifest["content_hash"])
    return Artifact(path=path, manifest=manifest)


def verify(path: str | os.PathLike, content_hash: str) -> None:
    """Raise :class:`ArtifactError` unless the file's SHA-256 is ``content_hash`` (its manifest's)."""
    path = Path(path)
    key = _identity(path)
    actual = _VERIFIED.get(key)
    if actual is None:
        actual = _VERIFIED[key] = sha256_file(path)
    if actual != content_hash:
        raise ArtifactError(f"{path} does not match its manifest (hash {actual[:19]}... != {content_hash[:19]}...): "
                            "it was left by a run that did not finish; rerun the stage that writes it")
