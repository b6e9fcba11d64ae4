"""Every corpus format on its fixture (tests/fixtures/<format>/), with the real quirks and bad rows
of every reason: exact counts, the reason of each reject at its location, normalized content.
Also: HF dataset sources, JSON arrays streamed across chunk boundaries, the streaming artifact
writer, and the synthetic corpus generator."""

from __future__ import annotations

import gzip
import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hammer_core.data import readers
from hammer_core.artifacts import ArtifactWriter, sha256_file, write_table
from hammer_core.config import SourceConfig
from hammer_core.data.formats import FORMATS, REASONS, RowError, detect_format
from hammer_core.data.formats.glaive import parse_functioncall, split_system
from hammer_core.data.ingest import SourceSpec, ingest
from hammer_core.data.readers import DEFAULT_MAX_ROW_BYTES, SourceError, read_records
from hammer_core.schema import EXAMPLE_SCHEMA, REJECT_SCHEMA, dumps, parse_json
from hammer_core.data.synth import synth_rows, write_synth
from hammer_core.data.validation import fits_type, validate_example

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def run(tmp_path: Path, *specs: SourceSpec) -> tuple[dict[str, Any], list[dict[str, Any]],
                                                     dict[str, dict[str, Any]], list[dict]]:
    """Ingest; return (summary, per-source, {id: kept row}, rejects with short locations)."""
    result = ingest(list(specs), tmp_path / "out")
    kept = {r["id"]: r for r in pq.read_table(tmp_path / "out" / "examples.parquet").to_pylist()}
    rejects = pq.read_table(tmp_path / "out" / "rejects.parquet").to_pylist()
    for r in rejects:
        r["where"] = Path(r["location"]).name
    assert result.summary["examples"] == (result.summary["kept"] + result.summary["rejected"]
                                      + result.summary["duplicates"])
    return result.summary, result.sources, kept, rejects


def reasons_at(rejects: list[dict[str, Any]]) -> dict[str, str]:
    return {r["where"]: r["reason"] for r in rejects}


def calls(row: dict[str, Any]) -> list[dict[str, Any]]:
    return json.loads(row["calls"])


# --------------------------------------------------------------------------- glaive

GLAIVE = FIXTURES / "glaive" / "glaive-function-calling-v2.json"
G = "glaive-function-calling-v2.json"


def test_glaive_fixture(tmp_path: Path) -> None:
    summary, sources, kept, rejects = run(tmp_path, SourceSpec(str(GLAIVE), task="chat"))
    assert summary == {
        "records": 18, "examples": 22, "kept": 7, "rejected": 14, "duplicates": 1,
        "by_reason": {r: 1 for r in (
            "bad_argument_type", "bad_call", "bad_field", "bad_json", "bad_tool_spec",
            "duplicate_tool", "empty_query", "invalid_utf8", "missing_field",
            "missing_required_argument", "no_target", "no_tools", "unknown_argument",
            "unknown_function")},
        "by_task": {"chat": 7}}
    assert (sources[0]["format"], sources[0]["records"]) == ("glaive", 18)
    assert reasons_at(rejects) == {
        f"{G}#2": "no_tools", f"{G}#4": "bad_json", f"{G}#5": "bad_field",
        f"{G}#6": "missing_field", f"{G}#7#t2": "unknown_function", f"{G}#8": "bad_tool_spec",
        f"{G}#9": "duplicate_tool", f"{G}#10#t1": "missing_required_argument",
        f"{G}#11#t1": "unknown_argument", f"{G}#12#t1": "bad_argument_type",
        f"{G}#13#t1": "empty_query", f"{G}#14": "no_target", f"{G}#16#t1": "bad_call",
        f"{G}#17": "invalid_utf8"}
    base = "glaive-function-calling-v2"
    assert sorted(kept) == [f"{base}-0#t1", f"{base}-0#t2", f"{base}-1#t1", f"{base}-1#t2",
                            f"{base}-1#t3", f"{base}-3#t1", f"{base}-7#t1"]

    # row 0: the call, then "thanks" answered in text: a no-call target with the history
    first, second = kept[f"{base}-0#t1"], kept[f"{base}-0#t2"]
    assert first["messages"] == [{"role": "user", "content": "Can you tell me the latest news "
                                                             "headlines for the United States?"}]
    assert first["calls"] == '[{"name":"get_news_headlines","arguments":{"country":"United States"}}]'
    assert first["tools"] == dumps([{"name": "get_news_headlines",
                                     "description": "Get the latest news headlines",
                                     "parameters": {"type": "object", "properties": {"country": {
                                         "type": "string",
                                         "description": "The country for which to fetch news"}},
                                         "required": ["country"]}}])
    assert [m["role"] for m in second["messages"]] == ["user", "assistant", "tool", "assistant",
                                                       "user"]
    assert second["messages"][1]["content"] == first["calls"]  # earlier call turn: its calls
    assert second["messages"][2]["content"].startswith('{"headlines": [')
    assert second["messages"][3]["content"].endswith("Hurricane Ida devastates Louisiana")
    assert calls(second) == []
    # row 1: a clarifying question (no call), then two calls; two functions in the system
    assert calls(kept[f"{base}-1#t1"]) == []
    assert calls(kept[f"{base}-1#t2"]) == [{"name": "calculate_loan_payment", "arguments": {
        "principal": 50000, "interest_rate": 5, "loan_term": 10}}]
    assert calls(kept[f"{base}-1#t3"])[0]["arguments"]["amount"] == 530.33
    assert len(kept[f"{base}-1#t3"]["messages"]) == 7
    assert [t["name"] for t in json.loads(kept[f"{base}-1#t1"]["tools"])] == [
        "calculate_loan_payment", "convert_currency"]
    # row 3: the single-quoted arguments hold an escaped apostrophe
    assert calls(kept[f"{base}-3#t1"])[0]["arguments"] == {
        "title": "Harry Potter and the Philosopher's Stone"}
    assert all(r["source"] == base and r["task"] == "chat" and r["variant"] == "original"
               for r in kept.values())
    for row in kept.values():
        validate_example(row)


