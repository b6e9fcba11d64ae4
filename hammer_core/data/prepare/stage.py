"""The prepare stage: split, irrelevance synthesis, masking, rendering and tokenization, streamed.

Input: the canonical ``examples.parquet`` from ingestion. Output folder:

* ``train.parquet`` / ``eval.parquet`` -- canonical rows (train: originals + synthesized "no
  call" rows, ``copies`` times, masked per Hammer's recipe; eval: originals + synthesized rows,
  never masked, one copy);
* ``train_tokens.parquet`` / ``eval_tokens.parquet`` -- ``id, task, input_ids, n_prompt``, one
  row per row of ``train`` / ``eval`` (same order);
* ``rejects.parquet`` -- rows over the token budget, with the reason;
* ``summary.json``.

The split is by row id (hashed with the seed), decided before any synthesis, so no
irrelevance or masked variant of an eval row can leak into training.

How it runs
-----------
The input is read in blocks of :data:`~.blockio.BLOCK_ROWS` rows (:mod:`.blockio`). Pass 1 hands
each block to an :class:`~.engine.Engine` (the first one in this process, the others to forked workers, which thereby
start with its compiled tools and cached tokens; or, with ``dask=True``, to the workers of a Dask
cluster, each building its own engine); the engine splits the block, masks, renders
and tokenizes every copy of every original row, and returns the output rows with a small
analysis (irrelevance eligibility, the rows' tools). The main process then picks the rows to
synthesize from (:func:`hammer_core.data.irrelevance.select_rows`, one global choice per split) and
pass 2 hands those rows, with their plan, to the engines. Pass 2 takes its rows from what pass 1
kept (:class:`~.synthesis._Sources`): the whole input when its decoded size is at most
:data:`~.synthesis.KEEP_INPUT_BYTES`, else the rows likely to be selected (eligible and ranked below a
threshold with a margin) within that bound; only when the selection needs a row that was not
kept does it read the input again. Input blocks are read ahead on a thread. Outputs are written
as they come back, in order, by background writer threads, in row groups of exactly
:data:`~.blockio.ROW_GROUP_ROWS` rows; beyond that bounded input, memory does not grow with the corpus
past the pass-1 analysis (a few dozen bytes a row, plus the tool pool when hard negatives are on).

Where the time goes: a row's tools are cut at ``},{"name":`` and looked up among compiled
tools (:class:`hammer_core.data.masking.ToolCache`); masked tools, prompts and answers are filled
templates (no JSON parsing or writing per row); tokens are cached per prompt fragment
(:class:`hammer_core.data.tokenization.FragmentTokenizer`).

Two implementations of the per-row work, with the same output bytes: the compiled kernel
(:mod:`hammer_core.data.compiled.fastprep`, a C extension: it reads a block's Arrow buffers, splits, masks,
renders and assembles the token ids of the common rows in bulk, rejects rows over the token
budget one by one, and hands every other row -- multi-turn conversations, perturbed defaults,
non-canonical JSON; a block with rows to trim (``length_policy: truncate_tools``) -- to the
Python path), used when the extension is built (``HAMMER_FASTPREP=0`` turns it off);
and the pure-Python path (:meth:`~.engine.Engine._emit` and its helpers), the oracle the kernel is
tested against and the fallback when the extension is not importable (one warning).

Order and determinism. Within a split, rows come out as: the original rows, then the
synthesized rows (in the order of their source rows); the ``copies`` of a block of
:data:`~.blockio.BLOCK_ROWS` source rows are written together (copy 0 of the block, then copy 1, ...):
the trainer shuffles anyway, and a row's copies sharing a worker is what lets its query be
tokenized once. Every random draw depends only on (seed, copy, row id, position) (see
:mod:`hammer_core.data.masking`), blocks and row groups have fixed sizes, and the workers' results
are written in submission order, so the artifacts are byte-identical for any number of
workers -- ``prepare.workers`` only changes the speed.

Checks. Rows are valid by construction (and property-tested against a naive oracle); every
64th output row and every row whose tools were trimmed is re-validated with the ingestion
validator (a failure is a bug and stops the stage), and every 4096th tokenized row is compared
with whole-text tokenization.
"""

from __future__ import annotations

import json
import os
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from hammer_core.artifacts import Artifact, atomic_write_json
from hammer_core.config import PipelineConfig
from hammer_core.data.compiled import fastprep
from hammer_core.data.irrelevance import ToolPool
from hammer_core.data.masking import ToolCache
from hammer_core.data.prepare import blockio
from hammer_core.data.prepare.engine import Recipe
from hammer_core.data.prepare.rows import SPLITS, BlockResult, SplitOutput
from hammer_core.data.prepare.runners import _DaskRunner, _one_behind, _Runner
from hammer_core.data.prepare.synthesis import _Facts, _plan_synthesis, _Sources, _synth_tasks
from hammer_core.data.tokenization import TOKENS_SCHEMA
from hammer_core.schema import EXAMPLE_SCHEMA, REJECT_SCHEMA


