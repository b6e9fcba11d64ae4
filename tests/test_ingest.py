"""Ingest: readers, the xLAM normalizer, the validator, the artifacts it writes, the sample."""

from __future__ import annotations

import copy
import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hammer_core.artifacts import open_artifact
from hammer_core.data.formats import FORMATS, REASONS, RowError, detect_format
from hammer_core.data.formats.xlam import normalize_xlam, python_type_to_schema
from hammer_core.data.ingest import SourceSpec, ingest
from hammer_core.data.readers import SourceError, read_records
from hammer_core.data.sample_data import BAD_ROWS, generate_sample
from hammer_core.schema import EXAMPLE_SCHEMA, REJECT_SCHEMA, dumps
from hammer_core.data.validation import MAX_DEPTH, validate_example

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"


# --------------------------------------------------------------------------- fixtures

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "parameters": {
        "city": {"type": "str", "description": "City name."},
        "units": {"type": "str, optional", "description": "Units. Default is 'metric'.",
                  "default": "metric"},
        "days": {"type": "int", "description": "Days ahead.", "default": 0},
        "hours": {"type": "List[int], optional", "description": "Hours of the day."},
        "when": {"type": "Union[str, int]", "description": "A time expression."},
        "options": {"type": "Dict[str, Any], optional", "description": "Extra options.",
                    "enum_hint": ["a", "b"]},
    },
}
PING_TOOL = {"name": "ping", "description": "Ping the service.", "parameters": {}}
GOOD_ANSWER = [{"name": "get_weather", "arguments": {"city": "Paris", "units": "metric",
                                                    "when": "now"}}]


def xlam(query: Any = "Weather in Paris now, metric units?", tools: Any = None,
         answers: Any = None, **extra: Any) -> dict[str, Any]:
    """An xLAM record with JSON-string tools/answers (pass a str to inject raw text)."""
    tools = [WEATHER_TOOL, PING_TOOL] if tools is None else tools
    answers = GOOD_ANSWER if answers is None else answers
    return {**extra, "query": query,
            "tools": tools if isinstance(tools, str) else json.dumps(tools),
            "answers": answers if isinstance(answers, str) else json.dumps(answers)}


def call(name: str = "get_weather", **arguments: Any) -> list[dict[str, Any]]:
    return [{"name": name, "arguments": arguments or {"city": "Oslo", "when": "now"}}]


# One fixture line per reject reason (line number -> reason), and valid lines.
FIXTURE_LINES: list[tuple[str, str | None]] = [
    (json.dumps(xlam(id=1)), None),                                             # 1 kept
    (json.dumps(xlam(query="Ping it.", answers=[{"name": "ping", "arguments": {}}])), None),  # 2
    ('{"id": 3, "query": "half a line', "bad_json"),                            # 3
    (json.dumps(xlam(id=4, tools="[{'name': 'get_weather'}]")), "bad_json"),    # 4
    (json.dumps({"id": 5, "query": "q", "tools": "[]"}), "missing_field"),      # 5
    (json.dumps(xlam(id=6, query=42)), "bad_field"),                            # 6
    (json.dumps(xlam(id=7, tools=[{"description": "no name"}])), "bad_tool_spec"),  # 7
    (json.dumps(xlam(id=8, tools=[WEATHER_TOOL, {**PING_TOOL, "name": "get_weather"}])),
     "duplicate_tool"),                                                         # 8
    (json.dumps(xlam(id=9, answers={"name": "ping"})), "bad_call"),             # 9
    (json.dumps(xlam(id=10, answers=call("get_forecast"))), "unknown_function"),  # 10
    (json.dumps(xlam(id=11, answers=call(city="Oslo", when="now", country="NO"))),
     "unknown_argument"),                                                       # 11
    (json.dumps(xlam(id=12, answers=call(city="Oslo"))), "missing_required_argument"),  # 12
    (json.dumps(xlam(id=13, query="  \n ")), "empty_query"),                    # 13
    (json.dumps(xlam(id=1, query="Same id as line 1.")), "duplicate_id"),       # 14
    ("", None),                                                                 # 15 blank: skipped
    ("[1, 2]", "bad_json"),                                                     # 16
    (json.dumps(xlam(id=17, tools=[WEATHER_TOOL, WEATHER_TOOL])), None),        # 17 kept (dedup)
    (json.dumps(xlam(id=18, answers=[])), None),                                # 18 kept (no call)
    (json.dumps(xlam(id=19, answers=call(city="Oslo", when="now", days="three"))),
     "bad_argument_type"),                                                      # 19
    (json.dumps(xlam(id=1)), None),                                             # 20 duplicate of 1
    (json.dumps(xlam(id=21, query="Weather in \ud800?")), "invalid_utf8"),     # 21 lone surrogate
    (json.dumps(xlam(id=22, query="Weather? " + "x" * 5000)), "row_too_large"),  # 22
]
FIXTURE_MAX_ROW_BYTES = 4096
FIXTURE_REASONS = {n: r for n, (_, r) in enumerate(FIXTURE_LINES, start=1) if r}