def test_glaive_parsing_details() -> None:
    prose, functions = split_system("SYSTEM: You are a travel agent. Use them if required - "
                                    '[{"name": "a"}, {"name": "b"}]')
    assert prose == "You are a travel agent." and [f["name"] for f in functions] == ["a", "b"]
    assert split_system("SYSTEM: You are a helpful assistant, with no access to external "
                        "functions.\n\n") == ("", [])
    assert parse_functioncall('{"name": "f", "arguments": {"x": 1}}', "t") == {
        "name": "f", "arguments": {"x": 1}}
    assert parse_functioncall('{"name": "f", "arguments": "{\\"x\\": 1}"}', "t") == {
        "name": "f", "arguments": {"x": 1}}
    assert parse_functioncall("""{"name": "f", "arguments": '{"q": "it's"}'}""", "t") == {
        "name": "f", "arguments": {"q": "it's"}}
    with pytest.raises(RowError, match="neither JSON") as info:
        parse_functioncall("f(x=1)", "turn 2")
    assert info.value.reason == "bad_json"


# --------------------------------------------------------------------------- sharegpt

SHAREGPT = FIXTURES / "sharegpt" / "glaive_toolcall_en_demo.json"
S = "glaive_toolcall_en_demo.json"


def test_sharegpt_fixture(tmp_path: Path) -> None:
    summary, sources, kept, rejects = run(tmp_path, SourceSpec(str(SHAREGPT)))
    assert summary == {
        "records": 12, "examples": 14, "kept": 5, "rejected": 7, "duplicates": 2,
        "by_reason": {"bad_field": 1, "bad_json": 2, "duplicate_id": 1, "missing_field": 1,
                      "no_tools": 1, "unknown_function": 1},
        "by_task": {"glaive_toolcall_en_demo": 5}}
    assert (sources[0]["format"], sources[0]["records"]) == ("sharegpt", 12)
    assert reasons_at(rejects) == {
        f"{S}#3": "no_tools", f"{S}#4": "bad_field", f"{S}#5": "bad_json",
        f"{S}#6#t1": "unknown_function", f"{S}#7": "missing_field", f"{S}#8": "bad_json",
        f"{S}#11#t1": "duplicate_id"}
    assert rejects[-1]["detail"].endswith(f"{SHAREGPT}#10#t1")  # names the first occurrence
    base = "glaive_toolcall_en_demo"
    assert sorted(kept) == [f"{base}-0#t1", f"{base}-0#t2", f"{base}-1#t1", f"{base}-2#t1",
                            "sg-1#t1"]
    assert calls(kept[f"{base}-0#t1"]) == [{"name": "search_recipes", "arguments": {
        "ingredients": ["chicken", "bell peppers", "rice"]}}]
    assert [m["role"] for m in kept[f"{base}-0#t2"]["messages"]] == [
        "user", "assistant", "tool", "assistant", "user"]
    assert calls(kept[f"{base}-1#t1"]) == [  # parallel calls; one had string arguments
        {"name": "get_stock_price", "arguments": {"symbol": "AAPL"}},
        {"name": "get_stock_price", "arguments": {"symbol": "MSFT"}}]
    irrelevant = kept[f"{base}-2#t1"]
    assert irrelevant["messages"] == [
        {"role": "system", "content": "You are a finance assistant."},
        {"role": "user", "content": "Can you book me a table for two tonight?"}]
    assert calls(irrelevant) == []


