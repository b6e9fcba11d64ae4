"""Where the prepare stage's block tasks run: in this process and on forked workers
(:class:`_Runner`), or on a Dask cluster (:class:`_DaskRunner`); either way the results come back
in submission order, with a bounded number of blocks in flight, so the output bytes do not depend
on the runner or its number of workers."""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
from collections import deque
from collections.abc import Iterator
from typing import Any

from hammer_core.data.prepare.engine import Engine, Recipe
from hammer_core.data.prepare.rows import BlockResult

_ENGINE: Engine | None = None


def _init_worker() -> None:
    gc.disable()  # the caches are long-lived and acyclic: a full GC pass per block is pure cost


def _run_on(engine: Engine, task: tuple) -> BlockResult:
    kind, *args = task
    return engine.originals(*args) if kind == "originals" else engine.synthesized(*args)


def _run(task: tuple) -> BlockResult:
    assert _ENGINE is not None, "worker started without an engine"
    return _run_on(_ENGINE, task)


def _one_behind(results: Iterator[BlockResult]) -> Iterator[BlockResult]:
    """``results`` in order, each handed on once the next one is made: a block's deferred emits
    (:attr:`Engine.defer`) run on their thread while the next block is parsed here."""
    last = None
    for result in results:
        if last is not None:
            yield last
        last = result
    if last is not None:
        yield last


def _in_order(submitted: Iterator[Any], in_flight: int, result: Any) -> Iterator[BlockResult]:
    """``result(future)`` of each submitted future, in submission order; submission (pulling
    ``submitted``) stays at most ``in_flight`` futures ahead of the oldest one not yet returned."""
    window: deque = deque()
    for future in submitted:
        window.append(future)
        if len(window) > in_flight:
            yield result(window.popleft())
    while window:
        yield result(window.popleft())


class _Runner:
    """Runs block tasks in order, results in submission order: in this process, or -- with
    ``workers > 1`` -- the first block here and the others on forked workers, with a bounded
    number of tasks in flight. The workers fork after the first block, so they start with its
    compiled tools and cached tokens (a corpus's tools mostly show up in its first rows)."""

    def __init__(self, recipe: Recipe, tokenizer: Any, workers: int) -> None:
        self.recipe, self.tokenizer, self.workers = recipe, tokenizer, workers
        self.pool: Any = None
        self._env = os.environ.get("TOKENIZERS_PARALLELISM")
        if workers > 1:  # one process per core: no tokenizer threads, here or in the workers
            os.environ["TOKENIZERS_PARALLELISM"] = "false"
        self.engine = Engine(recipe, tokenizer)
        self.engine.defer = workers <= 1  # (forked workers start from this engine: no threads there)

    def _start(self) -> None:
        global _ENGINE
        _ENGINE = self.engine  # inherited by the forked workers, caches included
        self.pool = mp.get_context("fork").Pool(self.workers, initializer=_init_worker)

    def map(self, tasks: Iterator[tuple]) -> Iterator[BlockResult]:
        if self.workers <= 1 or self.pool is None:
            for t in tasks:
                result = _run_on(self.engine, t)
                if self.workers > 1:
                    self._start()  # fork now: before the result reaches the writer threads
                    yield result
                    break
                yield result
            if self.pool is None:
                return
        yield from _in_order((self.pool.apply_async(_run, (t,)) for t in tasks), 2 * self.workers,
                             lambda f: f.get())

    def tokenization(self) -> str:
        return self.engine.tokenization

    def __enter__(self) -> "_Runner":
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        global _ENGINE
        self.engine.close()
        if self.pool is not None:
            if exc_type is None:
                self.pool.close()
            else:
                self.pool.terminate()
            self.pool.join()
        _ENGINE = None
        if self.workers > 1:
            if self._env is None:
                os.environ.pop("TOKENIZERS_PARALLELISM", None)
            else:
                os.environ["TOKENIZERS_PARALLELISM"] = self._env


_DASK_ENGINES: dict[str, Engine] = {}  # in a Dask worker: one engine per prepare run


def _run_dask(run_key: str, recipe: Recipe, tokenizer: Any, task: tuple) -> BlockResult:
    engine = _DASK_ENGINES.get(run_key)
    if engine is None:  # first block of this run on this worker: compile from scratch
        engine = _DASK_ENGINES[run_key] = Engine(recipe, tokenizer)
    return _run_on(engine, task)


def _forget_dask_run(run_key: str) -> None:
    _DASK_ENGINES.pop(run_key, None)


class _DaskRunner:
    """Runs block tasks on a Dask cluster (the Prefect flows' ``orchestration.task_runner:
    dask``): an existing scheduler (``address``) or a local cluster of ``n_workers`` processes.
    Each worker builds its own :class:`Engine` for the run on its first block (an engine's
    caches only change the speed, never the bytes), results come back in submission order with
    a bounded number of blocks in flight, so the artifacts are the same bytes as in one process."""

    def __init__(self, recipe: Recipe, tokenizer: Any, address: str | None, n_workers: int) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            from hammer_core.config import ConfigError
            raise ConfigError("orchestration.task_runner is 'dask' but dask.distributed is not installed: "
                              "pip install prefect-dask, or set orchestration.task_runner: local") from None
        import uuid

        self.engine = Engine(recipe, tokenizer)  # the tokenization mode, decided here as for the pool
        self.cluster = None if address else LocalCluster(n_workers=n_workers, threads_per_worker=1,
                                                         processes=True, dashboard_address=None)
        self.client = Client(address or self.cluster)
        self.run_key = uuid.uuid4().hex
        self.inputs = self.client.scatter([recipe, tokenizer], broadcast=True)
        workers = len(self.client.scheduler_info().get("workers", {})) or n_workers  # (0 while connecting)
        self.in_flight = 2 * max(1, workers)

    def map(self, tasks: Iterator[tuple]) -> Iterator[BlockResult]:
        yield from _in_order((self.client.submit(_run_dask, self.run_key, *self.inputs, t, pure=False)
                              for t in tasks), self.in_flight, lambda f: f.result())

    def tokenization(self) -> str:
        return self.engine.tokenization

    def __enter__(self) -> "_DaskRunner":
        return self

    def __exit__(self, *_: Any) -> None:
        try:
            if self.cluster is None:  # a shared cluster: drop this run's engines there
                self.client.run(_forget_dask_run, self.run_key)
        finally:
            self.client.close()
            if self.cluster is not None:
                self.cluster.close()

