"""Evaluation: output parsing, Hammer's metrics, scoring prediction files (hammer eval score),
the robustness study, reports, the eval stage with a real tiny model (trained and exported),
and the comparison of two registered versions."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hammer_core.evaluation import bfcl, generation, metrics, reports, robustness, scoring, stage
from hammer_core.evaluation.parsing import parse_calls, python_calls
from hammer_core.schema import dumps
from flows.cli import main as cli

from .conftest import DEMO_CONFIG, REPO

# ---------------------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("text,calls", [
    ('```\n[{"name": "f", "arguments": {"a": 1}}]\n```', [{"name": "f", "arguments": {"a": 1}}]),
    ('Sure! Here you go: [{"name": "f", "arguments": {}}] hope it helps', [{"name": "f", "arguments": {}}]),
    ('```json\n{"name": "f", "arguments": {"a": "x"}}\n```', [{"name": "f", "arguments": {"a": "x"}}]),
    ("```\n[]\n```", []),
    ("[math.add(a=1, b=-2.5), say(text='hi', to=[\"x\"])]",
     [{"name": "math.add", "arguments": {"a": 1, "b": -2.5}}, {"name": "say", "arguments": {"text": "hi", "to": ["x"]}}]),
    ("get(n=2**3, who=someone, opts={'k': (1, 2)})", [{"name": "get", "arguments": {"n": 8, "who": "someone",
                                                                                  "opts": {"k": (1, 2)}}}]),
    ("I cannot help with that.", None),
    ('[{"name": "f", "arguments": "not a dict"}]', None),
    ("", None),
    ("```\n[{\"name\": \"f\", \"arguments\": {\"a\": 1}\n```", None),  # truncated JSON
    # chat-template tool calls (Qwen2.5 / Hermes): several blocks, string arguments, unclosed last block
    ('<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>\n<tool_call>\n{"name": "g", '
     '"arguments": "{\\"b\\": [2]}"}\n</tool_call>',
     [{"name": "f", "arguments": {"a": 1}}, {"name": "g", "arguments": {"b": [2]}}]),
    ('<tool_call>\n{"name": "f", "parameters": {"a": "x"}}', [{"name": "f", "arguments": {"a": "x"}}]),
    ('<tool_call>\n{"name": "f", "arguments": {"a": 1}\n</tool_call>', None),  # truncated JSON in a block
    ('<tool_call>{"arguments": {}}</tool_call>', None),  # no name
])
def test_parse_calls(text, calls):
    assert parse_calls(text) == calls


CALLS = [{"name": "weather.get", "arguments": {"city": "Oslo", "days": 3, "units": None}},
         {"name": "convert", "arguments": {"amount": 2.5, "to": ["EUR", "USD"], "exact": True}}]


def output_styles(calls: list[dict]) -> dict[str, str]:
    """The same calls written in each common tool-call output style."""
    def obj(c, key="arguments", as_string=False):
        return json.dumps({"name": c["name"], key: json.dumps(c["arguments"]) if as_string else c["arguments"]})

    def py(c):
        return f"{c['name']}({', '.join(f'{k}={v!r}' for k, v in c['arguments'].items())})"

    return {
        "hammer_fenced": "```\n" + json.dumps(calls) + "\n```",
        "hammer_with_prose": "Sure, here are the calls: " + json.dumps(calls) + " -- hope that helps",
        "hermes_blocks": "\n".join(f"<tool_call>\n{obj(c)}\n</tool_call>" for c in calls),
        "hermes_string_arguments": "".join(f"<tool_call>{obj(c, as_string=True)}</tool_call>" for c in calls),
        "llama_list": "[" + ", ".join(obj(c, "parameters") for c in calls) + "]",
        "llama_semicolons": "; ".join(obj(c, "parameters") for c in calls),
        "llama_newlines": "\n".join(obj(c, "parameters") for c in calls) + "\n",
        "llama_python_tag": "<|python_tag|>" + "; ".join(obj(c, "parameters") for c in calls),
        "mistral": "[TOOL_CALLS] [" + ", ".join(obj(c) for c in calls) + "]",
        "openai_string_arguments": "[" + ", ".join(obj(c, as_string=True) for c in calls) + "]",
        "pythonic": "[" + ", ".join(py(c) for c in calls) + "]",
    }


@pytest.mark.parametrize("style", sorted(output_styles(CALLS)))
@pytest.mark.parametrize("calls", [CALLS, CALLS[:1]], ids=["two_calls", "one_call"])
def test_every_output_style_parses_to_the_same_calls(style, calls):
    assert parse_calls(output_styles(calls)[style]) == calls


@pytest.mark.parametrize("text,calls", [
    ('{"name": "f", "parameters": {"x": 1}}', [{"name": "f", "arguments": {"x": 1}}]),  # Llama 3.x: not f()
    ('{"name": "f", "arguments": {"x": 1}, "parameters": {"x": 2}}', [{"name": "f", "arguments": {"x": 1}}]),
    ('{"name": "f", "arguments": ""}', [{"name": "f", "arguments": {}}]),
    ('{"name": "f", "arguments": {"calls": [{"name": "g", "arguments": {}}]}}',  # a list inside the arguments
     [{"name": "f", "arguments": {"calls": [{"name": "g", "arguments": {}}]}}]),
    ("[TOOL_CALLS] []", []),
    ("[TOOL_CALLS] [{\"name\": \"f\", \"arguments\": \"{not json\"}]", None),
    ('{"name": "f", "parameters": {"x": 1}}; 42', None),  # every part must be a call
    ('{"name": "f", "parameters": {"x": 1}} {"name": "g"', None),  # truncated second call
    ("   \n", None),
    # prose that merely contains braces or JSON is not a call
    ("Use the {city} placeholder in the template.", None),
    ('The record is {"name": "Oslo", "population": 709000}; nothing to call.', None),
    ('I would call {"name": "f", "parameters": {"x": 1}} but it is not needed.', None),
    ('Set {"a": 1} and keep [1, 2] as they are.', None),
])
def test_parse_calls_edge_cases(text, calls):
    assert parse_calls(text) == calls


def test_python_calls_never_evaluates_code():
    assert python_calls("f(x=__import__('os').system('echo hi'))") == [
        {"name": "f", "arguments": {"x": "__import__('os').system('echo hi')"}}]
    assert python_calls("f(x=10**100000)") is None  # no giant arithmetic either


def test_python_calls_refuses_repeated_powers_quickly():
    # each exponent is small, the result is not: 10**(64**5) would take hours to compute, and
    # a C-level power never lets a thread time out, so a subprocess is the wall-clock guard
    code = ("from hammer_core.evaluation.parsing import python_calls\n"
            "print(python_calls('[f(a=((((10**64)**64)**64)**64)**64)]'),"
            " python_calls('f(a=(2**64)**63 * 3)') is not None, python_calls('f(a=(2**64)**64)'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["None", "True", "None"]  # a parse failure; under the bound: computed


# ---------------------------------------------------------------------------------------------- Hammer's metrics


def C(name: str, **args) -> dict:
    return {"name": name, "arguments": args}


def test_hammer_metrics_by_hand():
    pairs = [
        ([C("f", a=1, b="x")], [C("f", a=1, b="y")]),  # name hit, 1 of 2 args
        ([C("g", q="z")], [C("g", q="z"), C("g", q="z")]),  # the same right call twice: 2 name hits
        ([C("h", a=1)], None),  # unparsable: one wrong predicted call
        ([], []),  # no-call row, no call: irrelevance hit
        ([], [C("f", a=2)]),  # no-call row with a call: irrelevance miss, a wrong call
        ([C("k")], [C("k")]),  # argument-less: Hammer counts one argument hit
        ([C("m", a="")], [C("m", a="", b="")]),  # "" arguments are ignored: no argument, no hit
    ]
    m = metrics.score_examples(pairs)
    # names: gold 5 calls; predicted 1+2+1+0+1+1+1 = 7; hits 1+2+0+0+0+1+1 = 5
    assert (m["name_precision"], m["name_recall"]) == (round(5 / 7, 6), 1.0)
    assert m["name_f1"] == round(2 * (5 / 7) / (5 / 7 + 1), 6)
    # args: gold 2+1+1 = 4 (the "" one ignored); predicted 2+2+1 = 5; hits 1 (f) + 1+1 (g twice) + 1 (k) = 4
    assert (m["arg_precision"], m["arg_recall"]) == (0.8, 1.0)
    assert m["irrelevance_accuracy"] == 0.5


def test_hammer_metrics_are_zero_without_hits():
    m = metrics.score_examples([([C("f", a=1)], [C("g", a=1)])])
    assert m["name_f1"] == 0.0 and m["arg_f1"] == 0.0 and "irrelevance_accuracy" not in m


# ---------------------------------------------------------------------------------------------- scoring files


def _write(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def _answers(entry: bfcl.Entry) -> list[dict]:
    return [{"name": n, "arguments": {p: next(v for v in vals if v != "") for p, vals in params.items()
                                      if any(v != "" for v in vals)}}
            for answer in entry.ground_truth for n, params in answer.items()]


def test_score_bfcl_predictions_end_to_end(tmp_path):
    entries = bfcl.load_category("parallel")[:30]
    rng = random.Random(0)
    lines, expected = [], {}
    for i, e in enumerate(entries[:-1]):  # the last id gets no prediction
        calls = _answers(e)
        rng.shuffle(calls)  # parallel calls match in any order
        if i % 3 == 0:
            calls = calls[:1]  # wrong count
        if i % 4 == 0:
            lines.append({"id": e.id, "text": "Here:\n```json\n" + json.dumps(calls) + "\n```"})
        else:
            lines.append({"id": e.id, "calls": calls})
        expected[e.id] = i % 3 != 0
    lines.append({"id": "parallel_999999", "text": "nonsense"})  # an id the dataset does not have
    preds = _write(tmp_path / "preds.jsonl", lines)
    out = tmp_path / "report.json"
    assert cli(["eval", "score", "--dataset", "bfcl:parallel", "--predictions", str(preds), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["total"] == 200 and report["missing_predictions"] == 171
    assert report["unmatched_predictions"] == ["parallel_999999"]
    verdicts = {v["id"]: v for v in report["verdicts"]}
    wrong = [i for i, ok in expected.items() if verdicts[i]["valid"] != ok]
    assert len(wrong) <= 2, [verdicts[i] for i in wrong]  # BFCL's own data has a rare inconsistent answer
    assert all(verdicts[i]["rule"] == "parallel_function_checker_no_order:wrong_count"
               for i, ok in expected.items() if not ok)
    assert verdicts[entries[-1].id]["rule"] == "missing_prediction"
    assert report["categories"]["parallel"]["correct"] == report["correct"] == sum(v["valid"] for v in verdicts.values())
    assert "| parallel | 200 |" in out.with_suffix(".md").read_text()


def test_score_reports_unparsable_text_as_no_call(tmp_path):
    irr = bfcl.load_category("irrelevance")[:2]
    simple = bfcl.load_category("simple_python")[:1]
    preds = _write(tmp_path / "p.jsonl", [{"id": irr[0].id, "text": "No function fits."},
                                          {"id": irr[1].id, "calls": [{"name": "x", "arguments": {}}]},
                                          {"id": simple[0].id, "text": "I think you want the area."}])
    report = scoring.score_predictions("bfcl:irrelevance,simple_python", preds)
    v = {x["id"]: x for x in report["verdicts"]}
    assert v[irr[0].id]["valid"] and v[irr[0].id]["parse_failed"]
    assert v[irr[1].id]["rule"] == "irrelevance_error:decoder_success"
    assert v[simple[0].id]["rule"] == "ast_decoder:decoder_failed" and v[simple[0].id]["parse_failed"]
    assert report["parse_failures"] == 2


def test_every_output_style_gets_the_same_bfcl_verdicts(tmp_path):
    """Text lines in each output style score exactly as the same calls given as 'calls' lines
    (Llama's 'parameters' and OpenAI's string arguments are read there too); one wrong answer
    is wrong the same way in every style."""
    entries = bfcl.load_category("parallel_multiple")[:4]
    answers = {e.id: _answers(e) for e in entries}
    wrong = entries[0].id
    answers[wrong] = [{**answers[wrong][0], "arguments": {**answers[wrong][0]["arguments"], "lower_limit": 2}},
                      *answers[wrong][1:]]

    def verdicts(name, lines):
        out = tmp_path / f"{name}.json"
        assert cli(["eval", "score", "--dataset", "bfcl:parallel_multiple", "--predictions",
                    str(_write(tmp_path / f"{name}.jsonl", lines)), "--out", str(out)]) == 0
        report = json.loads(out.read_text())
        return [(v["id"], v["valid"], v["rule"], v["parse_failed"]) for v in report["verdicts"] if v["id"] in answers]

    expected = verdicts("calls", [{"id": i, "calls": c} for i, c in answers.items()])
    assert [(i, ok) for i, ok, _, failed in expected] == [(e.id, e.id != wrong) for e in entries]
    assert expected[0][2] == "parallel_function_checker_no_order:cannot_find_match"
    assert not any(failed for *_, failed in expected)
    for calls_form in ("parameters", "string_arguments"):
        lines = [{"id": i, "calls": [{"name": x["name"], "parameters": x["arguments"]} if calls_form == "parameters"
                                     else {"name": x["name"], "arguments": json.dumps(x["arguments"])} for x in c]}
                 for i, c in answers.items()]
        assert verdicts(calls_form, lines) == expected, calls_form
    for style in output_styles(CALLS):
        lines = [{"id": i, "text": output_styles(c)[style]} for i, c in answers.items()]
        assert verdicts(style, lines) == expected, style


@pytest.mark.parametrize("line,message", [
    ("{not json", "p.jsonl:2: not valid JSON"),
    ('{"calls": []}', "p.jsonl:2: a prediction must be an object with an 'id'"),
    ('{"id": "a", "answer": []}', "p.jsonl:2: a prediction needs 'calls'"),
    ('{"id": "simple_python_0", "calls": []}', "p.jsonl:2: duplicate prediction for id 'simple_python_0' "
                                               "(first on line 1)"),
])
def test_bad_prediction_lines_are_named(tmp_path, line, message, capsys):
    preds = _write(tmp_path / "p.jsonl", [{"id": "simple_python_0", "calls": []}, line])
    with pytest.raises(ValueError, match=re.escape(message)):
        scoring.read_predictions(preds)
    assert cli(["eval", "score", "--dataset", "bfcl:simple", "--predictions", str(preds),
                "--out", str(tmp_path / "r.json")]) == 2
    assert message in capsys.readouterr().err


def test_score_own_heldout_rows_with_hammer_metrics(tmp_path):
    from hammer_core.artifacts import write_table
    from hammer_core.schema import examples_table

    tools = json.dumps([{"name": "fx", "description": "Exchange rate.", "parameters": {"type": "object", "properties": {
        "base": {"type": "string"}, "quote": {"type": "string", "default": "USD"}}, "required": ["base"]}}])
    rows = [{"id": f"r{i}", "source": "s", "task": "finance", "messages": [{"role": "user", "content": "q"}],
             "tools": tools, "calls": json.dumps([{"name": "fx", "arguments": {"base": cur}}] if cur else [])}
            for i, cur in enumerate(["EUR", "GBP", None])]
    data = write_table(examples_table(rows), tmp_path / "eval.parquet", kind="examples")
    preds = _write(tmp_path / "p.jsonl", [{"id": "r0", "calls": [{"name": "fx", "arguments": {"base": "eur"}}]},
                                          {"id": "r1", "text": '[{"name": "fx", "arguments": {"base": "JPY"}}]'},
                                          {"id": "r2", "text": "[]"}])
    report = scoring.score_predictions(str(tmp_path), preds, tmp_path / "r.json")
    assert data.path.exists()
    v = {x["id"]: x for x in report["verdicts"]}
    assert v["r0"]["valid"]  # BFCL string normalization: case does not matter
    assert v["r1"]["rule"] == "value_error:string"
    assert v["r2"]["valid"] and v["r2"]["category"] == "irrelevance"
    assert report["tasks"]["finance"]["correct"] == 2
    h = report["hammer"]
    assert h["rows"] == 3 and h["name_f1"] == 1.0 and h["irrelevance_accuracy"] == 1.0
    assert h["arg_recall"] == 0.0  # Hammer compares str(value) exactly: "eur" != "EUR"


def test_score_throughput_is_not_pathological(tmp_path):
    """Not a timing assert: the checker does a bounded amount of work per prediction (see
    benchmarks/bench_score.py for the speed); here, every live_multiple prediction is scored."""
    entries = bfcl.load_category("live_multiple")
    preds = _write(tmp_path / "p.jsonl", [{"id": e.id, "calls": _answers(e)} for e in entries])
    report = scoring.score_predictions("bfcl:live_multiple", preds)
    assert report["total"] == 1053 and report["accuracy"] > 0.95


# ---------------------------------------------------------------------------------------------- robustness


ROW = {"id": "r1", "task": "t", "source": "s", "variant": "original", "messages": [{"role": "user", "content": "q"}],
       "tools": json.dumps([
           {"name": "get_weather", "description": "Weather for a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City."},
                                                            "days": {"type": "integer"}}, "required": ["city"]}},
           {"name": "get_time", "description": "Time in a zone.",
            "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}}]),
       "calls": json.dumps([{"name": "get_weather", "arguments": {"city": "Oslo", "days": 2}}])}


@pytest.mark.parametrize("mode", robustness.MODES)
def test_renaming_keeps_the_row_consistent(mode):
    out = robustness.rename_row(ROW, mode, seed=3)
    assert out == robustness.rename_row(ROW, mode, seed=3)  # deterministic
    assert out != robustness.rename_row(ROW, mode, seed=4)
    tools, calls = json.loads(out["tools"]), json.loads(out["calls"])
    old_tools = json.loads(ROW["tools"])
    assert [t["description"] for t in tools] == [t["description"] for t in old_tools]
    fn_renamed = [t["name"] != o["name"] for t, o in zip(tools, old_tools)]
    assert all(fn_renamed) is (mode != "parameter") and any(fn_renamed) is (mode != "parameter")
    props = tools[0]["parameters"]["properties"]
    assert (list(props) == ["city", "days"]) is (mode == "function")
    assert [p["type"] for p in props.values()] == ["string", "integer"]
    assert tools[0]["parameters"]["required"] == [list(props)[0]]
    assert calls == [{"name": tools[0]["name"], "arguments": dict(zip(props, ["Oslo", 2]))}]
    assert out["parent_id"] == "r1" and out["id"] == f"r1~rb-{mode}"
    # the renamed gold call is still the right answer under BFCL's rules
    assert bfcl.check_entry(bfcl.entry_from_row(out), scoring.as_bfcl(calls)).valid


@pytest.mark.parametrize("mode", robustness.MODES)
def test_renaming_a_conversation_renames_its_earlier_call_turns(mode):
    earlier = '[{"name":"get_time","arguments":{"zone":"CET"}}]'
    row = {**ROW, "messages": [{"role": "user", "content": "time in Oslo?"}, {"role": "assistant", "content": earlier},
                               {"role": "tool", "content": "12:00"}, {"role": "user", "content": "and the weather?"}]}
    out = robustness.rename_row(row, mode, seed=3)
    time_tool = json.loads(out["tools"])[1]
    (call,) = json.loads(out["messages"][1]["content"])
    assert call == {"name": time_tool["name"], "arguments": {list(time_tool["parameters"]["properties"])[0]: "CET"}}
    assert call != json.loads(earlier)[0]
    assert [m["content"] for m in out["messages"][2:]] == ["12:00", "and the weather?"]
    assert row["messages"][1]["content"] == earlier  # the input row is not modified
    assert robustness.rename_row(ROW, mode, seed=3)["messages"] == ROW["messages"]


def test_accuracy_drops_compare_the_same_rows():
    drops = robustness.accuracy_drops({"a": True, "b": True, "c": False},
                                      {"function": {"a": False, "b": True}, "both": {}})
    assert drops["function"] == {"rows": 2, "original": 1.0, "renamed": 0.5, "drop": 0.5}
    assert drops["both"]["rows"] == 0


# ---------------------------------------------------------------------------------------------- reports


def test_reports_write_markdown_and_pngs(tmp_path):
    m = {"eval_rows": 10, "no_call_rows": 2, "exact_match": 0.5, "call_accuracy": 0.5, "irrelevance_accuracy": 1.0,
         "ast_accuracy": 0.6, "exact_match/a": 0.5, "ast_accuracy/a": 0.6, "name_f1": 0.7, "arg_f1": 0.4}
    rb = {"function": {"rows": 10, "original": 0.6, "renamed": 0.3, "drop": 0.3}}
    bf = {"task": "a", "categories": {"simple_python": {"total": 4, "correct": 1, "accuracy": 0.25, "parse_failures": 0},
                                      "live_relevance": {"total": 2, "correct": 2, "accuracy": 1.0,
                                                         "parse_failures": 0}},
          "summary": {"relevance": 1.0}}
    path = reports.write_eval_report(tmp_path, m, robustness=rb, bfcl=bf)
    text = path.read_text()
    assert "| function | 10 | 0.600 | 0.300 | 0.300 |" in text
    assert "| held-out: no call | 2 | 1.000 |" in text and "| BFCL relevance | 2 | 1.000 |" in text
    assert "| simple_python | 4 | 1 | 0.250 | 0 |" in text
    for png in ("accuracy_by_category.png", "relevance.png", "robustness.png"):
        data = (tmp_path / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
        assert f"]({png})" in text
    md = reports.comparison_markdown("x", ("v1", "v2"), {"a": 0.5, "b": 1.0}, {"a": 0.75})
    assert "| a | 0.500 | 0.750 | +0.250 |" in md and "| b | 1.000 |  |  |" in md


# ---------------------------------------------------------------------------------------------- the eval stage


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real tiny CGC-LoRA model (random, non-zero experts: what matters here is that generation,
    parsing and scoring agree, not accuracy), its 1 + N export, and an eval split of the sample."""
    import torch

    from hammer_core import stages
    from hammer_core.artifacts import atomic_write_json, write_table
    from hammer_core.model.cgc_lora import CGCLoraConfig, inject_cgc_lora, save_cgc_lora
    from hammer_core.config import load_config
    from hammer_core.data.irrelevance import strip_gold_tools
    from hammer_core.model.base import build_tiny_model
    from hammer_core.model.tokenizer import load_tiny_tokenizer
    from hammer_core.schema import examples_table
    from hammer_core.data.tokenization import TOKENS_SCHEMA, tokenize_rows

    root = tmp_path_factory.mktemp("evalrun")
    sample = REPO / "data" / "sample"
    cfg = load_config(DEMO_CONFIG, [
        f"output_dir={root}", "prepare.max_length=2048",
        f"data.sources=[{{path: {sample / 'travel.jsonl'}, task: travel, max_rows: 6}}, "
        f"{{path: {sample / 'finance.jsonl'}, task: finance, max_rows: 6}}]",
        "eval.max_examples=5", "eval.max_new_tokens=6", "eval.batch_size=8", "eval.robustness_max_examples=2",
        "eval.bfcl_categories=[simple_python,irrelevance]", "eval.bfcl_max_examples=1"])
    examples = stages.ingest(cfg, root / "ingest").examples.read().to_pylist()
    rows = [examples[0], strip_gold_tools(examples[1]), *examples[2:4], examples[-1], examples[-2]]
    tokenizer = load_tiny_tokenizer()
    tokens, _ = tokenize_rows(rows, tokenizer, cfg.prepare.max_length)
    prep = root / "prepare"
    write_table(examples_table(rows), prep / "eval.parquet", kind="examples")
    write_table(pa.Table.from_pylist(tokens, schema=TOKENS_SCHEMA), prep / "eval_tokens.parquet",
                kind="tokens")

    train = root / "train"
    base = build_tiny_model(len(tokenizer), seed=0)
    base.save_pretrained(train / "base_model", safe_serialization=True)
    tokenizer.save_pretrained(train / "tokenizer")
    model = inject_cgc_lora(base, CGCLoraConfig(tasks=sorted({r["task"] for r in rows})))
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.normal_(0, 0.5)
    save_cgc_lora(model, train / "adapter")
    atomic_write_json(train / "train_summary.json", {"base_model": str(train / "base_model")})
    stages.export(train, root / "export")
    return cfg, root


