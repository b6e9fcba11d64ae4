"""Tokenize rendered examples: the loss falls on the answer only.

Each example becomes ``input_ids = prompt_ids + answer_ids + [eos]`` and ``n_prompt``, the
number of leading tokens that carry no loss (labels are -100 there). The prompt goes through
the tokenizer's chat template when it has one, so instruct models see their native format.

Length policy: an example longer than ``max_length`` is rejected with a reason (never cut:
a truncated target would teach the model broken JSON).
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
from transformers import PreTrainedTokenizerBase

from hammer_core.prompts import render_prompt, render_target

TOKENS_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("task", pa.string(), nullable=False),
    pa.field("input_ids", pa.list_(pa.int32()), nullable=False),
    pa.field("n_prompt", pa.int32(), nullable=False),
], metadata={"hammer.kind": "tokens"})


def prompt_text(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]],
                tools: list[dict[str, Any]]) -> str:
    """The full text the model is conditioned on (chat template applied when there is one)."""
    prompt = render_prompt(messages, tools)
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
    return prompt


def tokenize_rows(rows: list[dict[str, Any]], tokenizer: PreTrainedTokenizerBase,
                  max_length: int) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], str]]]:
    """Returns (tokenized rows, [(row, reason detail)] for rows over ``max_length``)."""
    prompts = [prompt_text(tokenizer, r["messages"], json.loads(r["tools"])) for r in rows]
    targets = [render_target(json.loads(r["calls"])) for r in rows]
    p_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"] if rows else []
    t_ids = tokenizer(targets, add_special_tokens=False)["input_ids"] if rows else []
    eos = tokenizer.eos_token_id
    kept, too_long = [], []
    for row, p, t in zip(rows, p_ids, t_ids):
        ids = p + t + [eos]
        if len(ids) > max_length:
            too_long.append((row, f"{len(ids)} tokens > max_length {max_length} "
                                  f"(prompt {len(p)}, answer {len(t) + 1})"))
            continue
        kept.append({"id": row["id"], "task": row["task"], "input_ids": ids, "n_prompt": len(p)})
    return kept, too_long
