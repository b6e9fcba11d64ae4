"""The pipeline's stages as plain functions: (config, input folders) -> output folder.

The ``hammer`` CLI subcommands and the Prefect tasks both call exactly these, so a stage
behaves the same from a shell, from a flow run and from a test. Every stage writes into its
own folder under ``output_dir`` (``ingest/``, ``prepare/``, ``train/``, ``export/``,
``eval/``, ``register/``) and reads its inputs from the folders of earlier stages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hammer_core.config import ConfigError, PipelineConfig

STAGES = ("ingest", "prepare", "train", "export", "eval", "register")


def ingest(cfg: PipelineConfig, out_dir: Path):
    from hammer_core.ingest import SourceSpec, ingest as run

    if not cfg.data.sources:
        raise ConfigError("nothing to ingest: data.sources is empty (give --input or a config with sources)")
    return run([SourceSpec.from_config(s) for s in cfg.data.sources], Path(out_dir))


def prepare(cfg: PipelineConfig, ingest_dir: Path, out_dir: Path):
    from hammer_core.artifacts import open_artifact
    from hammer_core.prepare import prepare as run

    src = Path(ingest_dir)
    return run(cfg, open_artifact(src / "examples.parquet" if src.is_dir() else src), Path(out_dir))


def train(cfg: PipelineConfig, prepare_dir: Path, out_dir: Path, progress: bool = True):
    from hammer_core.artifacts import open_artifact
    from hammer_core.training import train as run

    return run(cfg, open_artifact(Path(prepare_dir) / "train_tokens.parquet"), Path(out_dir), progress=progress)


def export(train_dir: Path, out_dir: Path):
    from hammer_core.adapters import export_adapters

    return export_adapters(Path(train_dir), Path(out_dir))


def evaluate(cfg: PipelineConfig, train_dir: Path, prepare_dir: Path, out_dir: Path, progress: bool = True):
    from hammer_core.artifacts import open_artifact
    from hammer_core.evaluation import evaluate as run

    prep = Path(prepare_dir)
    return run(cfg, Path(train_dir), open_artifact(prep / "eval.parquet"), open_artifact(prep / "eval_tokens.parquet"),
               Path(out_dir), progress=progress)


def register(cfg: PipelineConfig, run_dir: Path, out_dir: Path | None = None) -> dict[str, Any]:
    from hammer_core.registry import register as run

    d = Path(run_dir)
    missing = [s for s in STAGES[:-1] if not (d / s).is_dir()]
    if missing:
        raise FileNotFoundError(f"{d} lacks the stage folders {missing}; run the earlier stages first")
    return run(cfg, ingest_dir=d / "ingest", prepare_dir=d / "prepare", train_dir=d / "train",
               export_dir=d / "export", eval_dir=d / "eval", out_dir=Path(out_dir or d / "register"))
