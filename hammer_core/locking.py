"""One run at a time per output folder: an OS file lock on ``<folder>/.hammer.lock``.

A pipeline run (``hammer run``, ``hammer demo``, every flow) holds :func:`run_lock` on the
config's ``output_dir`` while its stages run; a stage run alone (``hammer ingest ... --out DIR``)
holds :func:`stage_lock` on its folder. A second run on the same folder stops with one line
saying who holds it, or with ``HAMMER_LOCK_TIMEOUT=SECONDS`` waits that long for it first
(saying so once): two runs never interleave their writes.

The lock is ``fcntl.flock`` on the lock file, so the OS releases it when the holder's process
dies: a killed run never leaves a stale lock. The file holds the holder's pid, host and start
time while it is held (for the message; emptied on release). Locks are re-entrant within a
process: a flow holds its output folder's lock and the stages it runs take it again without
waiting on themselves. The descriptor is close-on-exec, so processes a stage starts (the
torchrun training workers) run under their parent's lock and never take it themselves.

A stage folder inside a pipeline's output folder (one that has a lock file) is covered by that
folder's lock: a stage run alone on ``X/train`` takes ``X``'s lock, so it waits for a flow
running on ``X`` and the other way round; :func:`run_lock` also takes the lock of any stage
folder of ``X`` that a stage run alone locked before ``X`` had a lock file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from hammer_core.config import ConfigError

LOCK_NAME = ".hammer.lock"
TIMEOUT_ENV = "HAMMER_LOCK_TIMEOUT"
POLL_S = 0.2


class FolderBusy(RuntimeError):
    """Another run holds the folder's lock; the message says which run and what to do."""


_held: dict[Path, list[int]] = {}  # folder -> [descriptor, depth] of the locks this process holds
_guard = threading.RLock()


def lock_timeout() -> float:
    """Seconds a run waits for a folder another run holds (``HAMMER_LOCK_TIMEOUT``, default 0)."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip() or "0"
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise ConfigError(f"{TIMEOUT_ENV}={raw!r}: give the seconds a run waits for a folder another run "
                          "holds (0: stop at once)")
    return seconds


def holder(folder: str | os.PathLike) -> str:
    """Who holds ``folder``'s lock, as the lock file says (``pid N, host H, since T``)."""
    try:
        info = json.loads((Path(folder) / LOCK_NAME).read_text())
        return f"pid {info['pid']}, host {info['host']}, since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder not recorded yet"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold the lock of ``folder`` (created if missing) inside the block; re-entrant within
    the process. Raises :class:`FolderBusy` when another process holds it past the timeout."""
    folder = Path(folder).resolve()
    with _guard:
        if folder in _held:
            _held[folder][1] += 1
        else:
            _held[folder] = [_acquire(folder), 1]
    try:
        yield folder
    finally:
        with _guard:
            entry = _held[folder]
            entry[1] -= 1
            if entry[1] == 0:
                del _held[folder]
                try:
                    os.ftruncate(entry[0], 0)
                finally:
                    os.close(entry[0])  # releases the flock


def _acquire(folder: Path) -> int:
    timeout = lock_timeout()
    path = folder / LOCK_NAME
    deadline = time.monotonic() + timeout
    waiting = False
    fd = -1
    try:
        while True:
            if fd < 0:
                folder.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if _same_file(fd, path):
                    break
                os.close(fd)  # the holder removed the file (see release_new_folder): lock the new one
                fd = -1
                continue
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise FolderBusy(
                        f"{folder} is in use by another run ({holder(folder)}; lock {path}): wait for it to "
                        f"finish or give this run another output folder ({TIMEOUT_ENV}=SECONDS makes a run "
                        "wait that long)") from None
                if not waiting:
                    print(f"hammer: waiting for the run holding {path} ({holder(folder)}), at most "
                          f"{timeout:g} s", file=sys.stderr, flush=True)
                    waiting = True
                time.sleep(POLL_S)
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(sys.argv)[:500]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        raise
    return fd


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    return (st.st_dev, st.st_ino) == (os.fstat(fd).st_dev, os.fstat(fd).st_ino)


def release_new_folder(folder: str | os.PathLike) -> None:
    """Remove ``folder`` if it holds nothing but its lock file, which this process holds: what
    a stage that failed before writing anything leaves when it created the folder to lock it."""
    folder = Path(folder).resolve()
    with _guard:
        if folder in _held and sorted(p.name for p in folder.iterdir()) == [LOCK_NAME]:
            (folder / LOCK_NAME).unlink()  # a run waiting on it sees the file gone and locks a new one
            folder.rmdir()


@contextlib.contextmanager
def stage_lock(out_dir: str | os.PathLike) -> Iterator[Path]:
    """The lock a stage holds on its output folder while it runs: the lock of the pipeline
    output folder it is in, if that folder has a lock file, else its own."""
    out = Path(out_dir).resolve()
    with folder_lock(out.parent if (out.parent / LOCK_NAME).exists() else out):
        yield out


@contextlib.contextmanager
def run_lock(output_dir: str | os.PathLike) -> Iterator[Path]:
    """The lock a pipeline run holds on its output folder (and on the stage folders in it that
    a stage run alone locked) while its stages run."""
    root = Path(output_dir).resolve()
    with contextlib.ExitStack() as stack:
        stack.enter_context(folder_lock(root))
        for lock in sorted(root.glob(f"*/{LOCK_NAME}")):
            stack.enter_context(folder_lock(lock.parent))
        yield root