def test_eval_stage_writes_metrics_predictions_robustness_bfcl_and_report(trained):
    from hammer_core import stages

    cfg, root = trained
    res = stages.evaluate(cfg, root / "train", root / "prepare", root / "eval", progress=False)
    m = json.loads((root / "eval" / "metrics.json").read_text())
    assert m == res.metrics and m["eval_rows"] == 5 and m["no_call_rows"] == 1
    for key in ("exact_match", "call_accuracy", "irrelevance_accuracy", "parse_failure_rate", "ast_accuracy",
                "name_f1", "arg_f1", "robustness/both/drop", "bfcl/simple_python", "bfcl/irrelevance"):
        assert 0.0 <= m[key] <= 1.0 or key.endswith("drop"), key
    preds = pq.read_table(root / "eval" / "predictions.parquet").to_pylist()
    assert len(preds) == 5
    assert m["exact_match"] == round(sum(p["correct"] for p in preds) / 5, 6)
    assert m["ast_accuracy"] == round(sum(p["ast_correct"] for p in preds) / 5, 6)
    assert m["parse_failure_rate"] == round(sum(p["predicted"] is None for p in preds) / 5, 6)
    rows = {r["id"]: r for r in pq.read_table(root / "prepare" / "eval.parquet").to_pylist()}
    for p in preds:  # every verdict is reproducible from the stored output
        parsed = parse_calls(p["output"])
        assert p["predicted"] == (None if parsed is None else dumps(parsed))
        r = rows[p["id"]]
        exact, verdict = scoring.judge(r["id"], r["tools"], r["calls"], r["messages"], parsed)
        assert (p["correct"], p["ast_correct"], p["ast_rule"]) == (exact, verdict.valid, verdict.rule or None)

    rb = pq.read_table(root / "eval" / "robustness.parquet").to_pylist()
    assert sorted({r["mode"] for r in rb}) == sorted(robustness.MODES)
    assert all(r["parent_id"] in {p["id"] for p in preds[:2]} for r in rb)
    study = json.loads((root / "eval" / "robustness.json").read_text())
    for mode, v in study.items():
        assert v["drop"] == round(v["original"] - v["renamed"], 6) == m[f"robustness/{mode}/drop"]

    bf = pq.read_table(root / "eval" / "bfcl_predictions.parquet").to_pylist()
    assert [r["category"] for r in bf] == ["simple_python", "irrelevance"]
    assert m["bfcl/irrelevance"] == float(bf[1]["valid"]) and m["bfcl/simple_python"] == float(bf[0]["valid"])
    report = (root / "eval" / "report.md").read_text()
    assert res.report == root / "eval" / "report.md"
    assert "## Robustness" in report and "## BFCL (adapter: finance)" in report
    for png in ("accuracy_by_category.png", "relevance.png", "robustness.png"):
        assert (root / "eval" / png).stat().st_size > 2000


