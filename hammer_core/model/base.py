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

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase, Qwen2Config, Qwen2ForCausalLM

from hammer_core.config import TINY_MODEL, ModelConfig
from hammer_core.model.presets import ModelLoadError, resolve
from hammer_core.model.tokenizer import _load_hint, _offline


TINY_ARCH = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True,
                 rope_theta=10000.0)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def is_tiny(cfg: ModelConfig) -> bool:
    return cfg.name_or_path == TINY_MODEL


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
