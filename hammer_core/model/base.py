"""Loading base models and tokenizers: the tiny built-in preset or any Hugging Face causal LM.

``model.name_or_path: hammer-tiny-qwen2`` (the default) builds a small Qwen2-architecture
model with random init from a config, with the BPE tokenizer this project trains on its own
text and ships in ``data/tokenizer``. A packaged preset (``smollm2-135m``) or a ``.gguf`` file
is converted once to a cached safetensors folder (:mod:`hammer_core.model.presets`). Any other
value is handed to ``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained``
(a hub id such as ``Qwen/Qwen2.5-Coder-1.5B-Instruct`` or a local folder); ``trust_remote_code``
stays off unless the config turns it on, and weights load from safetensors only.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import (AutoModelForCausalLM, AutoTokenizer, PreTrainedModel,
                          PreTrainedTokenizerBase, PreTrainedTokenizerFast, Qwen2Config,
                          Qwen2ForCausalLM)

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

TINY_ARCH = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True,
                 rope_theta=10000.0)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def is_tiny(cfg: ModelConfig) -> bool:
    return cfg.name_or_path == TINY_MODEL


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


def build_tiny_model(vocab_size: int, seed: int, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """A small random-init Qwen2: same code paths as the real thing, trains in seconds on CPU."""
    cfg = Qwen2Config(vocab_size=vocab_size, **TINY_ARCH)
    gen = torch.random.fork_rng()
    with gen:
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(cfg)
    return model.to(dtype)


def load_base_model(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase, seed: int = 0) -> PreTrainedModel:
    dtype = DTYPES[cfg.dtype]
    if is_tiny(cfg):
        model = build_tiny_model(len(tokenizer), seed, dtype)
    else:
        try:
            model = AutoModelForCausalLM.from_pretrained(
                resolve(cfg.name_or_path), dtype=dtype, trust_remote_code=cfg.trust_remote_code,
                revision=cfg.revision, use_safetensors=True, local_files_only=_offline())
        except (OSError, ValueError) as err:
            raise ModelLoadError(_load_hint("model", cfg.name_or_path, err)) from err
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def load_saved_base(path: str | Path, dtype: str = "float32") -> PreTrainedModel:
    """A base model saved by the train stage (tiny preset), a preset, a GGUF file, or any
    folder or hub id ``from_pretrained`` loads."""
    return AutoModelForCausalLM.from_pretrained(resolve(str(path)), dtype=DTYPES[dtype], use_safetensors=True)


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