def test_exported_adapters_generate_what_the_trained_model_generates(trained):
    _, root = trained
    toks = pq.read_table(root / "prepare" / "eval_tokens.parquet").to_pylist()
    prompts, tasks = [t["input_ids"][: t["n_prompt"]] for t in toks], [t["task"] for t in toks]
    from_train = generation.Generator(root / "train")
    from_export = generation.Generator(root / "export")
    assert (from_train.kind, from_export.kind) == ("cgc_lora", "peft") and from_train.tasks == from_export.tasks
    a = from_train.generate(prompts, tasks, max_new_tokens=6, batch_size=4, progress=False)
    b = from_export.generate(prompts, tasks, max_new_tokens=6, batch_size=4, progress=False)
    assert a == b and len(set(a)) > 1  # per-task adapters switch with the rows' tasks
    with pytest.raises(ValueError, match=r"tasks \['nope'\] that the adapter was not trained on"):
        from_export.generate(prompts[:1], ["nope"], max_new_tokens=2, batch_size=1, progress=False)


def test_export_merged_writes_plain_models_that_match_the_adapters(trained, tmp_path, capsys):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, root = trained
    out = tmp_path / "export"
    assert cli(["export", "--input", str(root / "train"), "--out", str(out), "--merged"]) == 0
    manifest = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(manifest["merged"]) == set(manifest["tasks"])
    peft_gen = generation.Generator(out)
    toks = pq.read_table(root / "prepare" / "eval_tokens.parquet").to_pylist()[:2]
    for task, rel in manifest["merged"].items():
        model = AutoModelForCausalLM.from_pretrained(out / rel).eval()  # no PEFT, no CGC code
        assert AutoTokenizer.from_pretrained(out / rel).vocab_size > 0
        ids = torch.tensor([toks[0]["input_ids"][: toks[0]["n_prompt"]]])
        peft_gen.model.set_adapter(task)
        with torch.no_grad():
            want = peft_gen.model(input_ids=ids).logits
            got = model(input_ids=ids).logits
        # fp32 rounding of (W + BA) x vs W x + B(A x): up to ~5e-4 measured on these logits
        assert torch.allclose(got, want, atol=2e-3), (task, (got - want).abs().max())
        assert torch.equal(got.argmax(-1), want.argmax(-1))