# --------------------------------------------------------------------------- openai

OPENAI = FIXTURES / "openai" / "chat.jsonl"


def test_openai_fixture(tmp_path: Path) -> None:
    summary, sources, kept, rejects = run(tmp_path, SourceSpec(str(OPENAI), task="assistant"))
    assert summary == {
        "records": 10, "examples": 11, "kept": 4, "rejected": 7, "duplicates": 0,
        "by_reason": {"bad_argument_type": 1, "bad_field": 1, "bad_json": 1, "duplicate_id": 1,
                      "missing_field": 1, "no_tools": 1, "unknown_argument": 1},
        "by_task": {"assistant": 4}}
    assert (sources[0]["format"], sources[0]["records"]) == ("openai", 10)
    assert reasons_at(rejects) == {
        "chat.jsonl:4": "no_tools", "chat.jsonl:5": "bad_json", "chat.jsonl:6#t1":
        "unknown_argument", "chat.jsonl:7": "missing_field", "chat.jsonl:8#t2":
        "bad_argument_type", "chat.jsonl:9#t1": "duplicate_id", "chat.jsonl:10": "bad_field"}
    assert sorted(kept) == ["chat-1#t1", "chat-2#t1", "chat-3#t1", "chat-8#t1"]
    assert kept["chat-1#t1"]["messages"] == [
        {"role": "system", "content": "You are a weather bot."},
        {"role": "user", "content": "What's the weather like in Boston today?"}]
    assert calls(kept["chat-1#t1"]) == [{"name": "get_current_weather",
                                         "arguments": {"location": "Boston, MA"}}]
    assert kept["chat-2#t1"]["messages"] == [  # text parts joined
        {"role": "user", "content": "Weather in Paris and the time in Tokyo?"}]
    assert [c["name"] for c in calls(kept["chat-2#t1"])] == ["get_current_weather",
                                                             "get_local_time"]
    tools = json.loads(kept["chat-2#t1"]["tools"])  # wrapper unwrapped, "strict" dropped
    assert tools[1] == {"name": "get_local_time", "description": "Get the local time of a city",
                        "parameters": {"type": "object", "properties": {"city": {
                            "type": "string"}}, "required": ["city"]}}
    legacy = kept["chat-3#t1"]  # functions + function_call; developer read as system
    assert legacy["messages"][0] == {"role": "system", "content": "Answer briefly."}
    assert calls(legacy) == [{"name": "get_local_time", "arguments": {"city": "Lima"}}]
    assert "10001" in {r["where"]: r for r in rejects}["chat.jsonl:8#t2"]["detail"]


# --------------------------------------------------------------------------- bfcl

BFCL = FIXTURES / "bfcl"


def test_bfcl_fixture(tmp_path: Path) -> None:
    summary, sources, kept, rejects = run(tmp_path, SourceSpec(str(BFCL)))
    assert summary == {
        "records": 10, "examples": 10, "kept": 6, "rejected": 4, "duplicates": 0,
        "by_reason": {"bad_argument_type": 1, "bad_call": 1, "bad_tool_spec": 1,
                      "missing_field": 1},
        "by_task": {"bfcl": 6}}
    assert sources[0]["format"] == "bfcl"
    assert [Path(f["path"]).name for f in sources[0]["files"]] == [
        "BFCL_v3_irrelevance.json", "BFCL_v3_simple.json"]  # possible_answer/ is not a source
    assert reasons_at(rejects) == {
        "BFCL_v3_simple.json:4": "missing_field", "BFCL_v3_simple.json:5": "bad_call",
        "BFCL_v3_simple.json:6": "bad_argument_type", "BFCL_v3_simple.json:7": "bad_tool_spec"}
    assert "possible_answer/BFCL_v3_simple.json" in rejects[0]["detail"]
    assert sorted(kept) == ["irrelevance_0", "irrelevance_1", "simple_0", "simple_1",
                            "simple_2", "simple_7"]
    assert calls(kept["irrelevance_0"]) == [] and calls(kept["irrelevance_1"]) == []
    # the first accepted value; "" first means omitted
    assert calls(kept["simple_0"]) == [{"name": "calculate_triangle_area", "arguments": {
        "base": 10, "height": 5, "unit": "units"}}]
    assert calls(kept["simple_1"]) == [{"name": "get_weather", "arguments": {"location": "Paris"}}]
    assert calls(kept["simple_2"]) == [{"name": "health.bmi", "arguments": {
        "weight": 70, "height": 1.75, "options": {"system": "metric", "round_to": 1},
        "home": [48.85, 2.35]}}]
    props = json.loads(kept["simple_2"]["tools"])[0]["parameters"]["properties"]
    assert props["weight"] == {"type": "number", "description": "Weight in kg.",
                               "x-original-type": "float"}
    assert props["home"]["type"] == "array" and props["home"]["items"]["type"] == "number"
    assert props["options"]["type"] == "object"
    assert props["options"]["properties"]["round_to"] == {"type": "integer",
                                                          "description": "Decimals."}
    assert props["note"] == {"description": "Free note.", "x-original-type": "any"}
    assert kept["simple_7"]["messages"][0] == {"role": "system", "content": "Be exact."}