@dataclass
class PrepareResult:
    train: Artifact
    eval: Artifact
    train_tokens: Artifact
    eval_tokens: Artifact
    rejects: Artifact
    summary: dict[str, Any]


def default_workers() -> int:
    """Processes for ``prepare.workers: 0``. With the compiled kernel, one core is left to
    this process (reading, merging and writing the blocks: it would be the bottleneck beside a
    worker per core), so a 2-core machine runs the blocks here, with no pool; the pure-Python
    path is CPU-bound in the workers and takes every core."""
    cores = os.cpu_count() or 1
    return max(1, min(cores - 1 if fastprep.enabled() else cores, 8))


def prepare(cfg: PipelineConfig, examples: Artifact, out_dir: str | Path, *, tokenize: bool = True,
            dask: bool = False, tokenizer: Any = None) -> PrepareResult:
    """Run the stage (see the module doc). ``tokenize=False`` renders the prompts but writes no
    token artifacts (their fields in the result are None): a dry run, and the benchmark of
    the recipe without the tokenizer. ``dask``: the blocks run on the Dask cluster of
    ``orchestration`` (``dask_address``, else a local cluster of ``dask_workers`` processes)
    instead of this machine's process pool; same bytes. ``tokenizer``: the model's, loaded by the
    caller (:func:`hammer_core.stages.prepare`); needed unless ``tokenize=False``."""
    out = Path(out_dir)
    p = cfg.prepare
    recipe = Recipe.from_config(cfg, tokenize=tokenize)
    footer = pq.ParquetFile(examples.path).metadata
    total = footer.num_rows
    decoded_bytes = sum(footer.row_group(i).total_byte_size for i in range(footer.num_row_groups))
    workers = p.workers or default_workers()
    if total <= 2 * blockio.BLOCK_ROWS:
        workers = 1  # not worth starting processes for
    if not tokenize:
        tokenizer = None
    elif tokenizer is None:
        raise ValueError("prepare tokenizes with the model's tokenizer: pass tokenizer= "
                         "(hammer_core.model.tokenizer.load_tokenizer(cfg.model)), or tokenize=False")

    with blockio._system_memory_pool(), ExitStack() as stack, blockio._gc_paused():
        o = cfg.orchestration
        runner = stack.enter_context(_DaskRunner(recipe, tokenizer, o.dask_address, o.dask_workers) if dask
                                     else _Runner(recipe, tokenizer, workers))
        outputs = stack.enter_context(_Outputs(cfg, examples, out, tokenize))
        facts = {s: _Facts(cfg.prepare_seed(), s, recipe.variants) for s in SPLITS}
        pool = ToolPool() if recipe.hard_negatives else None
        cache = ToolCache()
        # a small input stays in memory for pass 2
        sources = _Sources(examples.path, decoded_bytes, p.irrelevance_ratio, p.hard_negative_ratio)
        # an input kept whole anyway is read as fast as the reader goes (it overlaps the first
        # blocks' one-off work: tool registration, token cache warm-up)
        reader = _InputBlocks(examples.path, 1 << 20 if sources.keep_all else 2, recipe)

        for result in _one_behind(runner.map(reader.tasks())):  # pass 1: the original rows
            outputs.add(result)
            for split, a in result.analysis.items():
                facts[split].add(a)
            start, table = reader.done()  # this result's block
            if recipe.variants:
                sources.add(start, table, result.analysis, facts)
            if pool is not None:
                for text in result.new_tools.values():
                    pool.add(cache.get(text))  # type: ignore[arg-type]

        plans, irr_summary = _plan_synthesis(facts, p, cfg.prepare_seed(), pool)
        if plans:  # pass 2: the synthesized rows
            for result in _one_behind(runner.map(_synth_tasks(sources.blocks(plans), plans))):
                outputs.add(result)
        tokenization = runner.tokenization()
        artifacts = outputs.finish()

    totals = outputs.totals
    summary = {
        "input_rows": total,
        "train": totals["train"].stats(),
        "eval": totals["eval"].stats(),
        "irrelevance": irr_summary,
        "rejected_too_long": outputs.n_rejected,
        "trimmed": totals["train"].counts["trimmed"] + totals["eval"].counts["trimmed"],
        "train_tokens": totals["train"].token_stats(),
        "eval_tokens": totals["eval"].token_stats(),
        "tokenization": tokenization,
    }
    atomic_write_json(out / "summary.json", summary)
    return PrepareResult(*artifacts, summary)  # type: ignore[arg-type]


