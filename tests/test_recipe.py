"""Hammer's data recipe on canonical rows: irrelevance (plain and hard negatives), function
masking, the prompt format and its fragment tokenization, and the batching helpers."""

from __future__ import annotations

import json
import re
import string
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hammer_core.data.irrelevance import (HARD_NEGATIVE, MAX_SIMILARITY, MIN_SIMILARITY, ToolPool, count_for_ratio,
                                     eligibility, plan_counts, rank_order, strip_gold_tools, synthesize_irrelevance)
from hammer_core.data.masking import (ALNUM, ALPHABET, FN_LENGTHS, PARAM_LENGTHS, Masker, NameGenerator, ToolCache,
                                 apply_view, mask_row, mask_row_view, mask_rows, parse_json, replace_word)
from hammer_core.data.prompts import (FORMAT_INSTRUCTION, TASK_INSTRUCTION, prompt_fragments, render_prompt,
                                 render_target, target_fragments, tools_for_prompt)
from hammer_core.schema import dumps
from hammer_core.data.tokenization import length_buckets, pack, padding_ratio
from hammer_core.data.validation import validate_example


def tool(name: str, params: dict[str, dict], desc: str | None = None) -> dict:
    return {"name": name, "description": desc or f"Does {name}.",
            "parameters": {"type": "object", "properties": params,
                           "required": [p for p, s in params.items() if "default" not in s]}}


def row(rid: str, query: str, tools: list[dict], calls: list[dict], task: str = "t") -> dict:
    return {"id": rid, "source": "test", "task": task, "messages": [{"role": "user", "content": query}],
            "tools": dumps(tools), "calls": dumps(calls), "parent_id": None, "variant": "original"}


WEATHER = tool("get_weather", {"city": {"type": "string", "description": "City name."},
                               "units": {"type": "string", "description": "Units, default is metric.",
                                         "default": "metric"}},
               "Get the current weather conditions for a city.")
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
    assert json.loads(irr["tools"])[0] == HOTEL  # distractors are kept verbatim
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
    assert plan_counts(900, 0, 0.1, 0.03) == (70, 30)  # 100 added: 3% of 1000 are hard negatives
    assert plan_counts(900, 0, 0.1, 0.5) == (0, 100)  # capped by what the no-call share leaves


def test_irrelevance_selection_is_seeded_and_order_free():
    rows = [weather_row(i) for i in range(100)]
    a = synthesize_irrelevance(rows, 0.1, seed=3)
    b = synthesize_irrelevance(list(reversed(rows)), 0.1, seed=3)
    c = synthesize_irrelevance(rows, 0.1, seed=4)
    assert sorted(r["id"] for r in a) == sorted(r["id"] for r in b)
    assert {r["id"] for r in a} != {r["id"] for r in c}


def test_rank_order_takes_eligible_rows_best_ranked_first_ties_by_position():
    rank = np.array([5, 3, 5, 1, 3, 0], dtype=np.uint64)
    eligible = np.array([1, 1, 1, 0, 1, 0], dtype=bool)
    assert rank_order(rank, eligible).tolist() == [1, 4, 0, 2]


AIR = tool("get_air_quality", {"city": {"type": "string", "description": "City name."}},
           "Get the current air quality index for a city.")
FORECAST_COPY = tool("fetch_weather", {"city": {"type": "string", "description": "City."}},
                     "Get the current weather conditions for a city.")  # a reworded copy: can serve
STOCKS = tool("get_stock_quote", {"symbol": {"type": "string", "description": "Ticker."}},
              "Latest price of a stock.")