def test_bfcl_inline_ground_truth(tmp_path: Path) -> None:
    path = tmp_path / "merged.jsonl"  # no possible_answer/ folder: answers carried inline
    path.write_text(json.dumps({"id": "m_0", "question": "Factorial of 3?", "function": {
        "name": "fact", "parameters": {"type": "dict", "properties": {"n": {"type": "integer"}},
                                       "required": ["n"]}},
        "ground_truth": [{"fact": {"n": [3]}}]}) + "\n")
    summary, _, kept, _ = run(tmp_path, SourceSpec(str(path), format="bfcl"))
    assert summary["kept"] == 1 and calls(kept["m_0"]) == [{"name": "fact",
                                                            "arguments": {"n": 3}}]


# --------------------------------------------------------------------------- hammer test sets

HAMMER = FIXTURES / "hammer_testset" / "seal_tools.jsonl"


def test_hammer_testset_fixture(tmp_path: Path) -> None:
    summary, sources, kept, rejects = run(tmp_path, SourceSpec(str(HAMMER)))
    assert summary == {
        "records": 8, "examples": 8, "kept": 3, "rejected": 4, "duplicates": 1,
        "by_reason": {"bad_call": 1, "bad_field": 1, "empty_query": 1, "unknown_function": 1},
        "by_task": {"seal_tools": 3}}
    assert sources[0]["format"] == "hammer_testset"
    assert reasons_at(rejects) == {
        "seal_tools.jsonl:4": "bad_field", "seal_tools.jsonl:5": "empty_query",
        "seal_tools.jsonl:6": "bad_call", "seal_tools.jsonl:8": "unknown_function"}
    assert sorted(kept) == ["apibank-1", "raven-2", "seal-0"]
    conversation = kept["apibank-1"]
    assert [m["role"] for m in conversation["messages"]] == ["system", "user", "assistant",
                                                             "user"]
    # an xLAM flat tool (JSON string) is converted like xLAM's
    assert json.loads(conversation["tools"])[0]["parameters"] == {
        "type": "object", "properties": {
            "symbol": {"type": "string", "description": "Ticker symbol.", "x-python-type": "str"},
            "date": {"type": "string", "description": "Date, default is today.",
                     "default": "today", "x-python-type": "str, optional"}},
        "required": ["symbol"]}
    assert calls(conversation) == [{"name": "QueryStock", "arguments": {
        "symbol": "NVDA", "date": "2024-03-01"}}]
    assert json.loads(kept["seal-0"]["tools"])[0]["parameters"]["properties"]["passengers"] == {
        "type": "integer", "description": "Number of passengers.", "default": 1}
    assert calls(kept["raven-2"]) == []


# --------------------------------------------------------------------------- xlam (+ irrelevance)

XLAM = FIXTURES / "xlam"
X = "xlam_function_calling_60k.json"