@pytest.fixture
def fixture_jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "fixture.jsonl"
    path.write_text("\n".join(line for line, _ in FIXTURE_LINES) + "\n")
    return path


def read_rows(path: Path) -> list[dict[str, Any]]:
    return pq.read_table(path).to_pylist()


# --------------------------------------------------------------------------- bundled sample

SAMPLE_SUMMARY = {
    "records": 400, "examples": 400, "kept": 390, "rejected": 10, "duplicates": 0,
    "by_reason": {"bad_json": 3, "empty_query": 2, "missing_required_argument": 1,
                  "unknown_argument": 2, "unknown_function": 2},
    "by_task": {"finance": 195, "travel": 195},
}
SAMPLE_REJECTS = {  # location suffix -> reason; must match sample_data.BAD_ROWS and the README
    "travel.jsonl:13": "bad_json", "travel.jsonl:58": "unknown_function",
    "travel.jsonl:97": "unknown_argument", "travel.jsonl:142": "empty_query",
    "travel.jsonl:187": "bad_json",
    "finance.jsonl:21": "bad_json", "finance.jsonl:64": "unknown_function",
    "finance.jsonl:110": "unknown_argument", "finance.jsonl:151": "empty_query",
    "finance.jsonl:176": "missing_required_argument",
}


def test_sample_counts(tmp_path: Path) -> None:
    result = ingest([SourceSpec(str(SAMPLE / "travel.jsonl")),
                     SourceSpec(str(SAMPLE / "finance.jsonl"))], tmp_path)
    assert result.summary == SAMPLE_SUMMARY
    assert [(s["name"], s["format"], s["records"], s["examples"], s["kept"], s["rejected"])
            for s in result.sources] == [("travel", "xlam", 200, 200, 195, 5),
                                        ("finance", "xlam", 200, 200, 195, 5)]
    assert json.loads((tmp_path / "summary.json").read_text()) == {**SAMPLE_SUMMARY,
                                                                   "sources": result.sources}
    rejects = read_rows(tmp_path / "rejects.parquet")
    assert {Path(r["location"]).name: r["reason"] for r in rejects} == SAMPLE_REJECTS
    assert {f"{f}:{n}": reason for f, rows in BAD_ROWS.items()
            for n, (reason, _) in rows.items()} == SAMPLE_REJECTS

    examples = pq.read_table(tmp_path / "examples.parquet")
    assert examples.schema.equals(EXAMPLE_SCHEMA, check_metadata=False)
    assert examples.num_rows == 390 == len(set(examples.column("id").to_pylist()))
    assert open_artifact(tmp_path / "examples.parquet").manifest["extra"]["summary"] == \
        SAMPLE_SUMMARY


def test_sample_matches_generator(tmp_path: Path) -> None:
    for path in generate_sample(tmp_path, seed=0):
        assert path.read_bytes() == (SAMPLE / path.name).read_bytes(), (
            f"{path.name} drifted from the generator: rerun "
            "`python -m hammer_core.data.sample_data data/sample` and update the README counts")


def test_sample_has_defaults_and_parallel_calls() -> None:
    default_uses = parallel = 0
    for name in ("travel.jsonl", "finance.jsonl"):
        for location, rec in read_records(SAMPLE / name):
            if int(location.rsplit(":", 1)[1]) in BAD_ROWS[name]:
                continue
            assert isinstance(rec, dict)
            tools = {t["name"]: t for t in json.loads(rec["tools"])}
            calls = json.loads(rec["answers"])
            parallel += len(calls) == 2
            for c in calls:
                spec = tools[c["name"]]["parameters"]
                default_uses += sum(1 for k, v in c["arguments"].items()
                                    if "default" in spec[k] and spec[k]["default"] == v)
                for k, v in c["arguments"].items():  # argument strings appear in the query
                    if isinstance(v, str) and v != "married_joint":  # "filing jointly"
                        assert v in rec["query"], (rec["query"], k, v)
    assert default_uses >= 40 and parallel >= 30


