"""The eval stage: the held-out split, the robustness study and BFCL, generated and scored.

The eval stage (:func:`evaluate`)
    Batched greedy decoding (left padding, KV cache) with the trained CGC-LoRA model or an
    exported 1 + N PEFT model (each row uses its task's adapter), then, in ``metrics.json``:

    * ``exact_match`` -- the predicted calls equal the target calls (names and arguments; the
      order of parallel calls does not matter), over all rows; ``exact_match/<task>`` per task;
    * ``call_accuracy`` -- exact match over rows whose target has calls;
    * ``irrelevance_accuracy`` -- share of "no call" rows (``no_call_rows`` of them) where the
      model made no call;
    * ``parse_failure_rate`` -- share of outputs that did not parse (they count as no call);
    * ``ast_accuracy`` -- BFCL's AST verdict on the held-out rows (``ast_accuracy/<task>``);
    * ``name_f1``, ``arg_f1`` (with precision and recall) -- Hammer's metrics;
    * ``robustness/<mode>/{original,renamed,drop}`` -- Hammer's robustness study
      (:mod:`hammer_core.evaluation.robustness`, ``eval.robustness``), on AST accuracy;
    * ``bfcl/<category>`` and BFCL's summaries (``bfcl/summary/non_live_ast``...) when
      ``eval.bfcl_categories`` is set (prompts in ``prepare.prompt_format``, as trained; adapter
      ``eval.bfcl_task``);
    * ``base/<metric>`` -- with ``eval.baseline``, the same held-out (and BFCL) metrics of the
      base model zero-shot, on the same prompts: what the fine-tuning bought.

    Files: ``predictions.parquet`` (id, task, target, raw output, parsed calls, verdicts),
    ``robustness.parquet`` / ``bfcl_predictions.parquet`` / ``base_predictions.parquet`` when those
    run, and ``report.md``
    with PNG plots (:mod:`hammer_core.evaluation.reports`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from hammer_core.artifacts import Artifact, atomic_write_json, write_table
from hammer_core.config import PipelineConfig
from hammer_core.evaluation import bfcl, reports, robustness
from hammer_core.evaluation.generation import Generator
from hammer_core.evaluation.parsing import parse_calls
from hammer_core.evaluation.scoring import as_bfcl, bfcl_summaries, category_table, compute_metrics, judge
from hammer_core.schema import dumps

PRED_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("task", pa.string(), nullable=False),
    pa.field("target", pa.string(), nullable=False),
    pa.field("output", pa.string(), nullable=False),
    pa.field("predicted", pa.string(), nullable=True),  # canonical calls JSON; null if unparsable
    pa.field("correct", pa.bool_(), nullable=False),  # exact match
    pa.field("ast_correct", pa.bool_(), nullable=False),  # BFCL AST verdict
    pa.field("ast_rule", pa.string(), nullable=True),  # BFCL error type when wrong
], metadata={"hammer.kind": "predictions"})

ROBUSTNESS_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("parent_id", pa.string(), nullable=False),
    pa.field("mode", pa.string(), nullable=False),
    pa.field("target", pa.string(), nullable=False),
    pa.field("output", pa.string(), nullable=False),
    pa.field("predicted", pa.string(), nullable=True),
    pa.field("correct", pa.bool_(), nullable=False),
    pa.field("ast_correct", pa.bool_(), nullable=False),
    pa.field("ast_rule", pa.string(), nullable=True),
], metadata={"hammer.kind": "predictions"})

BFCL_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("category", pa.string(), nullable=False),
    pa.field("output", pa.string(), nullable=False),
    pa.field("predicted", pa.string(), nullable=True),
    pa.field("valid", pa.bool_(), nullable=False),
    pa.field("rule", pa.string(), nullable=True),
    pa.field("detail", pa.string(), nullable=True),
], metadata={"hammer.kind": "predictions"})


@dataclass
class EvalResult:
    metrics: dict[str, Any]
    predictions: Artifact
    report: Path | None = None


def _records(rows: list[dict[str, Any]], texts: list[str]) -> list[dict[str, Any]]:
    out = []
    for row, text in zip(rows, texts):
        pred = parse_calls(text)
        exact, verdict = judge(row["id"], row["tools"], row["calls"], row.get("messages"), pred)
        out.append({"id": row["id"], "task": row["task"], "target": row["calls"], "output": text,
                    "predicted": dumps(pred) if pred is not None else None, "correct": exact,
                    "ast_correct": verdict.valid, "ast_rule": verdict.rule or None})
    return out


def _robustness(cfg: PipelineConfig, gen: Generator, rows: list[dict[str, Any]], base: list[dict[str, Any]],
                progress: bool) -> tuple[dict[str, dict[str, float]], list[dict[str, Any]]]:
    from hammer_core.data.tokenization import tokenize_rows

    limit = cfg.eval.robustness_max_examples
    rows = rows[:limit] if limit else rows
    original = {r["id"]: r["ast_correct"] for r in base}
    results: dict[str, dict[str, bool]] = {}
    records: list[dict[str, Any]] = []
    for mode in robustness.MODES:
        renamed = robustness.renamed_rows(rows, mode, cfg.seed)
        kept, _too_long = tokenize_rows(renamed, gen.tokenizer, cfg.prepare.max_length, cfg.prepare.prompt_format)
        by_id = {r["id"]: r for r in renamed}
        todo = [by_id[k["id"]] for k in kept]
        texts = gen.generate([k["input_ids"][: k["n_prompt"]] for k in kept], [r["task"] for r in todo],
                             cfg.eval.max_new_tokens, cfg.eval.batch_size, progress)
        recs = _records(todo, texts)
        results[mode] = {row["parent_id"]: rec["ast_correct"] for row, rec in zip(todo, recs)}
        records.extend({**{k: rec[k] for k in ("id", "target", "output", "predicted", "correct", "ast_correct",
                                                  "ast_rule")}, "parent_id": row["parent_id"], "mode": mode}
                       for row, rec in zip(todo, recs))
    return robustness.accuracy_drops(original, results), records


def _bfcl(cfg: PipelineConfig, gen: Generator, progress: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    task = cfg.eval.bfcl_task or gen.tasks[0]
    gen.check_tasks({task}, "eval.bfcl_task")
    budget = cfg.prepare.max_length
    records: list[dict[str, Any]] = []
    for cat in bfcl.resolve_categories(cfg.eval.bfcl_categories):
        entries = bfcl.load_category(cat)[: cfg.eval.bfcl_max_examples]
        prompts = [gen.prompt_ids(e.messages, bfcl.prompt_functions(e), cfg.prepare.prompt_format) for e in entries]
        fits = [i for i, p in enumerate(prompts) if len(p) <= budget]
        texts = dict(zip(fits, gen.generate([prompts[i] for i in fits], [task] * len(fits),
                                            cfg.eval.max_new_tokens, cfg.eval.batch_size, progress)))
        for i, e in enumerate(entries):
            if i not in texts:
                v, text, pred = bfcl.Verdict(False, "prompt_too_long",
                                             f"{len(prompts[i])} prompt tokens > prepare.max_length {budget}"), "", None
            else:
                text = texts[i]
                pred = parse_calls(text)
                v = bfcl.check_entry(e, as_bfcl(pred) if pred is not None else None)
            records.append({"id": e.id, "category": cat, "output": text,
                            "predicted": dumps(pred) if pred is not None else None,
                            "valid": v.valid, "rule": v.rule or None, "detail": v.detail or None,
                            "parse_failed": pred is None and i in texts})
    cats = category_table(records, "category")
    return {"task": task, "categories": cats, "summary": bfcl_summaries(cats)}, records


def evaluate(cfg: PipelineConfig, train_dir: str | Path, eval_rows: Artifact, eval_tokens: Artifact,
             out_dir: str | Path, progress: bool = True) -> EvalResult:
    """The eval stage: ``train_dir`` may also be an export folder (the 1 + N PEFT adapters)."""
    out = Path(out_dir)
    gen = Generator(train_dir, cfg.model.dtype)
    rows_by_id = {r["id"]: r for r in pq.read_table(
        eval_rows.path, columns=["id", "task", "messages", "tools", "calls"]).to_pylist()}
    toks = pq.read_table(eval_tokens.path).to_pylist()
    if cfg.eval.max_examples:
        toks = toks[: cfg.eval.max_examples]
    gen.check_tasks({t["task"] for t in toks}, "eval rows")
    rows = [rows_by_id[t["id"]] for t in toks]
    records = _held_out(cfg, gen, rows, toks, progress)
    metrics = compute_metrics(records)
    preds = write_table(pa.Table.from_pylist(records, schema=PRED_SCHEMA), out / "predictions.parquet",
                        kind="predictions", parents=[eval_rows, eval_tokens])

    study = None
    if cfg.eval.robustness and rows:
        study, rb_records = _robustness(cfg, gen, rows, records, progress)
        for mode, v in study.items():
            metrics.update({f"robustness/{mode}/{k}": v[k] for k in ("original", "renamed", "drop")})
        write_table(pa.Table.from_pylist(rb_records, schema=ROBUSTNESS_SCHEMA), out / "robustness.parquet",
                    kind="predictions", parents=[eval_rows, eval_tokens])
        atomic_write_json(out / "robustness.json", study)
    bfcl_result = None
    if cfg.eval.bfcl_categories:
        bfcl_result, bfcl_records = _bfcl(cfg, gen, progress)
        metrics.update({f"bfcl/{c}": v["accuracy"] for c, v in bfcl_result["categories"].items()})
        metrics.update({f"bfcl/summary/{k}": v for k, v in bfcl_result["summary"].items()})
        write_table(pa.Table.from_pylist(bfcl_records, schema=BFCL_SCHEMA), out / "bfcl_predictions.parquet",
                    kind="predictions")
        atomic_write_json(out / "bfcl.json", bfcl_result)

    if cfg.eval.baseline:
        del gen  # one model in memory at a time
        base = Generator(train_dir, cfg.model.dtype, zero_shot=True)
        base_records = _held_out(cfg, base, rows, toks, progress)
        metrics.update({f"{BASELINE}/{k}": v for k, v in compute_metrics(base_records).items()})
        write_table(pa.Table.from_pylist(base_records, schema=PRED_SCHEMA), out / "base_predictions.parquet",
                    kind="predictions", parents=[eval_rows, eval_tokens])
        if cfg.eval.bfcl_categories:
            base_bfcl, base_bfcl_records = _bfcl(cfg, base, progress)
            metrics.update({f"{BASELINE}/bfcl/{c}": v["accuracy"] for c, v in base_bfcl["categories"].items()})
            metrics.update({f"{BASELINE}/bfcl/summary/{k}": v for k, v in base_bfcl["summary"].items()})
            write_table(pa.Table.from_pylist(base_bfcl_records, schema=BFCL_SCHEMA),
                        out / "base_bfcl_predictions.parquet", kind="predictions")

    atomic_write_json(out / "metrics.json", metrics)
    report = reports.write_eval_report(out, metrics, robustness=study, bfcl=bfcl_result)
    return EvalResult(metrics, preds, report)

BASELINE = "base"  # metrics of the zero-shot base model are "base/<metric>" (eval.baseline)


def _held_out(cfg: PipelineConfig, gen: Generator, rows: list[dict[str, Any]], toks: list[dict[str, Any]],
              progress: bool) -> list[dict[str, Any]]:
    """Prediction records of ``gen`` on the held-out rows (prompts as prepared)."""
    texts = gen.generate([t["input_ids"][: t["n_prompt"]] for t in toks], [t["task"] for t in toks],
                         cfg.eval.max_new_tokens, cfg.eval.batch_size, progress)
    return _records(rows, texts)


__all__ = ["BASELINE", "EvalResult", "evaluate"]
