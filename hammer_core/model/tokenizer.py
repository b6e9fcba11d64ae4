"""Loading tokenizers: the tiny preset's (shipped in ``data/tokenizer``), a packaged or GGUF
preset's (:mod:`hammer_core.model.presets`) or any Hugging Face tokenizer.

Kept apart from model loading (:mod:`hammer_core.model.base`) so that the data stages, which
only need a tokenizer, neither import the modeling code nor have it in their cache keys.
"""

from __future__ import annotations

import os
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from hammer_core.config import TINY_MODEL, ModelConfig
from hammer_core.model.presets import ModelLoadError, resolve
from hammer_core.paths import TINY_TOKENIZER_DIR

# ChatML, as Qwen2 instruct models use; generation stops at <|im_end|>.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def load_tokenizer(cfg: ModelConfig) -> PreTrainedTokenizerBase:
    name = cfg.tokenizer or cfg.name_or_path
    if name == TINY_MODEL:
        return load_tiny_tokenizer()
    try:
        tok = AutoTokenizer.from_pretrained(resolve(name), trust_remote_code=cfg.trust_remote_code,
                                            revision=cfg.revision, local_files_only=_offline())
    except (OSError, ValueError) as err:
        raise ModelLoadError(_load_hint("tokenizer", name, err)) from err
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_tiny_tokenizer(path: Path = TINY_TOKENIZER_DIR) -> PreTrainedTokenizerFast:
    if not (path / "tokenizer.json").exists():
        raise ModelLoadError(f"the tiny tokenizer is missing at {path}; rebuild it with "
                             "`python -m hammer_core.data.tiny_tokenizer`")
    tok = PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"),
                                  eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  bos_token=None, unk_token=None)
    tok.chat_template = CHATML_TEMPLATE
    return tok


def _offline() -> bool:
    """HF_HUB_OFFLINE read at call time (huggingface_hub reads it only once, at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _load_hint(what: str, name: str, err: Exception) -> str:
    local = Path(name).exists()
    hint = ("check that the folder holds a Hugging Face checkpoint (config.json, *.safetensors)"
            if local else
            "it is not a local folder, so it must come from the Hugging Face hub: check the "
            "name and your network (offline? set HF_HUB_OFFLINE=1 and use a local path), or use "
            f"model.name_or_path: {TINY_MODEL} for the built-in tiny model")
    return f"could not load {what} {name!r}: {hint}. ({type(err).__name__}: {str(err)[:300]})"