def test_xlam_array_and_irrelevance_companion(tmp_path: Path) -> None:
    summary, sources, kept, rejects = run(
        tmp_path,
        SourceSpec(str(XLAM / X), task="fc", max_row_bytes=4000),
        SourceSpec(str(XLAM / "xlam_irrelevance.jsonl"), task="irrelevance"))
    assert summary == {
        "records": 11, "examples": 11, "kept": 5, "rejected": 5, "duplicates": 1,
        "by_reason": {"bad_argument_type": 1, "bad_json": 1, "invalid_utf8": 1,
                      "missing_required_argument": 1, "row_too_large": 1},
        "by_task": {"fc": 2, "irrelevance": 3}}
    assert [(s["name"], s["format"], s["records"], s["duplicates"]) for s in sources] == [
        ("xlam_function_calling_60k", "xlam", 8, 1), ("xlam_irrelevance", "xlam", 3, 0)]
    assert reasons_at(rejects) == {f"{X}#2": "bad_json", f"{X}#3": "bad_argument_type",
                                   f"{X}#4": "missing_required_argument", f"{X}#6": "invalid_utf8",
                                   f"{X}#7": "row_too_large"}
    assert sorted(kept) == ["0", "1", "100000", "100001", "100002"]
    assert calls(kept["1"]) == [
        {"name": "sort_numbers", "arguments": {"numbers": [3.5, 1, 2.25], "descending": True}},
        {"name": "fibonacci_numbers", "arguments": {"n": 7}}]
    assert all(calls(kept[i]) == [] and kept[i]["task"] == "irrelevance"
               for i in ("100000", "100001", "100002"))


def test_every_reason_is_exercised_by_a_fixture(tmp_path: Path) -> None:
    seen: set[str] = set()
    for k, specs in enumerate([[SourceSpec(str(GLAIVE))], [SourceSpec(str(SHAREGPT))],
                               [SourceSpec(str(OPENAI))], [SourceSpec(str(BFCL))],
                               [SourceSpec(str(HAMMER))],
                               [SourceSpec(str(XLAM / X), max_row_bytes=4000)]]):
        seen |= set(ingest(specs, tmp_path / str(k)).summary["by_reason"])
    # unknown_format: only for a source with no parseable row; too_deep: tests/test_ingest.py
    assert set(REASONS) - seen == {"unknown_format", "too_deep"}


# --------------------------------------------------------------------------- detection & fuzzing


def test_detection_of_each_fixture() -> None:
    expected = {GLAIVE: "glaive", SHAREGPT: "sharegpt", OPENAI: "openai",
                BFCL / "BFCL_v3_simple.json": "bfcl", HAMMER: "hammer_testset", XLAM / X: "xlam"}
    for path, name in expected.items():
        _, first = next(read_records(path))
        assert isinstance(first, dict) and detect_format(first) == name, path


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["name", "arguments", "role", "content", "from", "value", "type",
                         "function", "parameters", "properties", "required", "tool_calls",
                         "x"]), inner, max_size=4),
    max_leaves=14)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fmt=st.sampled_from(sorted(set(FORMATS) - {"xlam"})), fields=st.lists(_json, min_size=6,
                                                                            max_size=6),
       as_text=st.lists(st.booleans(), min_size=6, max_size=6))
def test_normalizers_only_raise_row_errors(fmt: str, fields: list[Any],
                                           as_text: list[bool]) -> None:
    keys = ["query", "tools", "answers", "system", "chat", "conversations", "messages",
            "question", "function", "ground_truth", "functions", "id"]
    record = {k: (json.dumps(v) if t else v) for k, v, t in zip(keys, fields + fields,
                                                                as_text + as_text)}
    if fmt == "glaive":
        record["system"] = "SYSTEM: x. Use them if required - " + json.dumps(fields[0])
        record["chat"] = "USER: hi\n\n\nASSISTANT: <functioncall> " + json.dumps(fields[1])
    try:
        candidates = FORMATS[fmt].normalize(record, source="s", task="t", index=0)
    except RowError as e:
        assert e.reason in REASONS
        return
    for c in candidates:
        if c.row is not None:
            validate_example(c.row)
            assert pa.Table.from_pylist([c.row], schema=EXAMPLE_SCHEMA).num_rows == 1
        else:
            assert c.error is not None and c.error.reason in REASONS


@pytest.mark.parametrize("value, schema, fits", [
    (3, {"type": "number"}, True), (3.5, {"type": "integer"}, False),
    (True, {"type": "integer"}, False), (True, {"type": "boolean"}, True),
    ("3", {"type": "integer"}, False), ([1, "a"], {"type": "array", "items": {"type": "integer"}},
                                        False),
    ({"a": 1}, {"type": "object", "properties": {"a": {"type": "string"}}}, False),
    ({"b": 1}, {"type": "object", "properties": {"a": {"type": "string"}}}, True),
    (None, {"type": ["string", "null"]}, True), ("x", {"type": "HashMap"}, True),
    ("x", {}, True), ([[1]], {"type": "array", "items": {"type": "array"}}, True),
])
def test_fits_type(value: Any, schema: dict[str, Any], fits: bool) -> None:
    assert fits_type(value, schema) is fits


# --------------------------------------------------------------------------- sources


