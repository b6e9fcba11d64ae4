"""The export stage: "1 + N" -- one base model, one standard PEFT LoRA adapter per task.

Each task's gated CGC-LoRA experts collapse into one ordinary LoRA (see
:mod:`hammer_core.cgc_lora.export`). Output folder::

    adapters/<task>/adapter_config.json + adapter_model.safetensors   (plain PEFT format)
    tokenizer/
    base_model/                       (tiny preset only: the random-init base they apply to)
    merged/<task>/                    (``hammer export --merged``: the task merged into the base,
                                       a plain HF model folder with its tokenizer)
    export_manifest.json              {"base_model", "tasks", "adapters": {task: "adapters/<task>"},
                                       "merged"?: {task: "merged/<task>"}}

``peft.PeftModel.from_pretrained(base, "adapters/<task>")`` loads any of them; multi-LoRA
servers can serve all N next to one base.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hammer_core.artifacts import atomic_write_json
from hammer_core.cgc_lora import export_task_adapter, save_merged_task
from hammer_core.config import ConfigError
from hammer_core.evaluation import load_trained
from hammer_core.paths import safe_dirname, task_dirnames  # noqa: F401  (safe_dirname re-exported)

MANIFEST = "export_manifest.json"


@dataclass
class ExportResult:
    out_dir: Path
    manifest: dict[str, Any]


def export_adapters(train_dir: str | Path, out_dir: str | Path, *, merged: bool = False) -> ExportResult:
    """One standard PEFT LoRA adapter per task (``adapters/<task>``) beside the base reference and
    the tokenizer; with ``merged``, also each task merged into the base weights as a plain HF
    model folder (``merged/<task>``: no PEFT needed to serve it, at the base model's size)."""
    train_dir, out = Path(train_dir), Path(out_dir)
    summary = json.loads((train_dir / "train_summary.json").read_text())
    model, tokenizer = load_trained(train_dir)
    try:  # before anything is written: two tasks must not share one adapter folder
        dirnames = task_dirnames(model.config.tasks)
    except ValueError as err:
        raise ConfigError(f"cannot export {train_dir}: {err}") from None
    out.mkdir(parents=True, exist_ok=True)

    base_ref = summary["base_model"]
    if (train_dir / "base_model").exists():  # tiny preset: ship the exact base beside the adapters
        shutil.copytree(train_dir / "base_model", out / "base_model", dirs_exist_ok=True)
        base_ref = "base_model"  # relative to the export folder
    tokenizer.save_pretrained(out / "tokenizer")

    adapters = {}
    for task in model.config.tasks:
        rel = f"adapters/{dirnames[task]}"
        export_task_adapter(model, task, out / rel, base_model_name_or_path=base_ref)
        adapters[task] = rel
    manifest = {"format": "peft-lora", "base_model": base_ref, "tasks": model.config.tasks,
                "adapters": adapters, "tokenizer": "tokenizer",
                "rank": (model.config.n_common + model.config.n_specific) * model.config.r_expert}
    if merged:
        manifest["merged"] = {}
        for task in model.config.tasks:
            rel = f"merged/{dirnames[task]}"
            save_merged_task(model, task, out / rel)
            tokenizer.save_pretrained(out / rel)  # a self-contained model folder
            manifest["merged"][task] = rel
    atomic_write_json(out / MANIFEST, manifest)
    return ExportResult(out, manifest)


def load_exported_base(export_dir: str | Path, dtype: str = "float32"):
    """(base model without any adapter, tokenizer, manifest) of an export folder."""
    from transformers import AutoTokenizer

    from hammer_core.modeling import load_saved_base

    export_dir = Path(export_dir)
    manifest = json.loads((export_dir / MANIFEST).read_text())
    base_ref = manifest["base_model"]
    local = export_dir / base_ref
    base = load_saved_base(local if local.exists() else base_ref, dtype)
    base.eval()
    return base, AutoTokenizer.from_pretrained(str(export_dir / manifest["tokenizer"])), manifest


def load_exported(export_dir: str | Path, dtype: str = "float32"):
    """(PeftModel with every task adapter loaded, tokenizer, manifest) from an export folder."""
    from peft import PeftModel

    export_dir = Path(export_dir)
    base, tokenizer, manifest = load_exported_base(export_dir, dtype)
    tasks = manifest["tasks"]
    model = PeftModel.from_pretrained(base, str(export_dir / manifest["adapters"][tasks[0]]),
                                      adapter_name=tasks[0])
    for task in tasks[1:]:
        model.load_adapter(str(export_dir / manifest["adapters"][task]), adapter_name=task)
    model.eval()
    return model, tokenizer, manifest