def test_every_exported_folder_renders_the_training_prompt_and_serving_lines_name_its_files(trained, tmp_path):
    """The tokenizer in the export (tokenizer/, each adapters/<task>/, each merged/<task>/) renders the
    held-out rows' prompt ids from (messages, tools); SERVING.md / serving.json name files that exist and
    vLLM's smallest accepted --max-lora-rank above the adapters' rank (3 experts x 4 = 12 -> 16)."""
    from transformers import AutoTokenizer

    from hammer_core.model.export import export_adapters

    _, root = trained
    res = export_adapters(root / "train", tmp_path / "export", merged=True)
    out, m = tmp_path / "export", res.manifest
    rows = pq.read_table(root / "prepare" / "eval.parquet").to_pylist()
    toks = pq.read_table(root / "prepare" / "eval_tokens.parquet").to_pylist()
    template = (out / m["chat_template"]).read_text()
    # merged/<task> carries the same template; its ids are not compared: AutoTokenizer in a folder with the
    # tiny preset's config.json (model_type qwen2) loads Qwen2's pre-tokenizer over the shipped GPT-2 one
    assert all((out / rel / "chat_template.jinja").read_text() == template for rel in m["merged"].values())
    for folder in [m["tokenizer"], *m["adapters"].values()]:
        tok = AutoTokenizer.from_pretrained(out / folder)
        assert tok.chat_template == (out / m["chat_template"]).read_text()
        for row, t in zip(rows, toks):
            tools = [{"type": "function", "function": f} for f in json.loads(row["tools"])]
            ids = tok.apply_chat_template(row["messages"], tools=tools, add_generation_prompt=True, tokenize=True)
            assert ids["input_ids"] == t["input_ids"][: t["n_prompt"]], (folder, row["id"])
    facts = json.loads((out / "serving.json").read_text())
    assert m["prompt_format"] == facts["prompt_format"] == "hammer" and m["rank"] == 12
    assert facts["max_lora_rank"] == 16 and facts["tool_call_parser"] is None
    assert facts["base_model"] == str((out / "base_model").resolve()) and Path(facts["base_model"]).is_dir()
    for task, path in facts["adapters"].items():
        assert (Path(path) / "adapter_config.json").exists() and f"{task}={path}" in facts["vllm"]
        assert f"{task}={path}" in facts["sglang"]
    tok_dir = out.resolve() / "tokenizer"
    assert facts["vllm"].startswith(f"vllm serve {facts['base_model']} --tokenizer {tok_dir} --enable-lora --lora-modules ")
    assert f"--max-lora-rank 16 --max-loras 2 --chat-template {out.resolve() / 'chat_template.jinja'}" in facts["vllm"]
    assert "--tool-call-parser" not in facts["vllm"]  # Hammer's fenced list: no built-in parser reads it
    assert facts["sglang"].startswith(f"python -m sglang.launch_server --model-path {facts['base_model']} "
                                      f"--tokenizer-path {tok_dir} --enable-lora")
    md = (out / "SERVING.md").read_text()
    assert facts["vllm"] in md and facts["sglang"] in md and "parse_calls" in md