# --------------------------------------------------------------------------- fixture file


def test_fixture_one_reject_per_reason(fixture_jsonl: Path, tmp_path: Path) -> None:
    result = ingest([SourceSpec(str(fixture_jsonl), max_row_bytes=FIXTURE_MAX_ROW_BYTES)],
                    tmp_path / "out")
    expected = {r: 1 for r in FIXTURE_REASONS.values()}
    expected["bad_json"] = 3
    assert result.summary == {"records": 21, "examples": 21, "kept": 4, "rejected": 16,
                              "duplicates": 1, "by_reason": expected, "by_task": {"fixture": 4}}
    assert result.sources[0]["records"] == 21  # line 15 is blank: skipped, not counted
    # every other code is exercised by the conversation formats (tests/test_formats.py), and
    # too_deep by the nesting-depth tests below
    assert set(REASONS) - set(expected) == {"unknown_format", "no_tools", "no_target", "too_deep"}

    rejects = read_rows(tmp_path / "out" / "rejects.parquet")
    assert pq.read_schema(tmp_path / "out" / "rejects.parquet").equals(REJECT_SCHEMA,
                                                                       check_metadata=False)
    assert {r["location"]: r["reason"] for r in rejects} == {
        f"{fixture_jsonl}:{n}": reason for n, reason in FIXTURE_REASONS.items()}
    by_line = {int(r["location"].rsplit(":", 1)[1]): r for r in rejects}
    assert by_line[3]["raw"] == '{"id": 3, "query": "half a line'
    assert "'get_forecast'" in by_line[10]["detail"]
    assert "'country'" in by_line[11]["detail"]
    assert "'when'" in by_line[12]["detail"]
    assert by_line[14]["detail"].endswith("fixture.jsonl:1")  # names the first occurrence
    assert "'days'" in by_line[19]["detail"] and '"three"' in by_line[19]["detail"]
    assert by_line[22]["detail"] == "line 22 is 5,905 bytes, over the limit of 4,096 (max_row_bytes)"
    assert by_line[22]["raw"].startswith("{") and len(by_line[22]["raw"]) == FIXTURE_MAX_ROW_BYTES
    assert all(r["source"] == "fixture" and r["detail"] for r in rejects)