def test_hard_negative_replaces_the_gold_function_with_a_close_safe_one():
    pool = ToolPool(ToolCache().split(dumps([WEATHER, AIR, FORECAST_COPY, STOCKS, HOTEL, FLIGHTS])))
    rows = [row(f"h{i}", "Weather in Oslo?", [WEATHER, HOTEL], [{"name": "get_weather", "arguments": {"city": "Oslo"}}])
            for i in range(20)]
    synth = synthesize_irrelevance(rows, 0.5, seed=0, hard_negative_ratio=0.5, pool=pool)
    assert synth and all(s["variant"] == HARD_NEGATIVE for s in synth)
    for s in synth:
        validate_example(s)
        assert s["calls"] == "[]" and s["id"] == s["parent_id"] + "~hn"
        names = [t["name"] for t in json.loads(s["tools"])]
        # the gold function is replaced in place by the close one, never by the reworded copy
        assert names == ["get_air_quality", "book_hotel"], names
    cache = ToolCache()
    weather, air, copy = cache.split(dumps([WEATHER, AIR, FORECAST_COPY]))
    sims = dict(pool.neighbours(weather.digest))
    assert MIN_SIMILARITY <= sims[air.digest] < MAX_SIMILARITY
    assert copy.digest not in sims  # same description and parameter set: it could serve the query


def test_hard_negatives_need_a_safe_neighbour():
    pool = ToolPool(ToolCache().split(dumps([WEATHER, STOCKS])))  # nothing close to get_weather
    rows = [row(f"n{i}", "Weather?", [WEATHER], [{"name": "get_weather", "arguments": {"city": "X"}}])
            for i in range(10)]
    assert synthesize_irrelevance(rows, 0.3, seed=0, hard_negative_ratio=0.3, pool=pool) == []
    e = eligibility(ToolCache().split(rows[0]["tools"]), parse_json(rows[0]["calls"]))
    assert not e.plain and e.hard_negative  # a single gold tool: only a hard negative is possible


# --- masking -----------------------------------------------------------------------------------

def test_mask_row_renames_functions_and_parameters_consistently():
    r = weather_row()
    m = mask_row(r, seed=0)
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
    city_param = next(p for p, s in props.items() if s["description"] == "City name.")
    assert call["arguments"][city_param] == "Paris"
    assert m["parent_id"] == r["id"] and m["variant"] == "original+masked" and m["id"] == "r0~m0"


def test_masking_renames_earlier_call_turns_of_a_conversation():
    r = weather_row()
    earlier = [{"name": "search_flights", "arguments": {"origin": "NYC", "dest": "PAR"}},
               {"name": "not_offered", "arguments": {"origin": "x"}}]
    r["messages"] = [{"role": "user", "content": "Fly me to Paris, then tell me the weather."},
                     {"role": "assistant", "content": dumps(earlier)},
                     {"role": "tool", "content": '{"flight": "AF1"}'},
                     {"role": "assistant", "content": "Booked."},
                     {"role": "user", "content": "And the weather in Paris?"}]
    m = mask_row(r, seed=1)
    validate_example(m)
    tools = {t["name"]: t for t in json.loads(m["tools"])}
    flights = next(n for n, t in tools.items() if t["description"] == FLIGHTS["description"])
    props = tools[flights]["parameters"]["properties"]
    by_desc = {s["description"]: p for p, s in props.items()}
    renamed = json.loads(m["messages"][1]["content"])
    assert renamed[0] == {"name": flights, "arguments": {by_desc["From."]: "NYC", by_desc["To."]: "PAR"}}
    assert renamed[1] == earlier[1]  # a function the row does not offer keeps its name
    assert m["messages"][1]["content"] == dumps(renamed)  # canonical call-turn text
    assert [x["content"] for x in m["messages"][2:]] == [x["content"] for x in r["messages"][2:]]
    assert r["messages"][1]["content"] == dumps(earlier)  # the input row is not modified
    # the prompt shows the renamed history and nothing of the original names
    prompt = "".join(prompt_fragments(mask_row_view(r, Masker.from_config(1, 1.0)), r["messages"]))
    assert "\"search_flights\"" not in prompt and flights in prompt  # (descriptions keep their text)
    assert prompt.count("assistant: ") == 2 and "tool: {\"flight\": \"AF1\"}" in prompt