def chat_template_train(root: Path, train: Path):
    """The trained fixture's model as if trained with ``prepare.prompt_format: chat_template``: its
    tokenizer's template renders tools (``<tool_call>`` blocks, as Qwen2.5 / Hermes). Returns it."""
    import shutil

    from hammer_core.model.tokenizer import load_tiny_tokenizer

    from .test_recipe import TOOLS_TEMPLATE

    shutil.copytree(root / "train", train)
    (train / "base_model").rename(train / "base")  # a base of its own: the tokenizer keeps its saved template
    tok = load_tiny_tokenizer()
    tok.chat_template = TOOLS_TEMPLATE
    tok.save_pretrained(train / "tokenizer")
    (train / "train_summary.json").write_text(json.dumps({"base_model": str(train / "base"),
                                                         "prompt_format": "chat_template"}))
    return tok


def test_chat_template_format_export_keeps_the_tokenizers_template_and_picks_its_parser(trained, tmp_path):
    from hammer_core.model.export import export_adapters
    from hammer_core.data.tokenization import encode_chat_template

    _, root = trained
    train = tmp_path / "train"
    tok = chat_template_train(root, train)
    res = export_adapters(train, tmp_path / "export")
    facts = json.loads((tmp_path / "export" / "serving.json").read_text())
    assert facts["tool_call_parser"] == "hermes" and "--enable-auto-tool-choice --tool-call-parser hermes" in facts["vllm"]
    from transformers import AutoTokenizer
    exported = AutoTokenizer.from_pretrained(tmp_path / "export" / res.manifest["adapters"]["travel"])
    rows = pq.read_table(root / "prepare" / "eval.parquet").to_pylist()
    want = encode_chat_template(tok, [(r["messages"], json.loads(r["tools"]), []) for r in rows])
    for row, (p, _) in zip(rows, want):
        tools = [{"type": "function", "function": f} for f in json.loads(row["tools"])]
        got = exported.apply_chat_template(row["messages"], tools=tools, add_generation_prompt=True, tokenize=True)
        assert got["input_ids"] == list(memoryview(p).cast("i")), row["id"]


