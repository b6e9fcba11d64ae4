"""The eval stage: greedy decoding on the held-out split, parsing, and call-level metrics.

Metrics (``metrics.json``):

* ``exact_match`` -- the predicted calls equal the target calls (names and arguments; the
  order of parallel calls does not matter), over all rows;
* ``call_accuracy`` -- exact match over rows whose target has calls;
* ``irrelevance_accuracy`` -- share of "no call" rows (target ``[]``) where the model made no
  call. As in BFCL, output that does not parse as calls counts as no call; how often that
  happened is reported as ``parse_failure_rate`` so it cannot hide;
* per-task exact match (``exact_match/<task>``).

Predictions go to ``predictions.parquet`` (id, task, target, raw output, parsed calls, verdict).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from hammer_core.artifacts import Artifact, atomic_write_json, write_table
from hammer_core.cgc_lora import load_cgc_lora
from hammer_core.config import PipelineConfig
from hammer_core.modeling import load_saved_base, load_tiny_tokenizer
from hammer_core.schema import dumps

PRED_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("task", pa.string(), nullable=False),
    pa.field("target", pa.string(), nullable=False),
    pa.field("output", pa.string(), nullable=False),
    pa.field("predicted", pa.string(), nullable=True),  # canonical calls JSON; null if unparsable
    pa.field("correct", pa.bool_(), nullable=False),
], metadata={"hammer.kind": "predictions"})

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


def parse_calls(text: str) -> list[dict[str, Any]] | None:
    """Calls from raw model output (fenced or not, with stray text); None if nothing parses."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)]
    start, end = text.find("["), text.rfind("]")
    if start != -1 and end > start:
        candidates.append(text[start: end + 1])
    candidates.append(text)
    for cand in candidates:
        try:
            obj = json.loads(cand.strip())
        except (json.JSONDecodeError, ValueError):
            continue
        if isinstance(obj, dict):
            obj = [obj]
        if isinstance(obj, list) and all(isinstance(c, dict) and isinstance(c.get("name"), str)
                                         and isinstance(c.get("arguments", {}), dict) for c in obj):
            return [{"name": c["name"], "arguments": c.get("arguments", {})} for c in obj]
    return None


def calls_key(calls: list[dict[str, Any]]) -> list[str]:
    """Order-free canonical form of a list of calls."""
    return sorted(dumps({"name": c["name"], "arguments": c["arguments"]}) for c in calls)


def score(target: list[dict[str, Any]], predicted: list[dict[str, Any]] | None) -> bool:
    return calls_key(target) == calls_key(predicted or [])


def compute_metrics(records: list[dict[str, Any]]) -> dict[str, float]:
    """Metrics from prediction records (``task``, ``target``, ``predicted``, ``correct``)."""
    n = len(records)
    rel = [r for r in records if r["target"] != "[]"]
    irr = [r for r in records if r["target"] == "[]"]
    m: dict[str, float] = {
        "eval_rows": n,
        "exact_match": sum(r["correct"] for r in records) / n if n else 0.0,
        "call_accuracy": sum(r["correct"] for r in rel) / len(rel) if rel else 0.0,
        "irrelevance_accuracy": sum(r["correct"] for r in irr) / len(irr) if irr else 0.0,
        "parse_failure_rate": sum(r["predicted"] is None for r in records) / n if n else 0.0,
    }
    by_task: dict[str, list[bool]] = defaultdict(list)
    for r in records:
        by_task[r["task"]].append(r["correct"])
    for task, vals in sorted(by_task.items()):
        m[f"exact_match/{task}"] = sum(vals) / len(vals)
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in m.items()}


@dataclass
class EvalResult:
    metrics: dict[str, Any]
    predictions: Artifact


def load_trained(train_dir: str | Path, dtype: str = "float32"):
    """(CGC-LoRA model, tokenizer) from a train stage output folder."""
    train_dir = Path(train_dir)
    summary = json.loads((train_dir / "train_summary.json").read_text())
    tok_dir = train_dir / "tokenizer"
    if (tok_dir / "tokenizer.json").exists() and summary["base_model"].endswith("base_model"):
        tokenizer = load_tiny_tokenizer(tok_dir)
    else:
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    base = load_saved_base(summary["base_model"], dtype)
    model = load_cgc_lora(base, train_dir / "adapter")
    model.eval()
    return model, tokenizer


@torch.no_grad()
def generate_calls(model, tokenizer, prompts: list[list[int]], task_ids: list[int],
                   max_new_tokens: int, batch_size: int, progress: bool = True) -> list[str]:
    """Batched greedy decoding (left padding, KV cache); returns the decoded new text."""
    outputs: list[str] = []
    pad = tokenizer.pad_token_id
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths together
    texts: dict[int, str] = {}
    for s in tqdm(range(0, len(order), batch_size), desc="eval", unit="batch", disable=not progress):
        idx = order[s: s + batch_size]
        width = max(len(prompts[i]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            p = torch.tensor(prompts[i], dtype=torch.long)
            ids[row, width - len(p):] = p
            mask[row, width - len(p):] = 1
        gen = model.generate(input_ids=ids, attention_mask=mask, task_ids=[task_ids[i] for i in idx],
                             max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad,
                             eos_token_id=tokenizer.eos_token_id)
        for row, i in enumerate(idx):
            texts[i] = tokenizer.decode(gen[row, width:], skip_special_tokens=True)
    outputs = [texts[i] for i in range(len(prompts))]
    return outputs


def evaluate(cfg: PipelineConfig, train_dir: str | Path, eval_rows: Artifact, eval_tokens: Artifact,
             out_dir: str | Path, progress: bool = True) -> EvalResult:
    out = Path(out_dir)
    model, tokenizer = load_trained(train_dir, cfg.model.dtype)
    tasks = model.config.tasks
    targets = {r["id"]: r["calls"] for r in pq.read_table(eval_rows.path, columns=["id", "calls"]).to_pylist()}
    toks = pq.read_table(eval_tokens.path).to_pylist()
    if cfg.eval.max_examples:
        toks = toks[: cfg.eval.max_examples]
    unknown = sorted({t["task"] for t in toks} - set(tasks))
    if unknown:
        raise ValueError(f"eval rows belong to tasks {unknown} that the adapter was not trained on "
                         f"(trained tasks: {tasks})")
    prompts = [t["input_ids"][: t["n_prompt"]] for t in toks]
    task_ids = [tasks.index(t["task"]) for t in toks]
    texts = generate_calls(model, tokenizer, prompts, task_ids, cfg.eval.max_new_tokens,
                           cfg.eval.batch_size, progress)

    records = []
    for t, text in zip(toks, texts):
        target = targets[t["id"]]
        pred = parse_calls(text)
        records.append({"id": t["id"], "task": t["task"], "target": target, "output": text,
                        "predicted": dumps(pred) if pred is not None else None,
                        "correct": score(json.loads(target), pred)})
    metrics = compute_metrics(records)
    preds = write_table(pa.Table.from_pylist(records, schema=PRED_SCHEMA), out / "predictions.parquet",
                        kind="predictions", parents=[eval_rows, eval_tokens])
    atomic_write_json(out / "metrics.json", metrics)
    return EvalResult(metrics, preds)