def test_prompt_shows_the_turns_after_the_last_user_turn():
    msgs = [{"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": '[{"name":"get_weather","arguments":{"city":"Paris"}}]'},
            {"role": "tool", "content": "sunny, 21C"}]
    prompt = render_prompt(msgs, [WEATHER])
    assert prompt.endswith("[BEGIN OF QUERY]\nuser: Weather in Paris?\nassistant: "
                           '[{"name":"get_weather","arguments":{"city":"Paris"}}]\ntool: sunny, 21C\n'
                           "[END OF QUERY]\n\n")
    single = render_prompt(msgs[:1], [WEATHER])
    assert single.endswith("[BEGIN OF QUERY]\nWeather in Paris?\n[END OF QUERY]\n\n")


def test_mask_row_perturbs_defaults_used_by_the_gold_call_everywhere():
    r = weather_row()
    m = mask_row(r, seed=0)
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
    assert r["messages"][0]["content"].endswith("metric units?")  # the input row is untouched


def test_mask_replaces_whole_words_only():
    t = tool("count", {"n": {"type": "integer", "description": "How many, default 1", "default": 1}})
    r = row("w", "Count 1 item from 2019", [t], [{"name": "count", "arguments": {"n": 1}}])
    m = mask_row(r, seed=0)
    q = m["messages"][0]["content"]
    (call,) = json.loads(m["calls"])
    (new,) = call["arguments"].values()
    assert 2 <= new <= 5 and q == f"Count {new} item from 2019"


def test_replace_word_keeps_numbers_whole():
    # "2" is not a word inside "2.5" or "2.57" (found by hypothesis: a perturbed default 2.5 -> 2.57
    # was then hit by the perturbation of another default, 2 -> 3, giving "3.57" in the query)
    assert replace_word("with 2.5, 0, 2?", "2", "3") == "with 2.5, 0, 3?"
    assert replace_word("with 2.57 and 2.", "2", "3") == "with 2.57 and 3."
    assert replace_word("v1.2 or 1.2", "2", "3") == "v1.2 or 1.2"


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
    assert mask_rows(rows[5:6], p=2 / 3, seed=12, copies=1)[0] == out[5]
    assert mask_rows(rows[7:8], p=2 / 3, seed=12, copies=3)[2] == out[1200 + 7]
    assert all(r == o for r, o in zip(rows, mask_rows(rows, p=0.0, seed=1)))
    # each copy has its own mask
    copies = [json.loads(out[k * 600]["tools"]) for k in range(3) if out[k * 600]["variant"].endswith("masked")]
    assert len({dumps(c) for c in copies}) == len(copies)


def test_names_follow_hammer_alphabet_and_lengths():
    for lengths, pool in ((FN_LENGTHS, 0), (PARAM_LENGTHS, 0), (FN_LENGTHS, 257)):
        gen = NameGenerator(3, "k", lengths, pool)
        names = gen.names(list(range(10_000, 12_000)))
        assert {len(n) for n in names} == set(range(lengths[0], lengths[1] + 1))
        assert all(set(n) <= set(ALPHABET) and n[0] in ALNUM and n[-1] in ALNUM for n in names)
        assert names == NameGenerator(3, "k", lengths, pool).names(list(range(10_000, 12_000)))
        if pool:
            assert len(set(names)) <= pool
            assert gen.names([5]) == gen.names([5 + pool])  # a draw selects one of `pool` names
    inner = "".join(n[1:-1] for n in NameGenerator(0, "k", FN_LENGTHS).names(list(range(3000))))
    assert {"_", "."} <= set(inner)  # the full alphabet inside


names_st = st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=12)