def test_hf_source_without_datasets_is_a_clear_error(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    spec = SourceSpec("hf://Salesforce/xlam-function-calling-60k")
    assert (spec.name, spec.task) == ("xlam-function-calling-60k", "xlam-function-calling-60k")
    with pytest.raises(SourceError, match=r"source 'hf://Salesforce/xlam-function-calling-60k'"
                                          r".*'datasets' package.*not installed"):
        ingest([spec], tmp_path / "out")
    assert not (tmp_path / "out" / "examples.parquet").exists()


def _fake_datasets(rows: list[dict[str, Any]] | Exception) -> types.ModuleType:
    """A stand-in for the `datasets` package (not a dependency): streams ``rows`` or fails."""
    module = types.ModuleType("datasets")
    calls_seen: list[tuple[str, str, bool]] = []

    def load_dataset(dataset_id: str, split: str, streaming: bool) -> Iterator[dict[str, Any]]:
        calls_seen.append((dataset_id, split, streaming))
        if isinstance(rows, Exception):
            raise rows
        return iter(rows)

    module.load_dataset = load_dataset  # type: ignore[attr-defined]
    module.calls_seen = calls_seen  # type: ignore[attr-defined]
    return module


def test_hf_source_unreachable_is_a_clear_error(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", _fake_datasets(
        ConnectionError("Couldn't reach 'org/data' on the Hub (LocalEntryNotFoundError)")))
    with pytest.raises(SourceError, match=r"source 'hf://org/data:test'.*cannot read Hugging "
                                          r"Face dataset 'org/data' \(split 'test'\).*Offline"):
        ingest([SourceSpec("hf://org/data:test", format="xlam")], tmp_path / "out")


def test_hf_source_streams_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [dict(r) for r in synth_rows(3, seed=5)] + [{"id": 9, "query": "q"}]
    fake = _fake_datasets(rows)
    monkeypatch.setitem(sys.modules, "datasets", fake)
    summary, sources, kept, rejects = run(tmp_path, SourceSpec("hf://org/synth", task="fc"))
    assert fake.calls_seen == [("org/synth", "train", True), ("org/synth", "train", True)]
    assert (summary["kept"], summary["rejected"], sources[0]["format"]) == (3, 1, "xlam")
    assert rejects[0]["location"] == "hf://org/synth:train#3"
    assert rejects[0]["reason"] == "missing_field"
    assert sources[0]["files"] == [{"path": "hf://org/synth", "dataset": "org/synth",
                                    "split": "train", "sha256": None}]


def test_source_config_keeps_hf_ids_through_path_resolution() -> None:
    assert SourceConfig(path="/base/configs/hf:/org/name:dev").path == "hf://org/name:dev"
    assert SourceConfig(path="data/x.jsonl").max_row_bytes == DEFAULT_MAX_ROW_BYTES
    spec = SourceSpec.from_config(SourceConfig(path="hf://org/name", max_row_bytes=7,
                                               format="glaive", task="t"))
    assert (spec.path, spec.format, spec.task, spec.name, spec.max_row_bytes) == (
        "hf://org/name", "glaive", "t", "name", 7)


