"""Loading what the pipeline made: a train folder (CGC-LoRA) or an export folder (base + N PEFT adapters).

The eval stage, the export stage and the served model all load models through here, so no stage
imports another to get at its outputs.
"""

from __future__ import annotations

import json
from pathlib import Path

#: The export folder's manifest: tasks, adapters, tokenizer and base model (see :mod:`.export`).
EXPORT_MANIFEST = "export_manifest.json"


def load_trained_base(train_dir: str | Path, dtype: str = "float32"):
    """(base model without any adapter, tokenizer) of a train stage output folder."""
    from hammer_core.model.base import load_saved_base  # torch + transformers: when used
    from hammer_core.model.tokenizer import load_tiny_tokenizer

    train_dir = Path(train_dir)
    summary = json.loads((train_dir / "train_summary.json").read_text())
    tok_dir = train_dir / "tokenizer"
    if (tok_dir / "tokenizer.json").exists() and summary["base_model"].endswith("base_model"):
        tokenizer = load_tiny_tokenizer(tok_dir)
    else:
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    base = load_saved_base(summary["base_model"], dtype)
    base.eval()
    return base, tokenizer


def load_trained(train_dir: str | Path, dtype: str = "float32"):
    """(CGC-LoRA model, tokenizer) from a train stage output folder."""
    from hammer_core.model.cgc_lora import load_cgc_lora

    base, tokenizer = load_trained_base(train_dir, dtype)
    model = load_cgc_lora(base, Path(train_dir) / "adapter")
    model.eval()
    return model, tokenizer


def load_exported_base(export_dir: str | Path, dtype: str = "float32"):
    """(base model without any adapter, tokenizer, manifest) of an export folder."""
    from transformers import AutoTokenizer

    from hammer_core.model.base import load_saved_base

    export_dir = Path(export_dir)
    manifest = json.loads((export_dir / EXPORT_MANIFEST).read_text())
    base_ref = manifest["base_model"]
    local = export_dir / base_ref
    base = load_saved_base(local if local.exists() else base_ref, dtype)
    base.eval()
    tokenizer = AutoTokenizer.from_pretrained(str(export_dir / manifest["tokenizer"]))
    if manifest.get("chat_template"):  # exported with the training prompt as its template
        from hammer_core.data.tokenization import RENDERS_TRAINING_PROMPT
        setattr(tokenizer, RENDERS_TRAINING_PROMPT, True)
    return base, tokenizer, manifest


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


__all__ = ["EXPORT_MANIFEST", "load_exported", "load_exported_base", "load_trained", "load_trained_base"]