@st.composite
def random_rows(draw):
    """Rows with 1-5 tools of 0-5 integer/string parameters, some with defaults the gold
    calls may pass, and a query that mentions the argument values."""
    fn_names = draw(st.lists(names_st, min_size=1, max_size=5, unique=True))
    tools = []
    for fn in fn_names:
        params = {}
        for p in draw(st.lists(names_st, max_size=5, unique=True)):
            kind = draw(st.sampled_from(["integer", "string", "number"]))
            spec: dict[str, Any] = {"type": kind, "description": f"param {p}"}
            if draw(st.booleans()):
                spec["default"] = (draw(st.integers(-5, 50)) if kind == "integer" else
                                   draw(st.sampled_from(["metric", "en", "fast"])) if kind == "string" else 2.5)
                spec["description"] += f", default is {spec['default']}"
            params[p] = spec
        tools.append(tool(fn, params, desc=f"{fn} does things"))
    values = {"integer": st.integers(0, 99), "number": st.floats(0, 99, allow_nan=False),
              "string": st.sampled_from(["Paris", "metric units", "x", "2019"])}
    calls = []
    for t in draw(st.lists(st.sampled_from(tools), max_size=3)):
        props = t["parameters"]["properties"]
        args = {p: (s["default"] if "default" in s and draw(st.booleans()) else draw(values[s["type"]]))
                for p, s in props.items() if p in t["parameters"]["required"] or draw(st.booleans())}
        calls.append({"name": t["name"], "arguments": args})
    query = "please " + " and ".join(f"{c['name']} with " + ", ".join(f"{v}" for v in c["arguments"].values())
                                     for c in calls) + "?"
    return row("h", query, tools, calls)


def naive_apply(r: dict, view) -> dict:
    """The oracle: apply a mask's decisions (names, order, perturbed specs) with plain dict
    manipulation and json, the straightforward way."""
    tools = {t["name"]: t for t in json.loads(r["tools"])}
    out_tools = []
    for tv in view.tools:
        t = json.loads(json.dumps(tools[tv.tool.name]))
        old_params = list(t.get("parameters", {}).get("properties", {}))
        rename = dict(zip(old_params, tv.names[1:]))
        t["name"] = tv.names[0]
        if old_params:
            props = t["parameters"]["properties"]
            t["parameters"]["properties"] = {rename[p]: (tv.overrides or {}).get(i, props[p])
                                             for i, p in enumerate(old_params)}
            t["parameters"]["required"] = [rename[p] for p in t["parameters"]["required"]]
        out_tools.append(t)
    return {"tools": dumps(out_tools), "calls": dumps([{"name": n, "arguments": dict(a)} for n, a in view.calls])}


_TWO_DEFAULTS = {  # defaults 2.5 and 2 both used by the call: the perturbed 2.5 must survive 2's
    "id": "h", "source": "test", "task": "t", "messages": [{"role": "user", "content": "please ___ with 2.5, 0, 0, 0, 2?"}],
    "tools": dumps([*({"name": n, "description": f"{n} does things", "parameters": {"type": "object", "properties": {},
                                                                                  "required": []}}
                      for n in ("_", "a", "__")),
                    {"name": "___", "description": "___ does things", "parameters": {"type": "object", "properties": {
        "_": {"type": "number", "description": "param _, default is 2.5", "default": 2.5},
        "a": {"type": "integer", "description": "param a, default is 0", "default": 0},
        "b": {"type": "integer", "description": "param b"}, "__": {"type": "integer", "description": "param __"},
        "___": {"type": "integer", "description": "param ___, default is 2", "default": 2}},
        "required": ["b", "__"]}},
                    {"name": "____", "description": "____ does things", "parameters": {"type": "object", "properties": {},
                                                                                   "required": []}}]),
    "calls": dumps([{"name": "___", "arguments": {"_": 2.5, "a": 0, "b": 0, "__": 0, "___": 2}}]),
    "parent_id": None, "variant": "original"}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_rows(), st.integers(0, 10_000), st.integers(0, 2))