def test_cli_ingest_names_an_unavailable_hf_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from flows.cli import main

    monkeypatch.setitem(sys.modules, "datasets", None)
    assert main(["ingest", "--input", "hf://org/corpus:dev", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hammer: source 'hf://org/corpus:dev'") and "Traceback" not in err


def test_json_array_streams_across_chunk_boundaries(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    records = [{"id": i, "text": "Zürich ☃ " * (i % 4), "n": 12345678 * i} for i in range(40)]
    path = tmp_path / "big.json"
    body = json.dumps(records, ensure_ascii=False, indent=1).encode()
    bad = b'{"id": 99, "text": "\xff\xfe"}'  # invalid UTF-8 in one element only
    path.write_bytes(body[:-1] + b",\n" + bad + b",\n 7\n]\n")
    monkeypatch.setattr(readers, "_CHUNK", 7)  # elements, numbers and ☃ straddle chunks
    got = list(read_records(path))
    assert [v for _, v in got[:40]] == records
    assert isinstance(got[40][1], RowError) and got[40][1].reason == "invalid_utf8"
    assert isinstance(got[41][1], RowError) and got[41][1].reason == "bad_json"  # 7: not an object
    assert [loc.rsplit("#", 1)[1] for loc, _ in got] == [str(i) for i in range(42)]
    (tmp_path / "empty.json").write_text(" [ ] ")
    assert list(read_records(tmp_path / "empty.json")) == []
    (tmp_path / "trailing.json").write_text('[{"a": 1}] x')
    with pytest.raises(SourceError, match="after the closing"):
        list(read_records(tmp_path / "trailing.json"))


def test_truncated_gzip_is_a_source_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.jsonl.gz"
    data = gzip.compress(b"".join(json.dumps({"n": i, "pad": "x" * 50}).encode() + b"\n"
                                  for i in range(2000)), mtime=0)
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match="cut.jsonl.gz is corrupt or truncated"):
        list(read_records(path))


def test_pretty_printed_single_object_and_long_lines(tmp_path: Path) -> None:
    one = tmp_path / "one.json"
    one.write_text(json.dumps({"a": [1, 2]}, indent=2))
    assert list(read_records(one)) == [(f"{one}#0", {"a": [1, 2]})]
    lines = tmp_path / "long.jsonl"
    lines.write_bytes(b'{"a": "' + b"x" * 300 + b'"}\n{"b": 1}\n' + b'{"c": "' + b"y" * 300)
    got = list(read_records(lines, max_row_bytes=100))
    assert [v.reason if isinstance(v, RowError) else v for _, v in got] == [
        "row_too_large", {"b": 1}, "row_too_large"]
    assert "309 bytes" in got[0][1].detail and "307 bytes" in got[2][1].detail


def test_parquet_rows_over_the_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist([{"query": "short", "n": 1}, {"query": "x" * 500, "n": 2}]),
                   path)
    got = list(read_records(path, max_row_bytes=100))
    assert got[0][1] == {"query": "short", "n": 1}
    assert isinstance(got[1][1], RowError) and got[1][1].reason == "row_too_large"
    nested = tmp_path / "nested.parquet"  # nested columns: measured as JSON
    pq.write_table(pa.Table.from_pylist([{"conversations": [{"from": "human", "value": "z" * 200}]}]),
                   nested)
    assert next(read_records(nested, max_row_bytes=100))[1].reason == "row_too_large"



@pytest.mark.parametrize("text", [
    '{"a":1,"a":2}', "[1e400]", "[-0.0]", "[1.0000000000000002]", "[NaN]", '["\\ud800"]', " [1] ",
    "[18446744073709551615]", "[18446744073709551616]", "[-9223372036854775809]",
    '{"max":123456789012345678901234567890}', "[1,]", '{"a":}', "",
    '["\ud800", 123456789012345678901234567890]', '["١٢", 1234567890123456789012]'])
def test_parse_json_is_json_loads(text: str) -> None:
    """orjson with json's semantics: the same values (big integers stay integers, not floats),
    the same error for invalid JSON."""
    try:
        expected = ("ok", repr(json.loads(text)))
    except json.JSONDecodeError as err:
        expected = ("error", str(err))
    try:
        got = ("ok", repr(parse_json(text)))
    except json.JSONDecodeError as err:
        got = ("error", str(err))
    assert got == expected


def test_an_integer_beyond_64_bits_is_still_an_integer_for_the_validator() -> None:
    tool = {"name": "f", "parameters": {"type": "object", "properties": {"n": {"type": "integer"}}}}
    validate_example({"messages": [{"role": "user", "content": "q"}], "tools": dumps([tool]),
                      "calls": '[{"name":"f","arguments":{"n":123456789012345678901234567890}}]'})


# --------------------------------------------------------------------------- artifact writer


def test_artifact_writer_matches_write_table_and_aborts_cleanly(tmp_path: Path) -> None:
    rows = [{"source": "s", "location": f"f:{i}", "reason": "bad_json", "detail": "d",
             "raw": "r" * i} for i in range(50)]
    table = pa.Table.from_pylist(rows, schema=REJECT_SCHEMA)
    a = write_table(table, tmp_path / "a" / "x.parquet", kind="rejects", extra={"k": 1})
    with ArtifactWriter(tmp_path / "b" / "x.parquet", REJECT_SCHEMA, kind="rejects",
                        extra={"k": 1}) as writer:
        writer.write_rows(rows)
    b = writer.finish()
    assert (tmp_path / "a" / "x.parquet").read_bytes() == (tmp_path / "b" / "x.parquet").read_bytes()
    assert a.manifest == b.manifest
    with pytest.raises(RuntimeError, match="boom"):
        with ArtifactWriter(tmp_path / "b" / "x.parquet", REJECT_SCHEMA, kind="rejects") as w:
            w.write_rows(rows[:3])
            raise RuntimeError("boom")
    assert (tmp_path / "b" / "x.parquet").read_bytes() == (tmp_path / "a" / "x.parquet").read_bytes()
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["x.manifest.json", "x.parquet"]


def test_artifact_writer_seal_then_publish_or_abort(tmp_path: Path) -> None:
    rows = [{"source": "s", "location": f"f:{i}", "reason": "bad_json", "detail": "d", "raw": "r"}
            for i in range(20)]
    w = ArtifactWriter(tmp_path / "x.parquet", REJECT_SCHEMA, kind="rejects")
    w.write_rows(rows)
    digest = w.seal()
    assert w.seal() == digest and not (tmp_path / "x.parquet").exists()  # sealed: not published yet
    with pytest.raises(RuntimeError, match="already finished or aborted"):
        w.write_rows(rows)
    art = w.finish()
    assert art.content_hash == digest == sha256_file(tmp_path / "x.parquet")
    w.abort()  # after publishing: a no-op
    assert (tmp_path / "x.parquet").exists()

    w = ArtifactWriter(tmp_path / "y.parquet", REJECT_SCHEMA, kind="rejects")
    w.write_rows(rows)
    w.seal()
    w.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.manifest.json", "x.parquet"]  # no temp file left
    with pytest.raises(RuntimeError, match="was aborted"):
        w.finish()


def test_artifact_writer_hash_follows_the_writes(tmp_path: Path) -> None:
    """The content hash is made as the row groups are written (only the footer at the end):
    it must be the hash of the published bytes whatever the batching."""
    rows = [{"source": "s", "location": f"f:{i}", "reason": "bad_json", "detail": "d" * (i % 7),
             "raw": f"{i}" * 300} for i in range(3000)]
    for sizes in ([3000], [1, 999, 2000], [700] * 4 + [200]):
        path = tmp_path / f"{len(sizes)}.parquet"
        with ArtifactWriter(path, REJECT_SCHEMA, kind="rejects") as w:
            at = 0
            for n in sizes:
                w.write_rows(rows[at:at + n])
                at += n
                assert w._hashed > 0  # the file's bytes so far are hashed already
            art = w.finish()
        assert art.content_hash == sha256_file(path)


# --------------------------------------------------------------------------- synth


def test_synth_corpus_shape_and_determinism(tmp_path: Path) -> None:
    info = write_synth(tmp_path / "a.jsonl", 600, seed=3)
    again = write_synth(tmp_path / "b.jsonl", 600, seed=3)
    other = write_synth(tmp_path / "c.jsonl", 600, seed=4)
    prefix = write_synth(tmp_path / "d.jsonl", 200, seed=3)
    a = (tmp_path / "a.jsonl").read_bytes()
    assert a == (tmp_path / "b.jsonl").read_bytes() != (tmp_path / "c.jsonl").read_bytes()
    assert a.startswith((tmp_path / "d.jsonl").read_bytes()) and prefix["rows"] == 200
    assert info == {"path": str(tmp_path / "a.jsonl"), "rows": 600, "seed": 3, "format": "jsonl",
                    "bytes": len(a)} and again["bytes"] == len(a) and other["rows"] == 600
    assert 1900 < len(a) / 600 < 2600  # about 2.2 KB a row
    rows = [json.loads(line) for line in a.splitlines()]
    tools = [json.loads(r["tools"]) for r in rows]
    assert {len(t) for t in tools} == {1, 2, 3, 4, 5}
    assert {len(f["parameters"]) for t in tools for f in t} == {1, 2, 3, 4, 5}
    specs = [s for t in tools for f in t for s in f["parameters"].values()]
    assert any("default" in s for s in specs) and any(s["type"].endswith(", optional")
                                                      for s in specs)
    assert any(len(json.loads(r["answers"])) == 2 for r in rows)

    write_synth(tmp_path / "a.parquet", 600, seed=3)
    assert pq.read_table(tmp_path / "a.parquet").to_pylist() == rows
    result = ingest([SourceSpec(str(tmp_path / "a.jsonl")),
                     SourceSpec(str(tmp_path / "a.parquet"), name="pq")], tmp_path / "out")
    assert result.summary["by_task"] == {"a": 600, "pq": 0}  # every row valid and kept once
    assert result.summary["duplicates"] == 600  # the parquet copy: exact duplicates
    assert not list(tmp_path.glob(".*.tmp"))


def test_cli_synth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from flows.cli import main

    assert main(["synth", "--rows", "25", "--seed", "1", "--out",
                 str(tmp_path / "s.parquet")]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (line["rows"], line["format"], line["seed"]) == (25, "parquet", 1)
    assert pq.read_metadata(tmp_path / "s.parquet").num_rows == 25
    assert main(["synth", "--rows", "5", "--format", "jsonl", "--out",
                 str(tmp_path / "s.txt")]) == 0
    assert len((tmp_path / "s.txt").read_text().splitlines()) == 5