def test_bfcl_and_robustness_prompts_use_the_trained_prompt_format(trained, tmp_path):
    """prepare.prompt_format: chat_template -- BFCL and the robustness study prompt the model as prepare
    rendered its rows (the tokenizer's own tools template), not in Hammer's format."""
    from hammer_core.config import load_config
    from hammer_core.data.tokenization import encode_chat_template, tokenize_rows

    cfg, root = trained
    tok = chat_template_train(root, tmp_path / "train")
    cfg = load_config(DEMO_CONFIG, [f"output_dir={root}", "prepare.max_length=2048", "prepare.prompt_format=chat_template",
                                    "eval.max_new_tokens=6", "eval.robustness_max_examples=2",
                                    "eval.bfcl_categories=[simple_python]", "eval.bfcl_max_examples=2"])
    gen = generation.Generator(tmp_path / "train")
    entries = bfcl.load_category("simple_python")[:2]
    prepared = [list(memoryview(p).cast("i")) for p, _ in encode_chat_template(
        tok, [(e.messages, bfcl.prompt_functions(e), []) for e in entries])]
    assert [gen.prompt_ids(e.messages, bfcl.prompt_functions(e), "chat_template") for e in entries] == prepared
    result, records = stage._bfcl(cfg, gen, progress=False)
    want = gen.generate(prepared, [result["task"]] * 2, 6, 8, progress=False)
    hammer = gen.generate([gen.prompt_ids(e.messages, bfcl.prompt_functions(e)) for e in entries],
                          [result["task"]] * 2, 6, 8, progress=False)
    assert [r["output"] for r in records] == want != hammer  # the format decides the output

    rows = pq.read_table(root / "prepare" / "eval.parquet").to_pylist()[:2]
    base = [{"id": r["id"], "ast_correct": False} for r in rows]
    _, rb = stage._robustness(cfg, gen, rows, base, progress=False)
    for mode in robustness.MODES:
        renamed = robustness.renamed_rows(rows, mode, cfg.seed)
        kept, _ = tokenize_rows(renamed, tok, 2048, "chat_template")
        prompts = [list(memoryview(p).cast("i")) for p, _ in encode_chat_template(
            tok, [(r["messages"], json.loads(r["tools"]), json.loads(r["calls"])) for r in renamed])]
        assert [k["input_ids"][: k["n_prompt"]] for k in kept] == prompts
        got = [r["output"] for r in rb if r["mode"] == mode]
        assert got == gen.generate(prompts, [r["task"] for r in renamed], 6, 8, progress=False)


