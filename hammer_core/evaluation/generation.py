"""Batched greedy generation with a trained (CGC-LoRA) or exported (base + N PEFT adapters) model.

Left padding and the KV cache; each row is generated with its task's adapter (the task-ID gate of
CGC-LoRA, or the PEFT adapter of that task, switched per task group).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hammer_core.model.trained import load_exported, load_exported_base, load_trained, load_trained_base


def generate_calls(model, tokenizer, prompts: list[list[int]], task_ids: list[int] | None,
                   max_new_tokens: int, batch_size: int, progress: bool = True) -> list[str]:
    """Batched greedy decoding (left padding, KV cache); returns the decoded new text.

    ``task_ids`` routes a CGC-LoRA model's gate per row; None for a plain (PEFT) model.
    """
    import torch
    from tqdm.auto import tqdm

    pad = tokenizer.pad_token_id
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths together
    texts: dict[int, str] = {}
    with torch.no_grad():
        for s in tqdm(range(0, len(order), batch_size), desc="eval", unit="batch", disable=not progress):
            idx = order[s: s + batch_size]
            width = max(len(prompts[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                p = torch.tensor(prompts[i], dtype=torch.long)
                ids[row, width - len(p):] = p
                mask[row, width - len(p):] = 1
            extra = {"task_ids": [task_ids[i] for i in idx]} if task_ids is not None else {}
            gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id, **extra)
            for row, i in enumerate(idx):
                texts[i] = tokenizer.decode(gen[row, width:], skip_special_tokens=True)
    return [texts[i] for i in range(len(prompts))]


class Generator:
    """Greedy generation with a train folder (CGC-LoRA, task-ID gate) or an export folder (one
    PEFT LoRA adapter per task, switched per task group)."""

    def __init__(self, model_dir: str | Path, dtype: str = "float32", zero_shot: bool = False):
        """``zero_shot``: the base model the adapters were trained on, without them (the
        baseline every task is compared with); else the trained model."""
        model_dir = Path(model_dir)
        if (model_dir / "train_summary.json").exists():
            if zero_shot:
                self.model, self.tokenizer = load_trained_base(model_dir, dtype)
                from hammer_core.model.cgc_lora.export import CGC_CONFIG_NAME
                self.tasks: list[str] = json.loads((model_dir / "adapter" / CGC_CONFIG_NAME).read_text())["tasks"]
            else:
                self.model, self.tokenizer = load_trained(model_dir, dtype)
                self.tasks = list(self.model.config.tasks)
            self.kind = "base" if zero_shot else "cgc_lora"
        elif (model_dir / "export_manifest.json").exists():
            self.model, self.tokenizer, manifest = (load_exported_base if zero_shot else load_exported)(model_dir,
                                                                                                     dtype)
            self.tasks = list(manifest["tasks"])
            self.kind = "base" if zero_shot else "peft"
        else:
            raise FileNotFoundError(f"{model_dir} is neither a train output (train_summary.json) nor an "
                                    "export output (export_manifest.json)")
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def check_tasks(self, tasks: set[str], what: str) -> None:
        unknown = sorted(tasks - set(self.tasks))
        if unknown:
            raise ValueError(f"{what} belong to tasks {unknown} that the adapter was not trained on "
                             f"(trained tasks: {self.tasks})")

    def generate(self, prompts: list[list[int]], tasks: list[str], max_new_tokens: int, batch_size: int,
                 progress: bool = True) -> list[str]:
        self.check_tasks(set(tasks), "rows")
        if self.kind == "base":
            return generate_calls(self.model, self.tokenizer, prompts, None, max_new_tokens, batch_size, progress)
        if self.kind == "cgc_lora":
            return generate_calls(self.model, self.tokenizer, prompts, [self.tasks.index(t) for t in tasks],
                                  max_new_tokens, batch_size, progress)
        texts: list[str] = [""] * len(prompts)
        for task in sorted(set(tasks)):
            idx = [i for i, t in enumerate(tasks) if t == task]
            self.model.set_adapter(task)
            for i, text in zip(idx, generate_calls(self.model, self.tokenizer, [prompts[i] for i in idx], None,
                                                   max_new_tokens, batch_size, progress)):
                texts[i] = text
        return texts

    def prompt_ids(self, messages: list[dict[str, str]], tools: list[dict[str, Any]],
                   prompt_format: str = "hammer") -> list[int]:
        """The prompt ids of a request in ``prompt_format`` (``prepare.prompt_format``: what the model
        was trained on)."""
        from hammer_core.data.tokenization import prompt_text

        text = prompt_text(self.tokenizer, messages, tools, prompt_format)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]


__all__ = ["Generator", "generate_calls"]
