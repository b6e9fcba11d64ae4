"""The exported chat template renders the prompt the model was trained on, token for token: the
real prepare stage on the bundled sample (and OpenAI / sharegpt conversations), then
``apply_chat_template(messages, tools=...)`` with the exported template against every row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hammer_core.data.chat_template import exported_template, with_template
from hammer_core.config import config_from_dict
from hammer_core.data.ingest import SourceSpec, ingest

from .conftest import prepare_examples

REPO = Path(__file__).resolve().parents[1]
SOURCES = [("data/sample/travel.jsonl", "travel"), ("data/sample/finance.jsonl", "finance"),
           ("tests/fixtures/openai/chat.jsonl", "travel"),
           ("tests/fixtures/sharegpt/glaive_toolcall_en_demo.json", "finance")]


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    out = tmp_path_factory.mktemp("ingest")
    return ingest([SourceSpec(path=str(REPO / p), task=t) for p, t in SOURCES], out).examples


def tools_template_tokenizer(folder: Path) -> str:
    """The tiny tokenizer with a template that renders tools (like Qwen2.5's), saved: its folder."""
    from hammer_core.model.tokenizer import load_tiny_tokenizer

    from .test_recipe import TOOLS_TEMPLATE
    tok = load_tiny_tokenizer()
    tok.chat_template = TOOLS_TEMPLATE
    tok.save_pretrained(folder)
    return str(folder)


def model_section(kind: str, tmp_path: Path) -> dict:
    if kind == "tiny":  # its own template is ChatML: Hammer's prompt inside a user turn
        return {"name_or_path": "hammer-tiny-qwen2"}
    if kind == "tiny-tools":
        return {"name_or_path": "hammer-tiny-qwen2", "tokenizer": tools_template_tokenizer(tmp_path / "tok")}
    from hammer_core.model import presets
    if presets.gguf_source("smollm2-135m") is None:
        pytest.skip("the smollm2-135m preset's GGUF package is not installed")
    return {"name_or_path": "smollm2-135m"}  # a real HF tokenizer with its own (ChatML) template


def openai_turns(messages: list[dict]) -> list[dict]:
    """A canonical conversation as an OpenAI client sends it: earlier call turns as ``tool_calls``
    (arguments as objects, as vLLM hands them to the template) beside some text."""
    out = []
    for m in messages:
        calls = json.loads(m["content"]) if m["role"] == "assistant" and m["content"].startswith("[{") else None
        if calls is None:
            out.append(m)
        else:
            out.append({"role": "assistant", "content": "Let me check.", "tool_calls": [
                {"id": f"call_{i}", "type": "function", "function": c} for i, c in enumerate(calls)]})
    return out


@pytest.mark.parametrize("prompt_format,kind", [("hammer", "tiny"), ("hammer", "smollm2"),
                                                ("chat_template", "tiny-tools")])
def test_template_gives_the_prepared_prompt_ids_of_every_row(examples, tmp_path, prompt_format, kind):
    from transformers import AutoTokenizer

    from hammer_core.model.tokenizer import load_tokenizer

    cfg = config_from_dict({"seed": 3, "output_dir": str(tmp_path), "model": model_section(kind, tmp_path),
                            "prepare": {"max_length": 4096, "workers": 1, "copies": 2,
                                        "prompt_format": prompt_format}})
    res = prepare_examples(cfg, examples, tmp_path / "prepare")
    with_template(load_tokenizer(cfg.model), prompt_format).save_pretrained(tmp_path / "exported")
    tok = AutoTokenizer.from_pretrained(tmp_path / "exported")  # as a server loads it
    seen = {"masked": 0, "irrelevance": 0, "default": 0, "x-key": 0, "conversation": 0, "plain": 0}
    for split in ("train", "eval"):
        rows = getattr(res, split).read().to_pylist()
        toks = getattr(res, f"{split}_tokens").read().to_pylist()
        assert [r["id"] for r in rows] == [t["id"] for t in toks]
        for row, t in zip(rows, toks):
            specs = json.loads(row["tools"])
            tools = [{"type": "function", "function": s} for s in specs]
            want = t["input_ids"][: t["n_prompt"]]
            got = tok.apply_chat_template(row["messages"], tools=tools, add_generation_prompt=True, tokenize=True)
            assert got["input_ids"] == want, (row["id"], row["variant"])
            called_before = any(m["role"] == "assistant" and m["content"].startswith("[{") for m in row["messages"])
            if called_before and prompt_format == "hammer":  # the same ids from the OpenAI form of the turns
                again = tok.apply_chat_template(openai_turns(row["messages"]), tools=tools,
                                                add_generation_prompt=True, tokenize=True)
                assert again["input_ids"] == want, row["id"]
            seen["masked"] += row["variant"].endswith("+masked")
            seen["irrelevance"] += row["calls"] == "[]"
            seen["default"] += "default is '" in tok.decode(want)
            seen["x-key"] += '"x-' in row["tools"]
            seen["conversation"] += called_before
            seen["plain"] += not row["variant"].endswith("+masked")
    assert all(seen.values()), seen  # the rows cover every case the template handles


def test_hammer_template_shows_tools_as_training_did_and_refuses_string_arguments(tmp_path):
    """By hand, on one request: x- keys dropped, default noted once, the query block of a
    conversation, no chat wrap left out; OpenAI's JSON-string arguments are refused, not shown
    differently."""
    from jinja2.exceptions import TemplateError

    from hammer_core.model.tokenizer import load_tiny_tokenizer
    from hammer_core.data.prompts import render_prompt
    from hammer_core.data.tokenization import prompt_text

    tok = load_tiny_tokenizer()
    spec = {"name": "get_weather", "description": "Weather.", "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "City.", "x-python-type": "str"},
        "units": {"type": "string", "description": "Units (default is 'metric').", "default": "metric"},
        "days": {"default": 3, "type": "integer"}}, "required": ["city"]}}
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Oslo?"}]
    templated = with_template(tok, "hammer")
    text = templated.apply_chat_template(msgs, tools=[{"type": "function", "function": spec}],
                                         add_generation_prompt=True, tokenize=False)
    assert text == prompt_text(tok, msgs, [spec]) and render_prompt(msgs, [spec]) in text
    assert "x-python-type" not in text and text.count("default is 'metric'") == 1
    assert '"days": {"default": 3, "type": "integer", "description": "default is \'3\'"}' in text
    assert "system: Be brief.\nuser: Weather in Oslo?\n" in text and text.endswith("<|im_start|>assistant\n")
    bad = [*msgs, {"role": "assistant", "tool_calls": [{"type": "function", "function": {
        "name": "get_weather", "arguments": '{"city": "Oslo"}'}}]}, {"role": "tool", "content": "5C"}]
    with pytest.raises(TemplateError, match="arguments must be objects"):
        templated.apply_chat_template(bad, tools=[spec], add_generation_prompt=True, tokenize=False)
    with pytest.raises(ValueError, match="does not render tools"):
        exported_template(tok, "chat_template")  # ChatML without tools: that format was never trainable