@pytest.mark.parametrize("edit,message", [
    ({"r": 24}, None),  # 24 -> 32
    ({"r": 513}, r"rank 513 is above the largest --max-lora-rank vLLM accepts \(512"),
    ({"rank_pattern": {"q_proj": 600}}, "rank 600 is above"),
    ({"use_dora": True}, "DoRA"),
    ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
    ({"bias": "lora_only"}, "bias 'lora_only'"),
])
def test_vllm_rank_and_options_are_checked_on_real_adapter_configs(trained, tmp_path, edit, message):
    import shutil

    from hammer_core.model.export import vllm_max_lora_rank
    from hammer_core.config import ConfigError

    _, root = trained
    dirs = {}
    for task in ("finance", "travel"):
        shutil.copytree(root / "export" / "adapters" / task, tmp_path / task)
        dirs[task] = tmp_path / task
    assert vllm_max_lora_rank(dirs) == 16
    path = dirs["travel"] / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **edit}))
    if message is None:
        assert vllm_max_lora_rank(dirs) == 32
    else:
        with pytest.raises(ConfigError, match=message) as err:
            vllm_max_lora_rank(dirs)
        assert "'travel'" in str(err.value)


def test_export_refuses_a_cgc_lora_whose_rank_vllm_cannot_serve(trained, tmp_path):
    """(n_common + n_specific) * r_expert = 3 * 180 = 540 > 512: export stops, without a manifest."""
    from hammer_core.model.export import export_adapters
    from hammer_core.model.trained import EXPORT_MANIFEST
    from hammer_core.artifacts import atomic_write_json
    from hammer_core.model.cgc_lora import CGCLoraConfig, inject_cgc_lora, save_cgc_lora
    from hammer_core.config import ConfigError
    from hammer_core.model.base import build_tiny_model
    from hammer_core.model.tokenizer import load_tiny_tokenizer

    _, root = trained
    train = tmp_path / "train"
    tok = load_tiny_tokenizer()
    base = build_tiny_model(len(tok), seed=0)
    base.save_pretrained(train / "base_model", safe_serialization=True)
    tok.save_pretrained(train / "tokenizer")
    save_cgc_lora(inject_cgc_lora(base, CGCLoraConfig(tasks=["travel"], r_expert=180)), train / "adapter")
    atomic_write_json(train / "train_summary.json", {"base_model": str(train / "base_model")})
    with pytest.raises(ConfigError, match=r"task 'travel': its rank 540 is above the largest --max-lora-rank"):
        export_adapters(train, tmp_path / "export")
    assert not (tmp_path / "export" / EXPORT_MANIFEST).exists()


