"""Reading and writing for the prepare stage: the input in blocks of exactly :data:`BLOCK_ROWS`
rows, read ahead on a thread (:func:`_blocks`); the outputs in row groups of exactly
:data:`ROW_GROUP_ROWS` rows, written on threads (:class:`_GroupedWriter`, :func:`_output_writer`);
and the process settings the stage runs under (Arrow's memory pool, the garbage collector).

Both sizes are fixed: they are part of the output order and bytes. Code elsewhere reads them as
``blockio.BLOCK_ROWS`` (at call time), so that a test can change them in one place."""

from __future__ import annotations

import gc
import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from hammer_core.artifacts import Artifact, ArtifactWriter

BLOCK_ROWS = 2048  # source rows per task (fixed: it is part of the output order)
ROW_GROUP_ROWS = 16_384  # rows per output row group (fixed: same bytes for any batching)


class _GroupedWriter:
    """An :class:`ArtifactWriter` fed on a background thread in row groups of exactly
    :data:`ROW_GROUP_ROWS` rows (the last one shorter), whatever the sizes of the tables added.
    A group goes to the Parquet writer as the chunks it was added in, not copied into one
    array: the writer cuts pages of long strings and lists at chunk boundaries, so the bytes
    depend on the sizes of the tables added -- fixed by the data: the stage adds one table per
    block and split, of single-chunk columns (``_Columns.column``), whatever the workers, the
    path (kernel or Python) or the input's row groups (tested)."""

    def __init__(self, writer: ArtifactWriter) -> None:
        self.writer = writer
        self.pending: list[pa.Table] = []
        self.n = 0
        self.thread = ThreadPoolExecutor(max_workers=1)
        self.futures: deque[Future] = deque()
        self.sealing = False

    def add(self, table: pa.Table) -> None:
        if not table.num_rows:
            return
        self.pending.append(table)
        self.n += table.num_rows
        while self.n >= ROW_GROUP_ROWS:
            self._flush(ROW_GROUP_ROWS)

    def _flush(self, rows: int) -> None:
        whole = pa.concat_tables(self.pending)  # zero-copy: the copying is on the writer thread
        group, rest = whole.slice(0, rows), whole.slice(rows)
        self.pending, self.n = ([rest] if rest.num_rows else []), rest.num_rows
        self.futures.append(self.thread.submit(self.writer.write_table, group))
        while len(self.futures) > 2:  # bounded memory: wait for older writes
            self.futures.popleft().result()

    def seal_async(self) -> None:
        """Queue the last row group, the footer and the hash (:meth:`ArtifactWriter.seal`) on
        this writer's thread and return: sealing several outputs this way overlaps their tails."""
        if self.n:
            self._flush(self.n)
        self.futures.append(self.thread.submit(self.writer.seal))
        self.sealing = True

    def finish(self, **kwargs: Any) -> Artifact:
        if not self.sealing:
            self.seal_async()
        while self.futures:
            self.futures.popleft().result()
        self.thread.shutdown()
        return self.writer.finish(**kwargs)

    def abort(self) -> None:
        self.thread.shutdown(wait=True, cancel_futures=True)
        self.writer.abort()


# columns worth dictionary encoding (few distinct values); the others are mostly distinct
_DICTIONARY = {"examples": ["source", "task", "variant", "messages.list.element.role"], "tokens": ["task"],
               "rejects": ["source", "reason"]}
# columns with min/max statistics (not the long texts and token ids: nothing filters on them)
_STATISTICS = {"examples": ["id", "source", "task", "messages.list.element.role", "parent_id", "variant"],
               "tokens": ["id", "task", "n_prompt"], "rejects": ["source", "reason"]}


def _output_writer(path: Path, schema: pa.Schema, kind: str, parents: list[Artifact],
                   extra: dict[str, Any] | None = None, compression: str = "zstd") -> _GroupedWriter:
    """The grouped, threaded writer of one of the stage's outputs, with its kind's settings."""
    return _GroupedWriter(ArtifactWriter(path, schema, kind=kind, parents=parents, extra=extra,
                                         dictionary=_DICTIONARY[kind], statistics=_STATISTICS[kind],
                                         compression=compression))


def _prefetched(items: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """``items``, produced on a background thread up to ``depth`` ahead: Parquet decoding
    (which releases the GIL) overlaps the work on the previous block. Exceptions are re-raised
    here, in order; closing the generator stops the thread."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((True, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((True, end))
        except BaseException as err:  # noqa: BLE001 -- handed to the consumer
            q.put((False, err))

    thread = threading.Thread(target=produce, name="hammer-prepare-read", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is end:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.05)


def _blocks(path: Path, columns: list[str] | None = None, ahead: int = 2,
            also: Callable[[pa.Table], Any] | None = None) -> Iterator[tuple]:
    """(start, table) blocks of exactly BLOCK_ROWS input rows (the last one shorter), read up to
    ``ahead`` blocks ahead on a background thread; with ``also``: (start, table, also(table)),
    ``also`` called on that thread."""
    blocks = _read_blocks(path, columns)
    if also is not None:
        blocks = ((start, t, also(t)) for start, t in blocks)
    return _prefetched(blocks, ahead)


def _read_blocks(path: Path, columns: list[str] | None = None) -> Iterator[tuple[int, pa.Table]]:
    pf = pq.ParquetFile(path, memory_map=True)  # pages straight from the page cache: no copy into fresh memory
    pending: list[pa.RecordBatch] = []
    n = start = 0
    for batch in pf.iter_batches(batch_size=BLOCK_ROWS, columns=columns):
        pending.append(batch)
        n += batch.num_rows
        while n >= BLOCK_ROWS:
            table = pa.Table.from_batches(pending)
            yield start, table.slice(0, BLOCK_ROWS)
            rest = table.slice(BLOCK_ROWS)
            pending, n = rest.to_batches(), rest.num_rows
            start += BLOCK_ROWS
    if n:
        yield start, pa.Table.from_batches(pending)


@contextmanager
def _system_memory_pool() -> Iterator[None]:
    """Arrow allocations from the C library's malloc for the duration (unless the user chose a
    pool with ``ARROW_DEFAULT_MEMORY_POOL``). Arrow's default pool, mimalloc, backs its arenas
    with transparent huge pages, and the stage's short-lived block-sized buffers keep faulting
    fresh 2 MB pages in: zeroing them was ~17 % of the stage's CPU with tokens at 60k rows
    (perf, this 2-core VM), against ~2 % with malloc (same bytes; peak RSS no higher).
    Buffers are freed by the pool that made them, so switching the default is safe."""
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        yield
        return
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(previous)


@contextmanager
def _gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()