@example(_TWO_DEFAULTS, 0, 0)
def test_masked_rows_validate_keep_structure_and_agree_with_the_oracle(r, seed, pool):
    view = mask_row_view(r, Masker.from_config(seed, 1.0, pool_size=(0, 7, 1 << 16)[pool]))
    m = apply_view(r, view)
    validate_example(m)  # calls name existing tools, arguments are declared parameters
    assert {k: m[k] for k in ("tools", "calls")} == naive_apply(r, view)
    before, after = json.loads(r["tools"]), json.loads(m["tools"])
    assert len(after) == len(before)
    assert len({t["name"] for t in after}) == len(after)  # names unique within the row
    for t in after:
        assert FN_LENGTHS[0] <= len(t["name"]) <= FN_LENGTHS[1]
        props = list(t["parameters"]["properties"])
        assert len(set(props)) == len(props) and all(PARAM_LENGTHS[0] <= len(p) <= PARAM_LENGTHS[1] for p in props)
    assert sorted(t["description"] for t in after) == sorted(t["description"] for t in before)
    c_before, c_after = json.loads(r["calls"]), json.loads(m["calls"])
    by_desc_before = {t["description"]: t for t in before}
    new_to_spec = {t["name"]: t for t in after}
    for cb, ca in zip(c_before, c_after, strict=True):
        spec_b = by_desc_before[new_to_spec[ca["name"]]["description"]]
        assert spec_b["name"] == cb["name"]  # the call still names the same function
        props_a = new_to_spec[ca["name"]]["parameters"]["properties"]
        # argument k of the masked call is argument k of the gold call, renamed
        for (kb, vb), (ka, va) in zip(cb["arguments"].items(), ca["arguments"].items(), strict=True):
            assert props_a[ka]["description"].split(",")[0] == f"param {kb}"
            default = spec_b["parameters"]["properties"][kb].get("default")
            if default is not None and str(vb) == str(default) and not isinstance(default, bool):
                # defaults propagation: new value in the call, the spec, its description, the query
                assert va == props_a[ka]["default"] and str(va) != str(vb)
                assert str(va) in props_a[ka]["description"]
                if [str(v) for c in c_before for v in c["arguments"].values()].count(str(vb)) == 1:
                    # (when several arguments share the value, the query cannot tell them apart)
                    assert re.search(rf"(?<![\w.]){re.escape(str(va))}(?!\w)", m["messages"][0]["content"])
            else:
                assert va == vb


# --- prompts and tokens ------------------------------------------------------------------------

def straightforward_prompt(messages: list[dict], tools: list[dict]) -> str:
    """Hammer's prompt written directly (the format the fragments must reproduce)."""
    if len(messages) == 1:
        query = messages[0]["content"]
    else:  # a conversation: every turn as a role line, those after the last user turn included
        query = "\n".join(f"{m['role']}: {m['content']}" for m in messages)
    return (f"[BEGIN OF TASK INSTRUCTION]\n{TASK_INSTRUCTION}\n[END OF TASK INSTRUCTION]\n\n"
            f"[BEGIN OF AVAILABLE TOOLS]\n{json.dumps(tools_for_prompt(tools), ensure_ascii=False)}\n"
            f"[END OF AVAILABLE TOOLS]\n\n[BEGIN OF FORMAT INSTRUCTION]\n{FORMAT_INSTRUCTION}\n"
            f"[END OF FORMAT INSTRUCTION]\n\n[BEGIN OF QUERY]\n{query}\n[END OF QUERY]\n\n")


def test_render_appends_defaults_and_drops_internal_keys():
    t = tool("f", {"x": {"type": "string", "description": "An x.", "default": "a", "x-python-type": "str"}})
    prompt = render_prompt([{"role": "user", "content": "go"}], [t])
    assert "An x. default is 'a'" in prompt and "x-python-type" not in prompt
    assert render_target([]) == "```\n[]\n```"
    call = [{"name": "f", "arguments": {"x": [1, 2]}}]
    assert render_target(call) == '```\n[{"name": "f", "arguments": {"x": [1, 2]}}]\n```'


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_rows(), st.integers(0, 1000), st.booleans())
def test_fragments_render_hammers_prompt_exactly(r, seed, history):
    if history:
        r["messages"] = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                         {"role": "assistant", "content": "hello"}, *r["messages"]]
        if seed % 2:  # the target follows a tool result
            r["messages"] += [{"role": "assistant", "content": "[]"}, {"role": "tool", "content": "42"}]
    view = mask_row_view(r, Masker.from_config(seed, 0.5))
    m = apply_view(r, view)
    want = straightforward_prompt(m["messages"], json.loads(m["tools"]))
    assert "".join(prompt_fragments(view, r["messages"])) == want
    assert "".join(target_fragments(view)) == "```\n" + json.dumps(json.loads(m["calls"]), ensure_ascii=False) + "\n```"