def test_cli_counts_input_records_and_the_examples_made_from_them(tmp_path: Path, capsys) -> None:
    """5 OpenAI chat records, one with two assistant call turns: 6 examples (one a duplicate)."""
    from flows.cli import main

    weather = {"type": "function", "function": {
        "name": "get_weather", "description": "Current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}

    def turn(city: str) -> list[dict[str, Any]]:
        return [{"role": "assistant", "content": None, "tool_calls": [{"id": f"c-{city}", "type": "function",
                 "function": {"name": "get_weather", "arguments": json.dumps({"city": city})}}]},
                {"role": "tool", "tool_call_id": f"c-{city}", "content": "20 degrees"}]

    def record(rid: str, *cities: str) -> dict[str, Any]:
        messages: list[dict[str, Any]] = []
        for city in cities:
            messages += [{"role": "user", "content": f"Weather in {city}?"}, *turn(city)]
        return {"id": rid, "messages": messages, "tools": [weather]}

    records = [record("a", "Oslo"), record("b", "Lima"), record("c", "Rome", "Kyiv"), record("d", "Pune"),
               record("e", "Oslo")]  # "e": the same conversation as "a"
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["ingest", "--input", str(path), "--task", "weather", "--out", str(tmp_path / "out")]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == {"records": 5, "examples": 6, "kept": 5, "rejected": 0, "duplicates": 1,
                       "by_reason": {}, "by_task": {"weather": 5}}
    assert sorted(r["id"] for r in read_rows(tmp_path / "out" / "examples.parquet")) == [
        "a#t1", "b#t1", "c#t1", "c#t2", "d#t1"]
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [(s["records"], s["examples"]) for s in saved.pop("sources")] == [(5, 6)]
    assert saved == printed


def test_normalized_row_content(fixture_jsonl: Path, tmp_path: Path) -> None:
    ingest([SourceSpec(str(fixture_jsonl), task="weather",
                       max_row_bytes=FIXTURE_MAX_ROW_BYTES)], tmp_path)
    rows = read_rows(tmp_path / "examples.parquet")
    assert [r["id"] for r in rows] == ["1", "fixture-1", "17", "18"]
    row = rows[0]
    assert {k: row[k] for k in ("id", "source", "task", "parent_id", "variant")} == {
        "id": "1", "source": "fixture", "task": "weather", "parent_id": None,
        "variant": "original"}
    assert row["messages"] == [{"role": "user", "content": "Weather in Paris now, metric units?"}]
    expected_tools = [
        {"name": "get_weather", "description": "Current weather for a city.",
         "parameters": {"type": "object", "properties": {
             "city": {"type": "string", "description": "City name.", "x-python-type": "str"},
             "units": {"type": "string", "description": "Units. Default is 'metric'.",
                       "default": "metric", "x-python-type": "str, optional"},
             "days": {"type": "integer", "description": "Days ahead.", "default": 0,
                      "x-python-type": "int"},
             "hours": {"type": "array", "items": {"type": "integer"},
                       "description": "Hours of the day.", "x-python-type": "List[int], optional"},
             "when": {"description": "A time expression.", "x-python-type": "Union[str, int]"},
             "options": {"type": "object", "description": "Extra options.",
                         "enum_hint": ["a", "b"], "x-python-type": "Dict[str, Any], optional"},
         }, "required": ["city", "when"]}},
        {"name": "ping", "description": "Ping the service.",
         "parameters": {"type": "object", "properties": {}, "required": []}},
    ]
    assert row["tools"] == dumps(expected_tools)  # exact bytes: key order included
    assert row["calls"] == ('[{"name":"get_weather","arguments":'
                            '{"city":"Paris","units":"metric","when":"now"}}]')
    assert rows[1]["calls"] == '[{"name":"ping","arguments":{}}]'
    assert len(json.loads(rows[2]["tools"])) == 1  # identical duplicate tools collapsed
    assert rows[3]["calls"] == "[]"


@pytest.mark.parametrize("type_str, schema, optional", [
    ("str", {"type": "string"}, False),
    ("int, optional", {"type": "integer"}, True),
    ("float", {"type": "number"}, False),
    ("bool, optional", {"type": "boolean"}, True),
    ("list", {"type": "array"}, False),
    ("List[str]", {"type": "array", "items": {"type": "string"}}, False),
    ("List[List[int]], optional", {"type": "array", "items": {"type": "array",
                                                              "items": {"type": "integer"}}}, True),
    ("Tuple[float, float]", {"type": "array", "items": {"type": "number"}}, False),
    ("Tuple[int, str]", {"type": "array"}, False),
    ("dict", {"type": "object"}, False),
    ("Dict[str, Any], optional", {"type": "object"}, True),
    ("Union[int, float]", {}, False),
    ("Callable", {}, False),
    ("Any", {}, False),
    ("Optional[int]", {"type": "integer"}, True),
    ("List[int", {}, False),
])
def test_python_type_mapping(type_str: str, schema: dict[str, Any], optional: bool) -> None:
    assert python_type_to_schema(type_str) == (schema, optional)


# --------------------------------------------------------------------------- input formats

FORMAT_RECORDS = [
    xlam(id=1),
    xlam(id=2, query="Pläne für Zürich?", answers=call(city="Zürich", when="morgen")),
    xlam(query="No id here.", answers=[]),
    xlam(id=4, answers=call("nope")),
    xlam(id=5, tools="not json"),
]


def write_inputs(tmp_path: Path) -> dict[str, Path]:
    lines = "\n".join(json.dumps(r, ensure_ascii=False) for r in FORMAT_RECORDS) + "\n"
    array = json.dumps(FORMAT_RECORDS, ensure_ascii=False, indent=2)
    paths = {ext: tmp_path / f"in{ext}" for ext in
             (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".parquet")}
    paths[".jsonl"].write_text(lines, encoding="utf-8")
    paths[".json"].write_text(array, encoding="utf-8")
    paths[".jsonl.gz"].write_bytes(gzip.compress(lines.encode(), mtime=0))
    paths[".json.gz"].write_bytes(gzip.compress(array.encode(), mtime=0))
    pq.write_table(pa.Table.from_pylist(FORMAT_RECORDS), paths[".parquet"])
    return paths


def test_input_formats_give_identical_examples(tmp_path: Path) -> None:
    results = {}
    for ext, path in write_inputs(tmp_path).items():
        out = tmp_path / f"out{ext}"
        result = ingest([SourceSpec(str(path), name="corpus")], out)
        assert result.summary["examples"] == 5 and result.summary["kept"] == 3
        results[ext] = (pq.read_table(out / "examples.parquet"), result.examples.content_hash,
                        [r["reason"] for r in read_rows(out / "rejects.parquet")])
    first_table, first_hash, first_reasons = results[".jsonl"]
    assert first_table.column("id").to_pylist() == ["1", "2", "corpus-2"]
    assert first_reasons == ["unknown_function", "bad_json"]
    for ext, (table, content_hash, reasons) in results.items():
        assert table.equals(first_table), ext
        assert content_hash == first_hash, ext
        assert reasons == first_reasons, ext


def test_locations(tmp_path: Path) -> None:
    paths = write_inputs(tmp_path)
    assert [loc for loc, _ in read_records(paths[".jsonl.gz"])][:2] == [
        f"{paths['.jsonl.gz']}:1", f"{paths['.jsonl.gz']}:2"]
    for ext in (".json", ".json.gz", ".parquet"):
        assert [loc for loc, _ in read_records(paths[ext])][-1] == f"{paths[ext]}#4"


def test_jsonl_bad_lines_do_not_stop_reading(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1}\n\nnot json\n\xff\xfe\n{"b": 2}\n')
    got = list(read_records(path))
    assert [loc.rsplit(":", 1)[1] for loc, _ in got] == ["1", "3", "4", "5"]
    assert got[0][1] == {"a": 1} and got[3][1] == {"b": 2}
    assert isinstance(got[1][1], RowError) and got[1][1].reason == "bad_json"
    assert "line 3" in got[1][1].detail and got[1][1].raw == "not json"
    assert isinstance(got[2][1], RowError) and "UTF-8" in got[2][1].detail
    assert got[2][1].reason == "invalid_utf8"


def test_json_file_holding_json_lines_is_read_as_lines(tmp_path: Path) -> None:
    path = tmp_path / "bfcl_style.json"  # BFCL ships JSON lines under a .json name
    path.write_text('{"a": 1}\n{"a": 2}\n')
    assert list(read_records(path)) == [(f"{path}:1", {"a": 1}), (f"{path}:2", {"a": 2})]


def test_whole_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown input extension"):
        list(read_records(tmp_path / "x.csv"))
    bad_array = tmp_path / "x.json"
    bad_array.write_text('[{"a": 1}, {"a"')
    with pytest.raises(ValueError, match="not a valid JSON array"):
        list(read_records(bad_array))
    with pytest.raises(FileNotFoundError):
        list(read_records(tmp_path / "missing.jsonl"))
    other = tmp_path / "other.jsonl"
    other.write_text('{"instruction": "s", "output": "c"}\n')
    with pytest.raises(SourceError, match="cannot detect the format.*xlam"):
        ingest([SourceSpec(str(other))], tmp_path / "out")
    assert not (tmp_path / "out" / "examples.parquet").exists()  # nothing half-published
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_source_spec_defaults_and_limits(fixture_jsonl: Path, tmp_path: Path) -> None:
    spec = SourceSpec("some/dir/travel.jsonl.gz")
    assert (spec.name, spec.task, spec.format) == ("travel", "travel", "auto")
    assert SourceSpec("a.parquet", name="n").task == "n"
    with pytest.raises(ValueError, match="unknown format 'alpaca'.*xlam"):
        SourceSpec("a.jsonl", format="alpaca")
    with pytest.raises(ValueError, match="unique"):
        ingest([SourceSpec(str(fixture_jsonl)), SourceSpec(str(fixture_jsonl))], tmp_path)
    result = ingest([SourceSpec(str(fixture_jsonl), format="xlam", max_rows=4)], tmp_path / "m")
    assert (result.summary["records"], result.summary["examples"], result.summary["kept"]) == (4, 4, 2)


def test_folder_and_glob_sources(tmp_path: Path) -> None:
    for path in (str(SAMPLE), str(SAMPLE / "*.jsonl")):
        spec = SourceSpec(path)
        assert (spec.name, spec.task) == ("sample", "sample")
        result = ingest([spec], tmp_path / spec.name / str(len(path)))
        assert {k: result.summary[k] for k in ("records", "kept", "rejected")} == \
            {"records": 400, "kept": 390, "rejected": 10}  # README.md in the folder is skipped
        assert [Path(f["path"]).name for f in result.sources[0]["files"]] == \
            ["finance.jsonl", "travel.jsonl"]  # sorted path order
    with pytest.raises(FileNotFoundError, match="no input files match"):
        ingest([SourceSpec(str(tmp_path / "nothing" / "*.jsonl"))], tmp_path / "out")


def test_raw_text_is_truncated(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps(xlam(id=1, query="é" * 30_000, tools="{")) + "\n")
    ingest([SourceSpec(str(path))], tmp_path / "out")
    (reject,) = read_rows(tmp_path / "out" / "rejects.parquet")
    assert reject["reason"] == "bad_json"
    assert 9_000 < len(reject["raw"].encode()) <= 10_000 and reject["raw"].endswith("[truncated]")


def test_deterministic_bytes(fixture_jsonl: Path, tmp_path: Path) -> None:
    sources = [SourceSpec(str(fixture_jsonl)), SourceSpec(str(SAMPLE / "finance.jsonl"))]
    a, b = ingest(sources, tmp_path / "a"), ingest(sources, tmp_path / "b")
    for name in ("examples", "rejects"):
        assert (tmp_path / "a" / f"{name}.parquet").read_bytes() == \
            (tmp_path / "b" / f"{name}.parquet").read_bytes()
        assert (tmp_path / "a" / f"{name}.manifest.json").read_text() == \
            (tmp_path / "b" / f"{name}.manifest.json").read_text()
    assert a.examples.content_hash == b.examples.content_hash
    assert a.rejects.content_hash == b.rejects.content_hash
    assert a.examples.manifest["kind"] == "examples" and a.rejects.manifest["kind"] == "rejects"
    assert (tmp_path / "a" / "summary.json").read_text() == \
        (tmp_path / "b" / "summary.json").read_text()
    ids = a.examples.read().column("id").to_pylist()
    # input order; line 22 is under the default 1 MiB row limit, so it is kept here
    assert ids[:5] == ["1", "fixture-1", "17", "18", "22"] and ids[5] == "20001"


# --------------------------------------------------------------------------- formats & validator


def test_detect_format() -> None:
    assert detect_format(xlam()) == "xlam" and "xlam" in FORMATS
    with pytest.raises(ValueError, match=r"known formats: hammer_testset \(needs keys.*xlam"):
        detect_format({"instruction": "...", "output": "..."})


def canonical_row() -> dict[str, Any]:
    return normalize_xlam(xlam(id=7), source="s", task="t", index=0)


def _tools(row: dict[str, Any]) -> list[dict[str, Any]]:
    return json.loads(row["tools"])


def _with(row: dict[str, Any], **changes: Any) -> dict[str, Any]:
    row = copy.deepcopy(row)
    row.update({k: v if isinstance(v, str) or k == "messages" else dumps(v)
                for k, v in changes.items()})
    return row


@pytest.mark.parametrize("reason, mutate", [
    ("empty_query", lambda r: _with(r, messages=[{"role": "user", "content": " "}])),
    ("empty_query", lambda r: _with(r, messages=[{"role": "system", "content": "hi"}])),
    ("empty_query", lambda r: _with(r, messages=[{"role": "user", "content": "q"},
                                                 {"role": "assistant", "content": "a"},
                                                 {"role": "user", "content": ""}])),
    ("bad_json", lambda r: _with(r, tools="[{")),
    ("bad_json", lambda r: _with(r, calls="nope")),
    ("bad_tool_spec", lambda r: _with(r, tools={"name": "x"})),
    ("bad_tool_spec", lambda r: _with(r, tools=[{"name": 3}])),
    ("bad_tool_spec", lambda r: _with(r, tools=[{"name": "f", "parameters": []}])),
    ("bad_tool_spec", lambda r: _with(r, tools=[{"name": "f", "parameters": {
        "type": "object", "properties": {}, "required": ["ghost"]}}])),
    ("duplicate_tool", lambda r: _with(r, tools=_tools(r) + _tools(r)[:1])),
    ("bad_call", lambda r: _with(r, calls={"name": "ping", "arguments": {}})),
    ("bad_call", lambda r: _with(r, calls=[{"name": "ping", "arguments": "{}"}])),
    ("bad_call", lambda r: _with(r, calls=[{"arguments": {}}])),
    ("unknown_function", lambda r: _with(r, calls=[{"name": "pong", "arguments": {}}])),
    ("unknown_argument", lambda r: _with(r, calls=[{"name": "ping", "arguments": {"x": 1}}])),
    ("missing_required_argument",
     lambda r: _with(r, calls=[{"name": "get_weather", "arguments": {"when": "now"}}])),
])
def test_validate_example_rejects(reason: str, mutate: Any) -> None:
    row = canonical_row()
    validate_example(row)  # the unmutated row is fine
    with pytest.raises(RowError) as info:
        validate_example(mutate(row))
    assert info.value.reason == reason and info.value.detail


def test_validate_example_accepts_irrelevance_and_no_parameters() -> None:
    validate_example(_with(canonical_row(), calls=[]))
    validate_example(_with(canonical_row(), tools=[{"name": "f"}],
                           calls=[{"name": "f", "arguments": {}}]))


def test_row_error_reason_must_be_known() -> None:
    with pytest.raises(ValueError, match="unknown RowError reason"):
        RowError("oops", "x")


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(query=_json_values, tools=_json_values | st.text(max_size=20), answers=_json_values,
       as_string=st.booleans())
def test_normalize_xlam_only_raises_row_error(query: Any, tools: Any, answers: Any,
                                              as_string: bool) -> None:
    raw = {"query": query, "tools": json.dumps(tools) if as_string else tools,
           "answers": json.dumps(answers) if as_string else answers}
    try:
        row = normalize_xlam(raw, source="h", task="h", index=0)
    except RowError as e:
        assert e.reason in REASONS
    else:
        validate_example(row)
        examples = pa.Table.from_pylist([row], schema=EXAMPLE_SCHEMA)
        assert examples.num_rows == 1


def test_import_order_independent() -> None:
    for first in ("hammer_core.data.validation", "hammer_core.data.formats.xlam", "hammer_core.data.ingest"):
        subprocess.run([sys.executable, "-c", f"import {first}; import hammer_core.data.formats"],
                       check=True, cwd=REPO)


# --------------------------------------------------------------------------- nesting depth


def deep(n: int, leaf: str = "1") -> str:
    return "[" * n + leaf + "]" * n


def test_rows_nested_too_deep_are_rejected_and_the_run_goes_on(tmp_path: Path) -> None:
    # calls [{"arguments": {"when": X}}] are 3 deep around X ("when" takes any type)
    nested_args = {"city": "Oslo", "when": json.loads(deep(MAX_DEPTH - 2))}
    lines = [
        json.dumps(xlam(id=1)),                                         # 1 kept
        deep(100_000, ""),                                              # 2 the decoder gives up
        '{"a":' * 100_000 + "1" + "}" * 100_000,                        # 3
        json.dumps(xlam(id=4, tools=deep(100_000, ""))),                # 4 a JSON-string field
        json.dumps(xlam(id=5, answers=call(**nested_args))),            # 5 parses, over MAX_DEPTH
        json.dumps(xlam(id=6, tools=[{**WEATHER_TOOL, "parameters": {   # 6 List[List[...]]
            "city": {"type": "List[" * 20_000 + "int" + "]" * 20_000}}}])),
        '{"id": 7, "x": ' + "7" * 5000 + "}",                           # 7 over 4,300 digits
        json.dumps(xlam(id=8, query="Weather in Oslo now?")),           # 8 kept
    ]
    path = tmp_path / "deep.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = ingest([SourceSpec(str(path), format="xlam")], tmp_path / "out")
    assert (result.summary["kept"], result.summary["rejected"]) == (2, 6)
    rejects = {int(r["location"].rsplit(":", 1)[1]): r for r in read_rows(tmp_path / "out" / "rejects.parquet")}
    assert {n: r["reason"] for n, r in rejects.items()} == {
        2: "too_deep", 3: "too_deep", 4: "too_deep", 5: "too_deep", 6: "too_deep", 7: "bad_json"}
    assert rejects[2]["detail"].startswith("line 2 ") and rejects[2]["raw"].startswith("[[[[")
    assert "calls" in rejects[5]["detail"] and f"{MAX_DEPTH} levels" in rejects[5]["detail"]
    assert "'city'" in rejects[6]["detail"] and "4300 digits" in rejects[7]["detail"]
    # exactly MAX_DEPTH deep is fine
    validate_example(_with(canonical_row(), calls=[{"name": "get_weather", "arguments": {
        "city": "Oslo", "when": json.loads(deep(MAX_DEPTH - 3))}}]))


def test_json_array_elements_nested_too_deep_are_skipped(tmp_path: Path) -> None:
    # a deep element holding brackets, quotes and escapes in a string long enough to span
    # several 1 MiB read windows; a number over 4,300 digits; good elements around them
    tricky = json.dumps("]}\\\"[{," * 300_000)
    elements = [json.dumps(xlam(id=1)), deep(5000, tricky), "9" * 5000,
                deep(5000, ""), json.dumps(xlam(id=5, query="Weather in Oslo now?"))]
    path = tmp_path / "deep.json"
    path.write_text("[\n" + ",\n ".join(elements) + "\n]\n")
    result = ingest([SourceSpec(str(path), format="xlam", max_row_bytes=4 << 20)], tmp_path / "out")
    assert [r["id"] for r in read_rows(tmp_path / "out" / "examples.parquet")] == ["1", "5"]
    rejects = read_rows(tmp_path / "out" / "rejects.parquet")
    assert {Path(r["location"]).name: r["reason"] for r in rejects} == {
        "deep.json#1": "too_deep", "deep.json#2": "bad_json", "deep.json#3": "too_deep"}
    assert rejects[0]["raw"].startswith("[[[[") and rejects[1]["raw"].startswith("9999")
    assert result.summary["records"] == 5


def test_a_conversation_with_a_too_deep_call_turn_is_rejected_whole(tmp_path: Path) -> None:
    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {}}}}}
    messages = [{"role": "user", "content": "Weather?"},
                {"role": "assistant", "tool_calls": [{"type": "function", "function": {
                    "name": "get_weather", "arguments": json.dumps({"city": json.loads(deep(200))})}}]},
                {"role": "tool", "content": "sunny"},
                {"role": "user", "content": "And in Oslo?"},
                {"role": "assistant", "tool_calls": [{"type": "function", "function": {
                    "name": "get_weather", "arguments": json.dumps({"city": "Oslo"})}}]}]
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"messages": messages, "tools": [weather]}) + "\n")
    result = ingest([SourceSpec(str(path), format="openai")], tmp_path / "out")
    # the deep turn would sit in the history of the second target
    assert (result.summary["kept"], result.summary["by_reason"]) == (0, {"too_deep": 1})


