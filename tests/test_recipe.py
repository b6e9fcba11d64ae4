"""Hammer's data recipe: irrelevance synthesis and function masking, on canonical rows."""

from __future__ import annotations

import json
import string

from hypothesis import given, settings
from hypothesis import strategies as st

from hammer_core.irrelevance import count_for_ratio, strip_gold_tools, synthesize_irrelevance
from hammer_core.masking import ALPHABET, mask_row, mask_rows, row_rng
from hammer_core.schema import dumps
from hammer_core.validation import validate_example


def tool(name: str, params: dict[str, dict], desc: str | None = None) -> dict:
    return {"name": name, "description": desc or f"Does {name}.",
            "parameters": {"type": "object", "properties": params,
                           "required": [p for p, s in params.items() if "default" not in s]}}


def row(rid: str, query: str, tools: list[dict], calls: list[dict], task: str = "t") -> dict:
    return {"id": rid, "source": "test", "task": task, "messages": [{"role": "user", "content": query}],
            "tools": dumps(tools), "calls": dumps(calls), "parent_id": None, "variant": "original"}


WEATHER = tool("get_weather", {"city": {"type": "string", "description": "City name."},
                               "units": {"type": "string", "description": "Units, default is metric.",
                                         "default": "metric"}})
FLIGHTS = tool("search_flights", {"origin": {"type": "string", "description": "From."},
                                  "dest": {"type": "string", "description": "To."},
                                  "max_stops": {"type": "integer", "description": "Stops, default 1",
                                                "default": 1}})
HOTEL = tool("book_hotel", {"city": {"type": "string", "description": "Where."}})


def weather_row(i: int = 0) -> dict:
    return row(f"r{i}", "What's the weather in Paris in metric units?", [WEATHER, FLIGHTS, HOTEL],
               [{"name": "get_weather", "arguments": {"city": "Paris", "units": "metric"}}])


# --- irrelevance -------------------------------------------------------------------------------

def test_strip_gold_tools_removes_every_gold_function_and_keeps_distractors():
    r = row("a", "Fly from NYC to LA and check weather in LA", [WEATHER, FLIGHTS, HOTEL],
            [{"name": "search_flights", "arguments": {"origin": "NYC", "dest": "LA"}},
             {"name": "get_weather", "arguments": {"city": "LA"}}])
    irr = strip_gold_tools(r)
    assert irr is not None
    assert [t["name"] for t in json.loads(irr["tools"])] == ["book_hotel"]
    assert irr["calls"] == "[]"
    assert irr["parent_id"] == "a" and irr["variant"] == "irrelevance" and irr["id"] == "a~irr"
    assert irr["messages"] == r["messages"]
    validate_example(irr)


def test_strip_gold_tools_skips_rows_where_nothing_or_an_equivalent_remains():
    only = row("b", "weather?", [WEATHER], [{"name": "get_weather", "arguments": {"city": "X"}}])
    assert strip_gold_tools(only) is None
    twin = dict(WEATHER, name="GetWeather")  # same name after normalization
    assert strip_gold_tools(row("c", "weather?", [WEATHER, twin],
                                [{"name": "get_weather", "arguments": {"city": "X"}}])) is None
    same_sig = dict(WEATHER, name="forecast")  # same description and parameter set
    assert strip_gold_tools(row("d", "weather?", [WEATHER, same_sig],
                                [{"name": "get_weather", "arguments": {"city": "X"}}])) is None
    assert strip_gold_tools(row("e", "hi", [WEATHER, HOTEL], [])) is None  # already no call


def test_irrelevance_share_hits_the_target_ratio():
    rows = [weather_row(i) for i in range(300)]
    for ratio in (0.05, 0.1, 0.25):
        synth = synthesize_irrelevance(rows, ratio, seed=1)
        share = len(synth) / (len(rows) + len(synth))
        assert abs(share - ratio) < 0.005, (ratio, share)
        assert len({s["parent_id"] for s in synth}) == len(synth)
    assert synthesize_irrelevance(rows, 0.0, seed=1) == []
    assert count_for_ratio(90, 10, 0.1) == 0  # already at the target


def test_irrelevance_selection_is_seeded_and_order_free():
    rows = [weather_row(i) for i in range(100)]
    a = synthesize_irrelevance(rows, 0.1, seed=3)
    b = synthesize_irrelevance(list(reversed(rows)), 0.1, seed=3)
    c = synthesize_irrelevance(rows, 0.1, seed=4)
    assert [r["id"] for r in a] == [r["id"] for r in b]
    assert {r["id"] for r in a} != {r["id"] for r in c}


# --- masking -----------------------------------------------------------------------------------