@pytest.mark.parametrize("desc", ["Bell \x07 and tab\t", "Private \ue000\ue001 use", 'Quote " and \\ back',
                                  "Plane ✈ and \u2028 sep", "Default 'x' noted, default is 'x'"])
def test_tool_prompt_text_is_hammers_with_escapes_and_private_use_characters(desc):
    """A tool's prompt text and templates are made without a second dump when its JSON has no
    ``\\u`` escape: control characters (escaped), private-use characters (not sentinels)
    and the rest must still render exactly."""
    t = tool("f_x" + desc[:1], {"city": {"type": "string", "description": desc, "default": desc[-3:]},
                                'n"\\é': {"type": "integer", "description": "n " + desc}}, desc=desc)
    r = row("r1", "weather " + desc, [t, WEATHER],
            [{"name": t["name"], "arguments": {"city": "Paris", 'n"\\é': 2}}])
    for p in (0.0, 1.0):
        view = mask_row_view(r, Masker.from_config(3, p), 0, ToolCache())
        m = apply_view(r, view)
        assert "".join(prompt_fragments(view, r["messages"])) == straightforward_prompt(m["messages"],
                                                                                        json.loads(m["tools"]))


@pytest.fixture(scope="module")
def tiny_tokenizer():
    from hammer_core.model.tokenizer import load_tiny_tokenizer
    return load_tiny_tokenizer()


def test_fragment_tokenizer_is_exact_for_the_shipped_tokenizer(tiny_tokenizer):
    from hammer_core.data.tokenization import FragmentTokenizer, tokenize_rows

    frag = FragmentTokenizer(tiny_tokenizer)
    assert frag.fast  # the probes passed: fragments are used
    rows = [weather_row(i) for i in range(30)] + [
        row("u", "Wetter in Zürich?  Bitte… ", [WEATHER, HOTEL],
            [{"name": "get_weather", "arguments": {"city": "Zürich"}}]),
        row("v", "\nno call here", [FLIGHTS], [])]
    masker, cache = Masker.from_config(5, 0.6), ToolCache()
    views = [mask_row_view(r, masker, 0, cache) for r in rows]
    got = frag.encode([frag.wrap_prompt(prompt_fragments(v, r["messages"])) for v, r in zip(views, rows)],
                      [target_fragments(v) for v in views])
    ref, _ = tokenize_rows([apply_view(r, v) for r, v in zip(rows, views)], tiny_tokenizer, 10_000)
    import numpy as np
    for (p, t), want in zip(got, ref, strict=True):
        assert np.frombuffer(p + t, dtype="<i4").tolist() == want["input_ids"]
        assert len(p) // 4 == want["n_prompt"]


