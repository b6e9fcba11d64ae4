"""The pipeline's stages as plain functions: (config, input folders) -> output folder.

The ``hammer`` CLI subcommands and the Prefect tasks both call exactly these, so a stage
behaves the same from a shell, from a flow run and from a test. Every stage writes into its
own folder under ``output_dir`` (``ingest/``, ``prepare/``, ``train/``, ``export/``,
``eval/``, ``register/``) and reads its inputs from the folders of earlier stages. A stage
holds its folder's lock while it runs (:func:`~hammer_core.locking.stage_lock`: another run
on the same folder waits or stops, never interleaves) and starts by removing the temp files
that a killed earlier run left in its folder
(:func:`~hammer_core.artifacts.remove_stale_temp_files`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hammer_core.config import ConfigError, PipelineConfig

STAGES = ("ingest", "prepare", "train", "export", "eval", "register")


@contextlib.contextmanager
def _own(out_dir: Path) -> Iterator[Path]:
    """The stage's output folder, locked for the block, without the temp files of earlier runs
    that were killed; a stage that fails before writing anything leaves no new folder."""
    from hammer_core.artifacts import remove_stale_temp_files
    from hammer_core.locking import release_new_folder, stage_lock

    new = not Path(out_dir).exists()
    with stage_lock(out_dir) as locked:
        remove_stale_temp_files(out_dir)
        try:
            yield Path(out_dir)
        except BaseException:
            if new and locked == Path(out_dir).resolve():  # failed before writing: leave no folder
                release_new_folder(locked)
            raise


def _source_specs(cfg: PipelineConfig):
    from hammer_core.data.ingest import SourceSpec

    from hammer_core.paths import task_dirnames

    if not cfg.data.sources:
        raise ConfigError("nothing to ingest: data.sources is empty (give --input or a config with sources)")
    specs = [SourceSpec.from_config(s) for s in cfg.data.sources]
    named: dict[str, str] = {}  # source name -> path
    for spec in specs:
        if spec.name in named:
            raise ConfigError(f"data.sources: {named[spec.name]} and {spec.path} are both named {spec.name!r} "
                              "(a source is named after its file by default): give one a name of its own "
                              "(`name:` in the config's data.sources; with --input, rename a file)")
        named[str(spec.name)] = spec.path
    try:  # each task gets its own adapters/<task> folder at export: catch a clash before any work
        task_dirnames([str(s.task) for s in specs])
    except ValueError as err:
        raise ConfigError(f"data.sources: {err}") from None
    return specs


def ingest(cfg: PipelineConfig, out_dir: Path, shards: list[str] | None = None):
    """Ingest every source in one process, or (``shards``: one :func:`ingest_shard` output per
    source, in order) merge shards made elsewhere; the artifacts are the same bytes either way.
    Merged shards are deleted afterwards."""
    import shutil

    from hammer_core.data.ingest import ingest as ingest_sources, merge_shards

    specs = _source_specs(cfg)
    with _own(out_dir) as out:
        if shards is None:
            return ingest_sources(specs, out)
        res = merge_shards(specs, [Path(p) for p in shards], out)
        for folder in {Path(p).parent for p in shards}:
            if folder.name == SHARDS_DIR:
                shutil.rmtree(folder, ignore_errors=True)
        return res


SHARDS_DIR = ".shards"


def shard_path(cfg: PipelineConfig, index: int) -> Path:
    """Where the ingest shard of source ``index`` goes: ``<output_dir>/ingest/.shards/``."""
    return cfg.stage_dir("ingest") / SHARDS_DIR / f"{index:04d}.parquet"


def ingest_shard(cfg: PipelineConfig, index: int, out_path: Path | None = None) -> Path:
    """Read, normalize and validate source number ``index`` into a shard (for :func:`ingest`)."""
    from hammer_core.data.ingest import ingest_shard as ingest_one_source

    specs = _source_specs(cfg)
    if not 0 <= index < len(specs):
        raise ConfigError(f"source index {index} is out of range: data.sources has {len(specs)} entries")
    path = Path(out_path) if out_path is not None else shard_path(cfg, index)
    ingest_one_source(specs[index], path)
    return path


def prepare(cfg: PipelineConfig, ingest_dir: Path, out_dir: Path, dask: bool = False):
    from hammer_core.artifacts import open_artifact
    from hammer_core.data.prepare import prepare as prepare_examples
    from hammer_core.model.tokenizer import load_tokenizer  # the stage hands data code its tokenizer

    src = Path(ingest_dir)
    examples = open_artifact(src / "examples.parquet" if src.is_dir() else src)
    with _own(out_dir) as out:
        return prepare_examples(cfg, examples, out, dask=dask, tokenizer=load_tokenizer(cfg.model))


def train(cfg: PipelineConfig, prepare_dir: Path, out_dir: Path, progress: bool = True):
    from hammer_core.artifacts import open_artifact
    from hammer_core.train.trainer import train as run_training

    tokens = open_artifact(Path(prepare_dir) / "train_tokens.parquet")
    if cfg.train.track:  # an unreachable MLflow store: one clear error here, not from a worker's log
        from hammer_core.mlflow_store import preflight
        preflight(cfg)
    with _own(out_dir) as out:
        return run_training(cfg, tokens, out, progress=progress)


def export(train_dir: Path, out_dir: Path, merged: bool = False):
    from hammer_core.model.export import export_adapters

    with _own(out_dir) as out:
        return export_adapters(Path(train_dir), out, merged=merged)


def evaluate(cfg: PipelineConfig, train_dir: Path, prepare_dir: Path, out_dir: Path, progress: bool = True):
    from hammer_core.artifacts import open_artifact
    from hammer_core.evaluation.stage import evaluate as run_evaluation

    prep = Path(prepare_dir)
    eval_rows, eval_tokens = open_artifact(prep / "eval.parquet"), open_artifact(prep / "eval_tokens.parquet")
    with _own(out_dir) as out:
        return run_evaluation(cfg, Path(train_dir), eval_rows, eval_tokens, out, progress=progress)


def register(cfg: PipelineConfig, run_dir: Path, out_dir: Path | None = None) -> dict[str, Any]:
    from hammer_core.locking import run_lock
    from hammer_core.registry.registration import register as register_run

    d = Path(run_dir)
    missing = [s for s in STAGES[:-1] if not (d / s).is_dir()]
    if missing:
        raise FileNotFoundError(f"{d} lacks the stage folders {missing}; run the earlier stages first")
    with run_lock(d), _own(out_dir or d / "register") as out:  # what it reads and logs stays as it is
        return register_run(cfg, ingest_dir=d / "ingest", prepare_dir=d / "prepare", train_dir=d / "train",
                   export_dir=d / "export", eval_dir=d / "eval", out_dir=out)
