"""The prepare stage: split, irrelevance synthesis, masking, rendering and tokenization.

Input: the canonical ``examples.parquet`` from ingestion. Output folder:

* ``train.parquet`` / ``eval.parquet`` -- canonical rows (train: originals + irrelevance rows,
  masked per Hammer's recipe; eval: originals + irrelevance rows, never masked);
* ``train_tokens.parquet`` / ``eval_tokens.parquet`` -- token ids and prompt length;
* ``rejects.parquet`` -- rows over the token budget, with the reason;
* ``summary.json``.

The split is by row id (hashed with the seed), decided before any synthesis, so no
irrelevance or masked variant of an eval row can leak into training.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from hammer_core.artifacts import Artifact, atomic_write_json, write_table
from hammer_core.config import PipelineConfig
from hammer_core.formats import RowError
from hammer_core.irrelevance import synthesize_irrelevance
from hammer_core.masking import mask_rows
from hammer_core.modeling import load_tokenizer
from hammer_core.schema import REJECT_SCHEMA, dumps, examples_table
from hammer_core.tokenization import TOKENS_SCHEMA, tokenize_rows
from hammer_core.validation import validate_example


@dataclass
class PrepareResult:
    train: Artifact
    eval: Artifact
    train_tokens: Artifact
    eval_tokens: Artifact
    rejects: Artifact
    summary: dict[str, Any]


def is_eval(row_id: str, seed: int, fraction: float) -> bool:
    h = int.from_bytes(hashlib.sha256(f"{seed}:split:{row_id}".encode()).digest()[:8], "big")
    return h / 2**64 < fraction


def split_rows(rows: list[dict[str, Any]], seed: int, fraction: float) -> tuple[list, list]:
    train, evals = [], []
    for r in rows:
        (evals if is_eval(r["id"], seed, fraction) else train).append(r)
    return train, evals


def build_train_mix(rows: list[dict[str, Any]], cfg: PipelineConfig) -> list[dict[str, Any]]:
    p = cfg.prepare
    mix = rows + synthesize_irrelevance(rows, p.irrelevance_ratio, cfg.seed)
    return mask_rows(mix, p.mask_prob, cfg.seed, p.copies)


def build_eval_set(rows: list[dict[str, Any]], cfg: PipelineConfig) -> list[dict[str, Any]]:
    return rows + synthesize_irrelevance(rows, cfg.prepare.irrelevance_ratio, cfg.seed + 1)


def _check(rows: list[dict[str, Any]], stage: str) -> None:
    """Every synthesized row must still pass the ingestion validator; a failure is a bug."""
    for r in rows:
        try:
            validate_example(r)
        except RowError as err:
            raise AssertionError(f"{stage} produced an invalid row {r['id']}: "
                                 f"{err.reason}: {err.detail}") from err


def _stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "rows": len(rows),
        "no_call_share": round(sum(r["calls"] == "[]" for r in rows) / max(1, len(rows)), 4),
        "by_variant": dict(sorted(Counter(r["variant"] for r in rows).items())),
        "by_task": dict(sorted(Counter(r["task"] for r in rows).items())),
    }


def prepare(cfg: PipelineConfig, examples: Artifact, out_dir: str | Path) -> PrepareResult:
    out = Path(out_dir)
    rows = examples.read().to_pylist()
    train_rows, eval_rows = split_rows(rows, cfg.seed, cfg.prepare.eval_fraction)
    train_mix = build_train_mix(train_rows, cfg)
    eval_set = build_eval_set(eval_rows, cfg)
    _check(train_mix, "train mix")
    _check(eval_set, "eval set")

    tokenizer = load_tokenizer(cfg.model)
    train_tok, train_long = tokenize_rows(train_mix, tokenizer, cfg.prepare.max_length)
    eval_tok, eval_long = tokenize_rows(eval_set, tokenizer, cfg.prepare.max_length)
    too_long = {r["id"] for r, _ in train_long + eval_long}
    rejects = [{"source": r["source"], "location": f"{split}:{r['id']}", "reason": "too_long",
                "detail": detail, "raw": dumps({k: r[k] for k in ("id", "tools", "calls")})[:10_000]}
               for split, items in (("train", train_long), ("eval", eval_long)) for r, detail in items]

    train_mix = [r for r in train_mix if r["id"] not in too_long]
    eval_set = [r for r in eval_set if r["id"] not in too_long]

    extra = {"seed": cfg.seed, "prepare": cfg.prepare.model_dump()}
    train_art = write_table(examples_table(train_mix), out / "train.parquet", kind="examples",
                            parents=[examples], extra=extra)
    eval_art = write_table(examples_table(eval_set), out / "eval.parquet", kind="examples",
                           parents=[examples], extra=extra)
    tok_extra = {"tokenizer": cfg.model.tokenizer or cfg.model.name_or_path,
                 "max_length": cfg.prepare.max_length}
    train_tok_art = write_table(pa.Table.from_pylist(train_tok, schema=TOKENS_SCHEMA),
                                out / "train_tokens.parquet", kind="tokens", parents=[train_art], extra=tok_extra)
    eval_tok_art = write_table(pa.Table.from_pylist(eval_tok, schema=TOKENS_SCHEMA),
                               out / "eval_tokens.parquet", kind="tokens", parents=[eval_art], extra=tok_extra)
    rej_art = write_table(pa.Table.from_pylist(rejects, schema=REJECT_SCHEMA), out / "rejects.parquet",
                          kind="rejects", parents=[examples])

    lengths = [len(t["input_ids"]) for t in train_tok]
    summary = {
        "input_rows": len(rows),
        "train": _stats(train_mix),
        "eval": _stats(eval_set),
        "rejected_too_long": len(rejects),
        "train_tokens": {"rows": len(train_tok), "total": sum(lengths),
                         "max_len": max(lengths, default=0),
                         "mean_len": round(sum(lengths) / max(1, len(lengths)), 1)},
    }
    atomic_write_json(out / "summary.json", summary)
    return PrepareResult(train_art, eval_art, train_tok_art, eval_tok_art, rej_art, summary)


def load_prepared(out_dir: str | Path) -> PrepareResult:
    from hammer_core.artifacts import open_artifact
    out = Path(out_dir)
    summary_path = out / "summary.json"
    if not summary_path.exists():
        raise FileNotFoundError(f"{out} is not a prepare output (no summary.json); run `hammer prepare` first")
    return PrepareResult(*(open_artifact(out / f"{n}.parquet") for n in
                           ("train", "eval", "train_tokens", "eval_tokens", "rejects")),
                         summary=json.loads(summary_path.read_text()))