# --------------------------------------------------------------------------- task labels


def test_task_labels_that_share_an_adapter_folder_are_a_config_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from flows.cli import main

    config = tmp_path / "config.yaml"
    config.write_text(f"data:\n  sources:\n"
                      f"    - {{path: {SAMPLE / 'travel.jsonl'}, task: trip/eu}}\n"
                      f"    - {{path: {SAMPLE / 'finance.jsonl'}, task: trip eu}}\n")
    assert main(["ingest", "--config", str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hammer: data.sources: task labels 'trip/eu' and 'trip eu' both become "
                          "the folder name 'trip_eu'") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # refused before reading anything
    config.write_text(config.read_text().replace("trip eu", "trip.eu"))  # distinct folders: fine
    assert main(["ingest", "--config", str(config), "--out", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------- temp files


def _writer_process(target: Path) -> tuple[subprocess.Popen, Path]:
    """A process writing the artifact ``target`` that stops half way (it sleeps); and its temp file."""
    code = ("import sys, time, pyarrow as pa\n"
            "from hammer_core.artifacts import ArtifactWriter\n"
            "w = ArtifactWriter(sys.argv[1], pa.schema([('x', pa.int64())]), kind='x')\n"
            "w.write_rows([{'x': 1}])\n"
            "print(w._tmp, flush=True)\n"
            "time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    tmp = Path(proc.stdout.readline().strip())
    assert tmp.is_file() and tmp.parent == target.parent
    return proc, tmp


def test_a_stage_removes_the_temp_files_of_killed_runs_in_its_folder(tmp_path: Path) -> None:
    from hammer_core import stages
    from hammer_core.config import config_from_dict

    out = tmp_path / "ingest"
    cfg = config_from_dict({"data": {"sources": [{"path": str(SAMPLE / "finance.jsonl")}]}})
    first = stages.ingest(cfg, out)
    killed = []
    for target in (out / "examples.parquet", out / "nested" / "x.parquet"):  # a run killed mid-write
        proc, tmp = _writer_process(target)
        proc.kill()
        proc.wait()
        killed.append(tmp)
    live, live_tmp = _writer_process(out / "rejects.parquet")  # a writer still at work
    # a writer on another host sharing the folder, whose process id is free here
    elsewhere = out / f".examples.parquet.{proc.pid}-some-other-host.abcd1234.tmp"
    not_ours = out / ".notes.tmp"
    for path in (elsewhere, not_ours):
        path.write_text("")
    try:
        again = stages.ingest(cfg, out)
        assert not any(p.exists() for p in killed)
        assert live_tmp.exists() and elsewhere.exists() and not_ours.exists()
    finally:
        live.kill()
        live.wait()
    assert again.examples.content_hash == first.examples.content_hash
    assert open_artifact(out / "examples.parquet").read().num_rows == first.summary["kept"]
