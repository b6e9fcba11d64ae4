"""GGUF checkpoints and model presets: converted once into a verified safetensors cache.

The GGUF file is written here with the ``gguf`` package (a 2-layer Llama with the project's
tiny tokenizer, some weights quantized as Q8_0 / Q4_1 like the shipped preset), so the tests
run in seconds and need nothing from a hub.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hammer_core.config import ModelConfig
from hammer_core.model import presets
from hammer_core.model.presets import MARKER, ModelLoadError, resolve
from hammer_core.model.base import load_base_model, load_saved_base
from hammer_core.model.tokenizer import CHATML_TEMPLATE, load_tokenizer
from hammer_core.paths import TINY_TOKENIZER_DIR

gguf = pytest.importorskip("gguf")

DIM, FFN, LAYERS, HEADS, KV_HEADS = 64, 128, 2, 4, 2


def write_tiny_gguf(path: Path, seed: int = 0) -> Path:
    """A small Llama GGUF file, as llama.cpp's converter lays one out."""
    tj = json.loads((TINY_TOKENIZER_DIR / "tokenizer.json").read_text())
    vocab = tj["model"]["vocab"]
    tokens = sorted(vocab, key=vocab.get)
    special = {t["id"] for t in tj["added_tokens"]}
    rng = np.random.default_rng(seed)

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(512)
    w.add_embedding_length(DIM)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(tokens))
    w.add_rope_dimension_count(DIM // HEADS)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL
                       for i in range(len(tokens))])
    w.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in tj["model"]["merges"]])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(0)
    w.add_chat_template(CHATML_TEMPLATE)

    def tensor(name: str, shape: tuple[int, ...], qtype=None) -> None:
        data = (rng.standard_normal(shape) * (0.02 if len(shape) > 1 else 1.0)).astype(np.float32)
        if len(shape) == 1:
            data = 1.0 + 0.1 * data
        if qtype is None:
            w.add_tensor(name, data)
        else:
            w.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)

    q8, q41 = gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.Q4_1
    head_dim = DIM // HEADS
    tensor("token_embd.weight", (len(tokens), DIM), q8)
    for b in range(LAYERS):
        tensor(f"blk.{b}.attn_norm.weight", (DIM,))
        tensor(f"blk.{b}.attn_q.weight", (DIM, DIM), q41)
        tensor(f"blk.{b}.attn_k.weight", (KV_HEADS * head_dim, DIM), q41)
        tensor(f"blk.{b}.attn_v.weight", (KV_HEADS * head_dim, DIM), q8)
        tensor(f"blk.{b}.attn_output.weight", (DIM, DIM), q41)
        tensor(f"blk.{b}.ffn_norm.weight", (DIM,))
        tensor(f"blk.{b}.ffn_gate.weight", (FFN, DIM), q41)
        tensor(f"blk.{b}.ffn_up.weight", (FFN, DIM))
        tensor(f"blk.{b}.ffn_down.weight", (DIM, FFN), q41)
    tensor("output_norm.weight", (DIM,))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture()
def model_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("HAMMER_MODEL_CACHE", str(cache))
    return cache


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.Q4_1.gguf")


def _logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits


def test_gguf_converts_to_safetensors_with_the_same_logits(tiny_gguf, model_cache):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(resolve(str(tiny_gguf)))
    assert folder.parent == model_cache and folder.name.startswith("tiny-llama.Q4_1-")
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", MARKER} <= names
    assert not any(n.endswith((".bin", ".pt", ".gguf")) for n in names)
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())

    source = AutoModelForCausalLM.from_pretrained(str(tiny_gguf.parent), gguf_file=tiny_gguf.name,
                                                  dtype=torch.float32)
    converted = load_saved_base(str(tiny_gguf))  # a .gguf path loads through the cache
    src_tok = AutoTokenizer.from_pretrained(str(tiny_gguf.parent), gguf_file=tiny_gguf.name)
    tok = load_tokenizer(ModelConfig(name_or_path=str(tiny_gguf)))
    text = 'Weather in Oslo? [{"name": "get_weather", "arguments": {"city": "Oslo"}}]'
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids == src_tok(text, add_special_tokens=False)["input_ids"]
    assert tok.eos_token == "<|im_end|>"
    assert torch.equal(_logits(converted, ids), _logits(source, ids))
    assert sum(p.numel() for p in converted.parameters()) == sum(p.numel() for p in source.parameters())


def test_second_resolve_reuses_the_cache_and_a_corrupt_one_is_rebuilt(tiny_gguf, model_cache):
    folder = Path(resolve(str(tiny_gguf)))
    weights = folder / "model.safetensors"
    first = weights.stat()
    assert resolve(str(tiny_gguf)) == str(folder)
    assert weights.stat().st_mtime_ns == first.st_mtime_ns and weights.stat().st_ino == first.st_ino

    good = load_saved_base(str(tiny_gguf))
    ids = list(range(3, 40))
    expected = _logits(good, ids)
    with open(weights, "r+b") as f:  # a half-copied cache: the weights cut short
        f.truncate(first.st_size // 2)
    assert resolve(str(tiny_gguf)) == str(folder)
    assert weights.stat().st_size == first.st_size
    assert torch.equal(_logits(load_saved_base(str(tiny_gguf)), ids), expected)

    (folder / MARKER).write_text("{not json")  # an unreadable marker is not trusted either
    resolve(str(tiny_gguf))
    assert json.loads((folder / MARKER).read_text())["files"]["model.safetensors"]
    assert not [p for p in model_cache.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_a_gguf_path_trains_through_the_usual_loader(tiny_gguf, model_cache):
    cfg = ModelConfig(name_or_path=str(tiny_gguf))
    tok = load_tokenizer(cfg)
    model = load_base_model(cfg, tok)
    assert model.config.model_type == "llama"
    assert model.generation_config.eos_token_id == tok.eos_token_id
    ids = torch.tensor([tok("hello world", add_special_tokens=False)["input_ids"]])
    loss = model(ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss) and model.model.layers[0].self_attn.q_proj.weight.grad is not None


def test_missing_files_and_packages_say_what_to_do(tmp_path, model_cache, monkeypatch):
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve(str(tmp_path / "nope.gguf"))
    monkeypatch.setitem(presets.PRESETS, "ghost-1m", presets.Preset("hammer_no_such_pkg", "x.gguf", "test"))
    with pytest.raises(ModelLoadError, match="needs the package hammer-no-such-pkg"):
        resolve("ghost-1m")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ModelLoadError, match="could not read GGUF file"):
        resolve(str(bad))
    assert not model_cache.exists() or not any(model_cache.iterdir())  # nothing half-made kept


def test_other_names_pass_through(model_cache):
    assert resolve("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    assert not model_cache.exists()


def test_the_smollm2_preset_points_at_the_packaged_file():
    source = presets.gguf_source("smollm2-135m")
    assert source is not None and source.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and source.stat().st_size > 90e6