class _InputBlocks:
    """Pass 1's tasks: the input's blocks, read ahead on a thread that also hashes their ids
    (:meth:`Recipe.hashes`, no GIL held: beside the work on the previous block), and the blocks
    handed out whose results are not back yet (they come back in order: :meth:`done`)."""

    def __init__(self, path: Path, ahead: int, recipe: Recipe) -> None:
        self.path, self.ahead, self.recipe = path, ahead, recipe
        self.in_flight: deque[tuple[int, pa.Table]] = deque()

    def tasks(self) -> Iterator[tuple]:
        for start, table, hashed in blockio._blocks(self.path, ahead=self.ahead, also=self.recipe.hashes):
            self.in_flight.append((start, table))
            yield "originals", table, start, hashed

    def done(self) -> tuple[int, pa.Table]:
        """(start, table) of the oldest block handed out: the one whose result came back."""
        return self.in_flight.popleft()


class _Outputs:
    """The stage's output files, fed each block's results in order (a context manager: the
    files not finished are removed on the way out), with the running totals of each split."""

    def __init__(self, cfg: PipelineConfig, examples: Artifact, out: Path, tokenize: bool) -> None:
        p = cfg.prepare
        extra = {"seed": cfg.prepare_seed(), "prepare": p.model_dump(exclude={"workers", "seed"})}
        tok_extra = {"tokenizer": cfg.model.tokenizer or cfg.model.name_or_path, "max_length": p.max_length,
                     "prompt_format": p.prompt_format}
        kinds = [("train", EXAMPLE_SCHEMA, "examples", extra), ("eval", EXAMPLE_SCHEMA, "examples", extra)]
        if tokenize:
            kinds += [("train_tokens", TOKENS_SCHEMA, "tokens", tok_extra),
                      ("eval_tokens", TOKENS_SCHEMA, "tokens", tok_extra)]
        kinds.append(("rejects", REJECT_SCHEMA, "rejects", None))
        self.tokenize = tokenize
        self.writers: dict[str, blockio._GroupedWriter] = {}
        try:
            for name, schema, kind, ex in kinds:
                self.writers[name] = blockio._output_writer(out / f"{name}.parquet", schema, kind, [examples], ex,
                                                            p.compression)
        except BaseException:
            self.abort()
            raise
        self.n_rejected = 0
        self.totals = {s: _Totals() for s in SPLITS}

    def add(self, result: BlockResult) -> None:
        for split, o in result.resolve().outputs.items():
            self.writers[split].add(o.examples)
            if o.tokens is not None:
                self.writers[f"{split}_tokens"].add(o.tokens)
            if o.rejects:  # written as they come: memory does not grow with the rejects
                self.writers["rejects"].add(pa.Table.from_pylist(o.rejects, schema=REJECT_SCHEMA))
                self.n_rejected += len(o.rejects)
            self.totals[split].add(o)

    def finish(self) -> tuple[Artifact, Artifact, Artifact | None, Artifact | None, Artifact]:
        """The outputs' last row groups, footers and hashes (made at once, one thread each); a
        tokens file's parent is its split's examples file."""
        w = self.writers
        for writer in w.values():
            writer.seal_async()
        train, eval_ = w["train"].finish(), w["eval"].finish()
        train_tokens = eval_tokens = None
        if self.tokenize:
            w["train_tokens"].writer.parents = [train]
            w["eval_tokens"].writer.parents = [eval_]
            train_tokens, eval_tokens = w["train_tokens"].finish(), w["eval_tokens"].finish()
        return train, eval_, train_tokens, eval_tokens, w["rejects"].finish()

    def abort(self) -> None:
        for writer in reversed(self.writers.values()):  # after finish(): a no-op
            writer.abort()

    def __enter__(self) -> "_Outputs":
        return self

    def __exit__(self, *_: Any) -> None:
        self.abort()


class _Totals:
    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.by_variant: Counter = Counter()
        self.by_task: Counter = Counter()
        self.max_len = 0

    def add(self, o: SplitOutput) -> None:
        self.counts.update(o.counts)
        self.by_variant.update(o.by_variant)
        self.by_task.update(o.by_task)
        self.max_len = max(self.max_len, o.max_len)

    def stats(self) -> dict[str, Any]:
        rows = self.counts["rows"]
        return {"rows": rows, "no_call_share": round(self.counts["no_call"] / max(1, rows), 4),
                "by_variant": dict(sorted(self.by_variant.items())),
                "by_task": dict(sorted(self.by_task.items()))}

    def token_stats(self) -> dict[str, Any]:
        rows = self.counts["rows"]
        return {"rows": rows, "total": self.counts["tokens"], "max_len": self.max_len,
                "mean_len": round(self.counts["tokens"] / max(1, rows), 1)}


def load_prepared(out_dir: str | Path) -> PrepareResult:
    from hammer_core.artifacts import open_artifact
    out = Path(out_dir)
    summary_path = out / "summary.json"
    if not summary_path.exists():
        raise FileNotFoundError(f"{out} is not a prepare output (no summary.json); run `hammer prepare` first")
    return PrepareResult(*(open_artifact(out / f"{n}.parquet") for n in
                           ("train", "eval", "train_tokens", "eval_tokens", "rejects")),
                         summary=json.loads(summary_path.read_text()))


__all__ = ["PrepareResult", "default_workers", "load_prepared", "prepare"]