def _bpe_tokenizer(pre_tokenizer, texts: list[str], normalizer=None):
    """A small byte-level BPE trained here (no download), wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer
    tok.normalizer = normalizer
    tok.decoder = decoders.ByteLevel()
    from tokenizers import pre_tokenizers
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>", "<|im_end|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")


QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def test_fragment_tokenizer_is_exact_for_a_qwen2_style_pretokenizer_or_falls_back():
    from tokenizers import Regex, normalizers, pre_tokenizers

    from hammer_core.data.tokenization import FragmentTokenizer, tokenize_rows

    texts = [render_prompt(weather_row()["messages"], [WEATHER, FLIGHTS]), "Zürich 2019 metric units?"] * 3
    qwen = _bpe_tokenizer(pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]), texts, normalizers.NFC())
    metaspace = _bpe_tokenizer(pre_tokenizers.Metaspace(), texts)
    rows = [weather_row(i) for i in range(12)]
    for tokenizer, fast in ((qwen, True), (metaspace, None)):
        frag = FragmentTokenizer(tokenizer)
        if fast is not None:
            assert frag.fast is fast
        views = [mask_row_view(r, Masker.from_config(1, 0.7), 0) for r in rows]
        got = frag.encode([frag.wrap_prompt(prompt_fragments(v, r["messages"])) for v, r in zip(views, rows)],
                          [target_fragments(v) for v in views])
        ref, _ = tokenize_rows([apply_view(r, v) for r, v in zip(rows, views)], tokenizer, 100_000)
        assert [np.frombuffer(p + t, dtype="<i4").tolist() for p, t in got] == [x["input_ids"] for x in ref]


TOOLS_TEMPLATE = (
    "{% if tools %}<|im_start|>system\nTools:{% for t in tools %}\n{{ t | tojson }}{% endfor %}<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>{{ c.function | tojson }}</tool_call>{% endfor %}"
    "{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_chat_template_format_renders_tools_and_calls_natively(tiny_tokenizer):
    from copy import deepcopy

    from hammer_core.data.tokenization import NO_CALL_REPLY, check_chat_template_tools, encode_chat_template

    with pytest.raises(ValueError, match="does not render tools"):
        check_chat_template_tools(tiny_tokenizer)
    tok = deepcopy(tiny_tokenizer)
    tok.chat_template = TOOLS_TEMPLATE
    check_chat_template_tools(tok)
    msgs = [{"role": "user", "content": "Weather in Paris?"}]
    calls = [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    ((p, t), (p0, t0)) = encode_chat_template(tok, [(msgs, [WEATHER], calls), (msgs, [WEATHER], [])])
    import numpy as np
    prompt = tok.decode(np.frombuffer(p, dtype="<i4").tolist())
    answer = tok.decode(np.frombuffer(t, dtype="<i4").tolist())
    assert "get_weather" in prompt and "default is 'metric'" in prompt and prompt.endswith("assistant\n")
    assert answer.startswith("<tool_call>") and '"city": "Paris"' in answer
    assert tok.decode(np.frombuffer(t0, dtype="<i4").tolist()).startswith(NO_CALL_REPLY)
    assert np.frombuffer(t, dtype="<i4")[-1] == tok.eos_token_id
    # serving renders the prompt a model was trained on: the same ids for the same request
    from hammer_core.data.tokenization import prompt_text
    served = prompt_text(tok, msgs, [WEATHER], "chat_template")
    assert tok(served, add_special_tokens=False)["input_ids"] == np.frombuffer(p, dtype="<i4").tolist()
    assert "[BEGIN OF TASK INSTRUCTION]" in prompt_text(tok, msgs, [WEATHER])  # Hammer's prompt by default


# --- batching helpers ----------------------------------------------------------------------------

def test_length_buckets_cover_every_row_once_and_cut_padding():
    import random
    rng = random.Random(0)
    lengths = [rng.randint(20, 2000) for _ in range(1000)]
    batches = length_buckets(lengths, batch_size=8, seed=1)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(1000))
    assert all(len(b) == 8 for b in batches)  # 1000 = 125 * 8
    assert batches == length_buckets(lengths, batch_size=8, seed=1)
    assert batches != length_buckets(lengths, batch_size=8, seed=2)
    shuffled = [list(range(i, i + 8)) for i in range(0, 1000, 8)]
    assert padding_ratio(batches, lengths) < padding_ratio(shuffled, lengths) / 3


def test_pack_fills_bins_without_overflow():
    lengths = [900, 600, 500, 400, 300, 100, 100, 50]
    bins = pack(lengths, 1000)
    assert sorted(i for b in bins for i in b) == list(range(8))
    assert all(sum(lengths[i] for i in b) <= 1000 for b in bins)
    assert len(bins) == 3  # 2950 tokens need at least 3 bins of 1000
    with pytest.raises(ValueError, match="max_length"):
        pack([1200], 1000)


def test_masking_keeps_a_call_turn_nested_too_deep_as_it_is():
    # a history text that only looks like a call turn: too deep for orjson (json.loads then
    # hits the recursion limit), or parseable but too deep to dump again
    for n in (3000, 900):
        deep_turn = dumps([{"name": "search_flights", "arguments": {"origin": "NYC"}}])[:-3] + \
            ',"dest":' + "[" * n + "]" * n + "}}]"
        r = weather_row()
        r["messages"] = [{"role": "user", "content": "Fly me to Paris."},
                         {"role": "assistant", "content": deep_turn},
                         {"role": "user", "content": "And the weather in Paris?"}]
        m = mask_row(r, seed=1)
        assert m["messages"][1]["content"] == deep_turn
