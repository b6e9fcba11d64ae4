"""The model loader: the tiny preset, any local Hugging Face folder, and clear offline errors."""

from __future__ import annotations

import json

import pytest
import torch

from hammer_core.config import ModelConfig
from hammer_core.model.base import ModelLoadError, load_base_model
from hammer_core.model.tokenizer import load_tokenizer
from hammer_core.data.prompts import render_target
from hammer_core.data.tokenization import prompt_text, tokenize_rows


def test_tiny_preset_is_a_seeded_qwen2_with_the_shipped_tokenizer():
    cfg = ModelConfig()
    tok = load_tokenizer(cfg)
    a, b = load_base_model(cfg, tok, seed=3), load_base_model(cfg, tok, seed=3)
    assert a.config.model_type == "qwen2"
    assert a.config.vocab_size == len(tok) == 8192
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    c = load_base_model(cfg, tok, seed=4)
    assert not torch.equal(a.model.embed_tokens.weight, c.model.embed_tokens.weight)
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    # byte-level BPE: any text round-trips
    text = "Zürich → 東京, ünïcödé [{\"name\": \"x\"}]"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_any_local_hf_folder_loads_through_the_same_path(tmp_path):
    tiny = ModelConfig()
    tok = load_tokenizer(tiny)
    model = load_base_model(tiny, tok, seed=0)
    model.save_pretrained(tmp_path, safe_serialization=True)
    tok.save_pretrained(tmp_path)
    assert list(tmp_path.glob("*.safetensors")) and not list(tmp_path.glob("*.bin"))

    cfg = ModelConfig(name_or_path=str(tmp_path))
    tok2 = load_tokenizer(cfg)
    model2 = load_base_model(cfg, tok2)
    assert tok2.chat_template == tok.chat_template
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, model2(ids).logits)


def test_hub_ids_fail_offline_with_a_hint(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="hub.*(network|offline)"):
        load_tokenizer(ModelConfig(name_or_path="Qwen/Qwen2.5-Coder-1.5B-Instruct"))
    with pytest.raises(ModelLoadError, match="check that the folder"):
        load_tokenizer(ModelConfig(name_or_path="/"))


def test_loss_only_on_the_answer_and_long_rows_rejected():
    tok = load_tokenizer(ModelConfig())
    tools = [{"name": "f", "description": "d", "parameters": {"type": "object", "properties": {}, "required": []}}]
    row = {"id": "a", "task": "t", "messages": [{"role": "user", "content": "call f"}],
           "tools": json.dumps(tools), "calls": json.dumps([{"name": "f", "arguments": {}}])}
    (kept,), too_long = tokenize_rows([row], tok, max_length=4096)
    assert not too_long
    answer = tok.decode(kept["input_ids"][kept["n_prompt"]:])
    assert answer == render_target([{"name": "f", "arguments": {}}]) + "<|im_end|>"
    prompt = tok.decode(kept["input_ids"][: kept["n_prompt"]])
    assert prompt == prompt_text(tok, row["messages"], tools)
    assert prompt.startswith("<|im_start|>user\n[BEGIN OF TASK INSTRUCTION]")
    assert prompt.endswith("<|im_start|>assistant\n")
    kept2, too_long2 = tokenize_rows([row], tok, max_length=len(kept["input_ids"]) - 1)
    assert kept2 == [] and "max_length" in too_long2[0][1]
