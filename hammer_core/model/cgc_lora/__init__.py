"""CGC-LoRA: Customized Gate Control LoRA, a task-gated mixture of LoRA experts shaped like a PEFT method.

Each adapted linear layer holds ``n_common`` shared experts plus ``n_specific`` experts per task;
for a row of task ``t``::

    h = W0 x + (alpha / r) * sum_{i in common ∪ specific(t)} w_{t,i} B_i A_i x
    w_t = softmax over the admissible experts of G(embed(t))

"1 + N" export: with the task fixed, its admissible experts collapse into one ordinary LoRA of
rank ``(n_common + n_specific) * r`` (gate weights and scaling baked into ``A``), so one base
model plus N standard PEFT adapters reproduce the multi-task model exactly.

Typical use::

    cfg = CGCLoraConfig(tasks=["single", "parallel", "irrelevance"])
    model = inject_cgc_lora(hf_causal_lm, cfg)
    out = model(input_ids=ids, labels=ids, task_ids=["single", "parallel"])
    save_cgc_lora(model, "ckpt/")
    export_task_adapter(model, "single", "adapters/single", base_model_name_or_path="Qwen/...")

Ablation baselines from the same hyper-parameters (each a special case of the same layer):
``CGCLoraConfig.for_variant("multitask_lora" | "per_task_lora", tasks=..., n_common=..., ...)``.

``transformers.Trainer`` works unchanged: emit ``task_ids`` from the data collator next to
``input_ids`` / ``labels`` (``CGCLoraModel.forward`` names it, so ``remove_unused_columns``
keeps it).
"""

from .config import VARIANTS, CGCLoraConfig
from .export import (
    export_task_adapter,
    load_cgc_lora,
    merge_task_into_base,
    save_cgc_lora,
    save_merged_task,
    task_lora_weights,
)
from .layer import CGCGate, CGCLoraLinear, TaskContext
from .model import CGCLoraModel, inject_cgc_lora

__all__ = [
    "CGCGate",
    "CGCLoraConfig",
    "CGCLoraLinear",
    "CGCLoraModel",
    "TaskContext",
    "VARIANTS",
    "export_task_adapter",
    "inject_cgc_lora",
    "load_cgc_lora",
    "merge_task_into_base",
    "save_cgc_lora",
    "save_merged_task",
    "task_lora_weights",
]