def test_legacy_eval_cli_form_still_works(trained, capsys):
    cfg, root = trained
    rc = cli(["eval", "--config", str(DEMO_CONFIG), "--input", str(root / "prepare"), "--model", str(root / "train"),
              "--out", str(root / "eval_cli"), "--set", "eval.max_examples=2", "--set", "eval.max_new_tokens=4",
              "--set", "eval.robustness=false"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["eval_rows"] == 2 and (root / "eval_cli" / "report.md").exists()
    assert cli(["eval", "--config", str(DEMO_CONFIG), "--input", str(root / "prepare")]) == 2
    assert "hammer eval needs --model, --out" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- registry


def test_compare_two_registered_versions(tmp_path):
    from mlflow import MlflowClient

    from hammer_core.config import config_from_dict
    from hammer_core.registry.promotion import compare_versions

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = config_from_dict({"registry": {"tracking_uri": uri, "model_name": "cmp"}})
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.create_experiment("cmp", artifact_location=(tmp_path / "art").as_uri())
    client.create_registered_model("cmp")
    for acc in (0.5, 0.75):
        run = client.create_run(exp)
        client.log_metric(run.info.run_id, "eval/ast_accuracy", acc)
        client.log_metric(run.info.run_id, "train/loss", 1.0)
        client.set_terminated(run.info.run_id)
        mv = client.create_model_version("cmp", source=(tmp_path / "art").as_uri(), run_id=run.info.run_id)
    client.set_registered_model_alias("cmp", "candidate", mv.version)
    res = compare_versions(cfg, 1, "@candidate")
    assert res["a"]["metrics"] == {"ast_accuracy": 0.5} and res["b"]["version"] == 2
    assert res["delta"] == {"ast_accuracy": 0.25}
    assert "| ast_accuracy | 0.500 | 0.750 | +0.250 |" in res["markdown"]


@pytest.mark.slow
def test_pipeline_logs_the_eval_report_and_plots(pipeline_run):
    from mlflow import MlflowClient

    result, run_dir, _ = pipeline_run
    reg = result["registry"]
    client = MlflowClient(tracking_uri=reg["tracking_uri"])
    logged = {Path(a.path).name for a in client.list_artifacts(reg["run_id"], "eval")}
    assert {"metrics.json", "report.md", "accuracy_by_category.png", "relevance.png", "robustness.png",
            "robustness.json", "predictions.parquet"} <= logged
    metrics_ = client.get_run(reg["run_id"]).data.metrics
    assert {"eval/ast_accuracy", "eval/name_f1", "eval/robustness/both/drop"} <= set(metrics_)
    assert "## Robustness" in (run_dir / "eval" / "report.md").read_text()


def test_baseline_scores_the_zero_shot_base_on_the_same_rows(trained, tmp_path):
    """eval.baseline: the base model without adapters, on the same prompts, as base/<metric>."""
    from hammer_core import stages
    from hammer_core.config import load_config

    cfg, root = trained
    cfg = load_config(DEMO_CONFIG, [f"output_dir={root}", "prepare.max_length=2048", "eval.max_examples=5",
                                    "eval.max_new_tokens=6", "eval.robustness=false", "eval.baseline=true",
                                    "eval.bfcl_categories=[irrelevance]", "eval.bfcl_max_examples=2"])
    res = stages.evaluate(cfg, root / "train", root / "prepare", tmp_path, progress=False)
    base = pq.read_table(tmp_path / "base_predictions.parquet").to_pylist()
    tuned = pq.read_table(tmp_path / "predictions.parquet").to_pylist()
    assert [r["id"] for r in base] == [r["id"] for r in tuned]
    toks = pq.read_table(root / "prepare" / "eval_tokens.parquet").to_pylist()[:5]
    plain = generation.Generator(root / "train", zero_shot=True)
    assert plain.kind == "base" and plain.tasks == generation.Generator(root / "train").tasks
    expected = plain.generate([t["input_ids"][: t["n_prompt"]] for t in toks], [t["task"] for t in toks],
                              max_new_tokens=6, batch_size=8, progress=False)
    assert [r["output"] for r in base] == expected != [r["output"] for r in tuned]  # the adapters change output
    assert res.metrics["base/exact_match"] == round(sum(r["correct"] for r in base) / 5, 6)
    assert res.metrics["base/eval_rows"] == 5 and "base/bfcl/irrelevance" in res.metrics
    assert len(pq.read_table(tmp_path / "base_bfcl_predictions.parquet")) == 2
    from_export = generation.Generator(root / "export", zero_shot=True)  # the same base under the export
    assert from_export.generate([t["input_ids"][: t["n_prompt"]] for t in toks], [t["task"] for t in toks],
                                max_new_tokens=6, batch_size=8, progress=False) == expected
    assert "base (zero-shot)" in (tmp_path / "report.md").read_text()


def test_an_export_folder_renders_requests_as_the_training_prompt(trained):
    """The exported tokenizer's chat template is the training prompt: requests rendered through
    an export folder (serving, BFCL on exports) must not wrap Hammer's prompt in it a second time."""
    _, root = trained
    rows = {r["id"]: r for r in pq.read_table(root / "prepare" / "eval.parquet").to_pylist()}
    toks = pq.read_table(root / "prepare" / "eval_tokens.parquet").to_pylist()
    for model_dir in (root / "train", root / "export"):
        gen = generation.Generator(model_dir)
        for t in toks:
            row = rows[t["id"]]
            assert gen.prompt_ids(row["messages"], json.loads(row["tools"])) == t["input_ids"][: t["n_prompt"]], \
                (model_dir.name, t["id"])