def test_mask_row_renames_functions_and_parameters_consistently():
    r = weather_row()
    m = mask_row(r, row_rng(0, 0, r["id"]))
    validate_example(m)
    tools = {t["name"]: t for t in json.loads(m["tools"])}
    assert not {"get_weather", "search_flights", "book_hotel"} & set(tools)
    assert all(5 <= len(n) <= 15 and set(n) <= set(ALPHABET) for n in tools)
    (call,) = json.loads(m["calls"])
    spec = tools[call["name"]]
    assert spec["description"] == WEATHER["description"]  # descriptions are never masked
    props = spec["parameters"]["properties"]
    assert set(call["arguments"]) <= set(props)
    assert all(4 <= len(p) <= 10 for p in props)
    assert set(spec["parameters"]["required"]) <= set(props)
    # the argument whose value is the city keeps its value under the new name
    city_param = next(p for p, s in props.items() if s["description"] == "City name.")
    assert call["arguments"][city_param] == "Paris"
    assert m["parent_id"] == r["id"] and m["variant"] == "original+masked"


def test_mask_row_perturbs_defaults_used_by_the_gold_call_everywhere():
    r = weather_row()
    m = mask_row(r, row_rng(0, 0, r["id"]))
    tools = {t["name"]: t for t in json.loads(m["tools"])}
    (call,) = json.loads(m["calls"])
    props = tools[call["name"]]["parameters"]["properties"]
    units = next(p for p, s in props.items() if "default" in s)
    new = props[units]["default"]
    assert new != "metric" and len(new) == 5
    assert call["arguments"][units] == new
    assert new in props[units]["description"] and "metric" not in props[units]["description"]
    query = m["messages"][0]["content"]
    assert new in query and "metric" not in query
    # a default the gold call does not use stays as it was
    flights = next(t for t in tools.values() if len(t["parameters"]["properties"]) == 3)
    assert any(s.get("default") == 1 for s in flights["parameters"]["properties"].values())


def test_mask_replaces_whole_words_only():
    t = tool("count", {"n": {"type": "integer", "description": "How many, default 1", "default": 1}})
    r = row("w", "Count 1 item from 2019", [t], [{"name": "count", "arguments": {"n": 1}}])
    m = mask_row(r, row_rng(0, 0, "w"))
    q = m["messages"][0]["content"]
    (call,) = json.loads(m["calls"])
    (new,) = call["arguments"].values()
    assert 2 <= new <= 5 and q == f"Count {new} item from 2019"


def test_mask_rows_probability_copies_and_determinism():
    rows = [weather_row(i) for i in range(600)]
    out = mask_rows(rows, p=2 / 3, seed=12, copies=3)
    assert len(out) == 1800
    masked = sum(r["variant"].endswith("masked") for r in out)
    assert abs(masked / len(out) - 2 / 3) < 0.04
    assert len({r["id"] for r in out}) == len(out)
    assert out == mask_rows(rows, p=2 / 3, seed=12, copies=3)
    assert out != mask_rows(rows, p=2 / 3, seed=13, copies=3)
    # a row's mask does not depend on its neighbours (batching or worker count cannot change it)
    alone = mask_rows(rows[5:6], p=2 / 3, seed=12, copies=1)
    assert alone[0] == out[5]
    assert all(r == o for r, o in zip(rows, mask_rows(rows, p=0.0, seed=1)))


names = st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=12)


@st.composite
def random_rows(draw):
    fn_names = draw(st.lists(names, min_size=1, max_size=5, unique=True))
    tools = []
    for fn in fn_names:
        pnames = draw(st.lists(names, max_size=5, unique=True))
        params = {}
        for p in pnames:
            spec = {"type": "integer", "description": f"param {p}"}
            if draw(st.booleans()):
                spec["default"] = draw(st.integers(-5, 50))
            params[p] = spec
        tools.append(tool(fn, params))
    calls = []
    for t in draw(st.lists(st.sampled_from(tools), max_size=3)):
        props = t["parameters"]["properties"]
        args = {p: (s["default"] if "default" in s and draw(st.booleans()) else draw(st.integers(0, 99)))
                for p, s in props.items() if p in t["parameters"]["required"] or draw(st.booleans())}
        calls.append({"name": t["name"], "arguments": args})
    return row("h", "query " + " ".join(str(v) for c in calls for v in c["arguments"].values()), tools, calls)


@settings(max_examples=150, deadline=None)
@given(random_rows(), st.integers(0, 10_000))
def test_masked_rows_always_validate_and_keep_structure(r, seed):
    m = mask_row(r, row_rng(seed, 0, r["id"]))
    validate_example(m)
    before, after = json.loads(r["tools"]), json.loads(m["tools"])
    assert len(after) == len(before)
    assert len({t["name"] for t in after}) == len(after)
    assert sorted(t["description"] for t in after) == sorted(t["description"] for t in before)
    c_before, c_after = json.loads(r["calls"]), json.loads(m["calls"])
    assert len(c_before) == len(c_after)
    by_desc_before = {t["description"]: t for t in before}
    new_to_desc = {t["name"]: t["description"] for t in after}
    for cb, ca in zip(c_before, c_after):
        assert by_desc_before[new_to_desc[ca["name"]]]["name"] == cb["name"]
        assert len(ca["arguments"]) == len(cb["arguments"])
