"""The compiled prepare kernel (hammer_core.data.compiled._fastprep) against its oracle, the Python path:
bit-exact randomness and hashes, the same eligibility, and byte-identical artifacts."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hammer_core.data.compiled import fastprep
from hammer_core.data.prepare import blockio
from hammer_core.data.prepare.engine import Engine, Recipe
from hammer_core.data.prepare.kernel_path import _eligibility_of
from hammer_core.data.prepare.rows import _Columns, is_eval
from hammer_core.artifacts import write_table
from hammer_core.config import config_from_dict
from hammer_core.data.formats.xlam import normalize_xlam
from hammer_core.data.irrelevance import eligibility, synthesize_tools
from hammer_core.data.masking import NameGenerator, copy_keys, mix64, row_keys, stable_key
from hammer_core.model.tokenizer import load_tiny_tokenizer
from hammer_core.schema import EXAMPLE_SCHEMA, dumps, examples_table
from hammer_core.data.tokenization import FragmentTokenizer
from hammer_core.data.synth import synth_rows
from hammer_core.data.validation import validate_example

from .conftest import prepare_examples

pytestmark = pytest.mark.skipif(fastprep._fastprep is None, reason="the C extension is not built")

ROWS = 300


def _tool(name: str, params: dict, desc: str = "A tool.") -> dict:
    return {"name": name, "description": desc, "parameters": {
        "type": "object", "properties": params, "required": [p for p, s in params.items() if "default" not in s]}}


def special_rows() -> list[dict]:
    """Rows that take every branch: the kernel's and the ones it hands to Python."""
    weather = _tool("get_weather", {"city": {"type": "string", "description": "City, e.g. 'Paris'."},
                                    "units": {"type": "string", "description": "Units, default metric.",
                                              "default": "metric"},
                                    "days": {"type": "integer", "description": "Days", "default": 3}})
    odd = _tool("_private-fn", {"x y": {"type": "number", "description": "x", "default": 2.5},
                                "flag": {"type": "boolean", "description": "f", "default": False}}, "Odd names ✈.")
    calc = _tool("Calc", {"x": {"type": "number", "description": "x"}}, "Adds.")
    noargs = _tool("noargs", {}, "No arguments.")

    def row(rid, tools, calls, messages, calls_text=None):
        return {"id": rid, "source": "special", "task": "travel", "messages": messages, "tools": dumps(tools),
                "calls": calls_text if calls_text is not None else dumps(calls), "parent_id": None,
                "variant": "original"}

    user = lambda q: [{"role": "user", "content": q}]  # noqa: E731
    out = []
    for k in range(4):  # repeated so that masking hits each of them in some copy
        s = f"s{k}"
        out += [
            row(f"{s}-esc", [weather, calc], [{"name": "get_weather", "arguments": {
                "city": "São \"Paulo\"\n\tx", "days": 4}}], user("Weather in São \"Paulo\"?")),
            row(f"{s}-default", [weather, calc], [{"name": "get_weather", "arguments": {
                "city": "Oslo", "units": "metric", "days": 3}}], user("Oslo in metric units for 3 days")),
            row(f"{s}-odd", [odd, noargs, calc], [{"name": "_private-fn", "arguments": {"x y": 1e-07, "flag": True}},
                                                  {"name": "noargs", "arguments": {}}], user("Run the odd one 1e-07")),
            row(f"{s}-sys", [calc, weather], [{"name": "Calc", "arguments": {"x": -0.0}}],
                [{"role": "system", "content": "Be brief."}, {"role": "user", "content": " leading space"}]),
            row(f"{s}-multi", [calc, weather], [{"name": "Calc", "arguments": {"x": 1.5}}],
                [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello! What to add?"},
                 {"role": "user", "content": "Add 1.5"}]),
            row(f"{s}-noncanon", [calc, noargs], None, user("Add 2"),
                calls_text='[{"arguments":{"x":2},"name":"Calc"}]'),
            row(f"{s}-trail", [weather, calc], [{"name": "get_weather", "arguments": {"city": "Rome"}}],
                user("Rome weather\n")),
            row(f"{s}-nocall", [weather, calc], [], user("Tell me a joke")),
            # non-ASCII at the query's ends: Unicode spaces (not a safe cut) and other characters
            row(f"{s}-uspace", [weather, calc], [{"name": "Calc", "arguments": {"x": 3}}], user("\u3000Add 3")),
            row(f"{s}-uspace-end", [weather, calc], [{"name": "Calc", "arguments": {"x": 5}}], user("Add 5\u00a0")),
            row(f"{s}-uends", [calc, weather], [{"name": "Calc", "arguments": {"x": 4}}], user("Überweise 4 €")),
            row(f"{s}-nested", [_tool("put", {"o": {"type": "object", "description": "o"}})],
                [{"name": "put", "arguments": {"o": {"a": [1, 2.0, "x, y: z"], "b": {"c": None}}}}], user("Put it")),
        ]
    for r in out:
        validate_example(r)
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rows = [normalize_xlam(r, source="synth", task=("travel", "finance")[i % 2], index=i)
            for i, r in enumerate(synth_rows(ROWS, seed=11))]
    rows = rows[:100] + special_rows() + rows[100:]
    path = tmp_path_factory.mktemp("corpus") / "examples.parquet"
    return write_table(examples_table(rows), path, kind="examples"), rows


def config(tmp_path, **prepare):
    p = {"eval_fraction": 0.15, "irrelevance_ratio": 0.1, "hard_negative_ratio": 0.04, "copies": 2,
         "max_length": 4096, "workers": 1, **prepare}
    return config_from_dict({"seed": 5, "output_dir": str(tmp_path), "prepare": p})


def run_both(cfg, corpus, tmp_path, monkeypatch, tokenize=True):
    """(hashes, summary) of the Python path and of the compiled path."""
    out = []
    for mode in ("0", "1"):
        monkeypatch.setenv("HAMMER_FASTPREP", mode)
        res = prepare_examples(cfg, corpus[0], tmp_path / f"fast{mode}", tokenize=tokenize)
        arts = (res.train, res.eval, res.train_tokens, res.eval_tokens, res.rejects)
        out.append(([a.content_hash if a is not None else None for a in arts], res.summary))
    return out


def test_mix64_names_and_hashes_are_bit_exact():
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 2**64 - 1, 500, dtype=np.uint64)
    ctr = rng.integers(0, 2**64 - 1, 500, dtype=np.uint64)
    ctr[:6] = [0, 1, 2**64 - 1, 2**40, 2**41 + 4096 * 7 + 3, 2**63]
    assert [fastprep.mix64(int(k), int(c)) for k, c in zip(keys, ctr)] == mix64(keys, ctr).tolist()
    for kind, lengths in (("function", (5, 15)), ("parameter", (4, 10))):
        gen = NameGenerator(9, kind, lengths)
        draws = [int(x) for x in rng.integers(0, 2**64 - 1, 1000, dtype=np.uint64)] + [0, 2**64 - 1]
        assert [fastprep.gen_name(int(gen.key), lengths, d) for d in draws] == gen.names(draws)
    ids = [str(i) for i in range(500)] + ["é✈" * k for k in range(70)] + ["x" * 300, ""]
    array = pa.array(ids).slice(1)  # an offset, as a block's slice has
    purposes = [("irrelevance:train", "irrelevance:eval"), ("hard_negative:train", "hard_negative:eval")]
    for seed, fraction in ((0, 0.1), (-3, 0.5), (2**70, 0.15)):
        keys_c, evals_c, ranks_c = fastprep.FastKernel.hash_ids(array, seed, fraction, purposes)
        assert keys_c.tolist() == [stable_key(seed, "mask", i) for i in ids[1:]]
        assert evals_c.tolist() == [is_eval(i, seed, fraction) for i in ids[1:]]
        assert 0 < evals_c.sum() < len(evals_c)
        # the selection ranks: each row's key under the purpose of its own split
        for j, (train, eval_) in enumerate(purposes):
            assert ranks_c[:, j].tolist() == [stable_key(seed, eval_ if e else train, i)
                                              for i, e in zip(ids[1:], evals_c.tolist())]
        assert fastprep.FastKernel.hash_ids(array, seed, fraction)[2].shape == (len(ids) - 1, 0)
        # row_keys (irrelevance ranks too) on lists of str: the compiled BLAKE2b, the same keys
        for purpose in ("mask", "irrelevance:train", "hard_negative:eval"):
            assert row_keys(seed, ids, purpose).tolist() == [stable_key(seed, purpose, i) for i in ids]

    class Tagged(str):  # a str subclass that str()s differently: stable_key's rule, not the bytes
        def __str__(self) -> str:
            return "tagged:" + super().__str__()

    odd = [7, Tagged("a"), "b"]
    expected = [stable_key(5, "mask", i) for i in odd]
    assert expected[1] != stable_key(5, "mask", "a")
    assert row_keys(5, odd).tolist() == expected
    assert row_keys(5, iter(odd)).tolist() == expected  # any iterable, read once


def test_the_kernel_tokenizes_its_ascii_misses_itself(corpus, tmp_path, monkeypatch):
    """With the compiled BPE, the kernel tokenizes new ASCII chunks (masked names, queries) in
    place: only chunks with non-ASCII text reach the HF tokenizer (the bytes are the same, see
    test_same_bytes_as_the_python_path_with_tokens)."""
    to_python: list[str] = []  # chunks the kernel handed back
    to_hf: list[str] = []  # chunks the compiled BPE left to the HF tokenizer
    real_flat, real_compiled = FragmentTokenizer.tokenize_chunks_flat, FragmentTokenizer._compiled

    def flat(self, texts):
        to_python.extend(texts)
        return real_flat(self, texts)

    def compiled(self, texts):
        out = real_compiled(self, texts)
        to_hf.extend(out[3])
        return out

    monkeypatch.setattr(FragmentTokenizer, "tokenize_chunks_flat", flat)
    monkeypatch.setattr(FragmentTokenizer, "_compiled", compiled)
    monkeypatch.setenv("HAMMER_FASTPREP", "1")
    res = prepare_examples(config(tmp_path, copies=2), corpus[0], tmp_path / "out")
    assert res.summary["tokenization"] == "fragments" and res.summary["train"]["rows"] > 500
    # what reaches HF: non-ASCII text, or the chat template's special tokens
    assert to_hf and all(not t.isascii() or "<|im_" in t for t in to_hf), [t for t in to_hf if t.isascii()][:5]
    # the kernel hands back only fragments with such a chunk: few, against thousands of masked names
    assert len(to_python) < res.summary["train"]["rows"] // 4
    recipe = Recipe.from_config(config(tmp_path), tokenize=True)
    assert Engine(recipe, load_tiny_tokenizer()).frag.bpe is not None


def test_kernel_takes_the_common_rows_and_hands_the_others_to_python(corpus):
    recipe = Recipe.from_config(config(".", mask_prob=1.0), tokenize=False)
    engine = Engine(recipe, None)
    assert engine.fast is not None
    table = pa.Table.from_pylist(corpus[1], schema=EXAMPLE_SCHEMA)
    rows = _Columns(table, sparse=True)
    parsed = engine.fast.parse(rows)
    status, codes, *_ = parsed.info()
    status = np.frombuffer(status, dtype=np.uint8)
    codes = np.frombuffer(codes, dtype=np.int64).tolist()
    by_id = {r["id"]: k for k, r in enumerate(corpus[1])}
    python = {r["id"] for r, s in zip(corpus[1], status) if s}
    assert python == {r["id"] for r in corpus[1] if r["id"].endswith(("-multi", "-noncanon"))}
    gold_rows = []
    for i, r in enumerate(corpus[1]):  # the kernel's eligibility is irrelevance.eligibility
        if not status[i]:
            tools, calls = engine._parse(rows, i)
            assert _eligibility_of(codes[i]) == eligibility(tools, calls), r["id"]
            if eligibility(tools, calls).gold:
                gold_rows.append((i, synthesize_tools(tools, eligibility(tools, calls).gold)))
    # the irrelevance rows' tools as the kernel cuts them: irrelevance.synthesize_tools
    assert len(gold_rows) > 20
    offsets, data = parsed.strip_gold(np.array([i for i, _ in gold_rows[::-1]], dtype=np.int64).tobytes())
    assert fastprep.string_array(len(gold_rows), offsets, data).to_pylist() == [t for _, t in gold_rows[::-1]]
    with pytest.raises(ValueError, match="no gold tool"):
        parsed.strip_gold(np.array([int(np.flatnonzero(status)[0])], dtype=np.int64).tobytes())
    # masked rows whose gold arguments use a default (perturbed by masking) go to Python
    idx = np.arange(len(corpus[1]), dtype=np.int64)
    keys = copy_keys(row_keys(recipe.seed, [r["id"] for r in corpus[1]]), 0).astype(np.uint64)
    planned = {corpus[1][t]["id"] for t in parsed.plan(idx.tobytes(), keys.tobytes(), 1, True)}
    assert {f"s{k}-default" for k in range(4)} <= planned
    assert {f"s{k}-esc" for k in range(4)}.isdisjoint(planned)
    assert len(planned) < 0.1 * len(corpus[1])
    assert by_id  # (ids are unique)


@pytest.mark.parametrize("settings", [
    {"copies": 1},
    {"copies": 3, "workers": 2, "name_pool_size": 40},
    {"mask_prob": 1.0, "copies": 2, "hard_negative_ratio": 0.0},
    {"fast_tokenization": False, "copies": 1},  # whole-text tokenization of the kernel's fragments
])
def test_same_bytes_as_the_python_path_with_tokens(corpus, tmp_path, monkeypatch, settings):
    monkeypatch.setattr(blockio, "BLOCK_ROWS", 96)  # several blocks (and forked workers when workers=2)
    monkeypatch.setattr(blockio, "ROW_GROUP_ROWS", 150)
    python, compiled = run_both(config(tmp_path, **settings), corpus, tmp_path, monkeypatch)
    assert compiled == python
    assert python[1]["tokenization"] == ("whole" if settings.get("fast_tokenization") is False else "fragments")


@pytest.mark.parametrize("settings", [
    {"mask_prob": 0.0, "copies": 1},
    {"mask_prob": 1.0, "copies": 3, "workers": 2},
    {"copies": 2, "hard_negative_ratio": 0.08, "irrelevance_ratio": 0.2, "eval_fraction": 0.3},
])
def test_same_bytes_as_the_python_path_render_only(corpus, tmp_path, monkeypatch, settings):
    monkeypatch.setattr(blockio, "BLOCK_ROWS", 64)
    monkeypatch.setattr(blockio, "ROW_GROUP_ROWS", 100)
    python, compiled = run_both(config(tmp_path, **settings), corpus, tmp_path, monkeypatch, tokenize=False)
    assert compiled == python


def test_rows_over_the_budget_take_the_python_path(corpus, tmp_path, monkeypatch):
    cfg = config(tmp_path, copies=1, hard_negative_ratio=0, max_length=900, length_policy="truncate_tools")
    python, compiled = run_both(cfg, corpus, tmp_path, monkeypatch)
    assert compiled == python
    assert python[1]["trimmed"] > 0


def test_rows_over_the_budget_are_rejected_by_the_kernel_one_by_one(corpus, tmp_path, monkeypatch):
    # the default policy: a block with rows over the budget keeps its other rows on the kernel's
    # path (the whole block used to go to Python), with the same bytes and rejects as Python
    monkeypatch.setattr(blockio, "BLOCK_ROWS", 96)
    cfg = config(tmp_path, copies=2, max_length=700)
    python_blocks = []
    emit = Engine._emit
    monkeypatch.setattr(Engine, "_emit", lambda self, *a: python_blocks.append(a) or emit(self, *a))
    python, compiled = run_both(cfg, corpus, tmp_path, monkeypatch)
    assert compiled == python
    assert python[1]["rejected_too_long"] > 20 and python[1]["train"]["rows"] > 100
    monkeypatch.setenv("HAMMER_FASTPREP", "1")
    python_blocks.clear()
    prepare_examples(cfg, corpus[0], tmp_path / "again")
    assert python_blocks == []


def test_a_full_kernel_is_replaced_by_a_fresh_one_with_the_same_bytes(corpus, tmp_path, monkeypatch):
    # memory bounded by the cap, not by the corpus's distinct tools: past KEEP_TOOLS tools the
    # next block gets a fresh kernel (and tool cache); a cache only, so the bytes do not change
    monkeypatch.setattr(blockio, "BLOCK_ROWS", 64)
    monkeypatch.setattr(fastprep.FastKernel, "KEEP_TOOLS", 40)
    kernels = []
    new_kernel = Engine._new_kernel
    monkeypatch.setattr(Engine, "_new_kernel", lambda self: kernels.append(new_kernel(self)) or kernels[-1])
    python, compiled = run_both(config(tmp_path, copies=2, workers=1), corpus, tmp_path, monkeypatch)
    assert compiled == python
    assert len(kernels) > 3
    assert max(len(k.tools) for k in kernels) < 40 + 64 * 5  # at most one block's new tools past the cap


def test_without_the_extension_prepare_runs_in_python_with_one_warning(corpus, tmp_path, monkeypatch):
    cfg = config(tmp_path, copies=1)
    fast = prepare_examples(cfg, corpus[0], tmp_path / "fast", tokenize=False)
    monkeypatch.setattr(fastprep, "_fastprep", None)
    monkeypatch.setattr(fastprep, "_WARNED", False)
    with pytest.warns(RuntimeWarning, match="_fastprep is not available") as caught:
        slow = prepare_examples(cfg, corpus[0], tmp_path / "slow", tokenize=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        prepare_examples(cfg, corpus[0], tmp_path / "slow2", tokenize=False)
    assert len([w for w in caught if "_fastprep" in str(w.message)]) == 1
    assert slow.train.content_hash == fast.train.content_hash
    assert slow.summary == fast.summary
    rows = slow.train.read().to_pylist()
    assert any(json.loads(r["calls"]) == [] for r in rows)


# --------------------------------------------------------------------------- compile_tool

def _python_forms(text: str) -> tuple:
    """What the Python code makes of a tool text: (compact form, prompt form) as compile_tool
    returns them -- masking.CompiledTool.build and prompts._Shown with the compiled paths off."""
    from hammer_core.data.masking import CompiledTool
    from hammer_core.data.prompts import _Shown
    from hammer_core.schema import parse_json

    before = os.environ.get("HAMMER_FASTPREP")
    os.environ["HAMMER_FASTPREP"] = "0"
    try:
        ct = CompiledTool.build(text, parse_json(text))
        shown = _Shown(ct)
    finally:
        if before is None:
            del os.environ["HAMMER_FASTPREP"]
        else:
            os.environ["HAMMER_FASTPREP"] = before
    return ((ct.canon.lits, ct.canon.slots, ct.canon_inline.lits, ct.canon_inline.slots, ct.spec_texts),
            (shown.full.lits, shown.full.slots, shown.template.lits, shown.template.slots, tuple(shown.spec_texts),
             shown.text))


def _spec(**kw) -> dict:
    return {"type": "string", **kw}


EDGE_TOOLS = [  # (tool, does the kernel take it)
    (_tool("f", {"a": _spec(description="A.", default="x"), "b": _spec(description="B ", default=3),
                 "c": _spec(description="", default=2.5), "d": _spec(default=True), "e": _spec(default=False),
                 "g": _spec(description="G", default=None), "h": _spec(description="H", default=""),
                 "i": _spec(description="already: DEFAULT IS 'Q'", default="q"), "j": _spec(default=-0.0),
                 "k": _spec(description="big", default=10 ** 30),
                 "l": _spec(description="tiny", default=1e-07)}), True),
    (_tool("g", {"x": {"type": "object", "description": "o", "x-python-type": "Dict", "properties": {
        "in": {"type": "array", "items": {"type": "string"}}}, "x-other": [1, {"a": None}]}}), True),
    (_tool("esc \"q\" \\ \n", {"k \"1\"": _spec(description="tab\there \u2028 \x7f \x01 ✈ 😀"),
                               "k2": _spec(description="d")}, desc="Quotes \" and \\ and \u0000."), True),
    ({"name": "req", "parameters": {"type": "object", "properties": {"a": _spec(), "b": _spec()},
                                    "required": ["b", "zz", 1, None, True, "a", "b"]}, "description": "r"}, True),
    ({"description": "name last", "parameters": {"properties": {"a": _spec(description="d")}, "type": "object"},
      "name": "late"}, True),
    (_tool("noparams", {}), True),
    ({"name": "props-last", "parameters": {"required": ["a"], "properties": {"a": "not an object"}}}, True),
    (_tool("nondesc", {"a": {"description": ["not", "a", "string"], "default": "x"}}), False),
    (_tool("listdefault", {"a": _spec(description="d", default=["x"])}), False),
    (_tool("unicode", {"a": _spec(description="d", default="Zürich")}), False),
    (_tool("escdefault", {"a": _spec(description="d", default="a\"b")}), False),
    (_tool("escdesc", {"a": _spec(description="line\n", default="x")}), False),
    ({"name": 5, "parameters": {"type": "object", "properties": {}}}, False),
    ({"description": "no name", "parameters": {"type": "object", "properties": {}}}, False),
    ({"name": "noparams"}, False),
    ({"name": "listparams", "parameters": []}, False),
    ({"name": "noprops", "parameters": {"type": "object"}}, False),
    ({"name": "badreq", "parameters": {"type": "object", "properties": {"a": _spec()}, "required": [["a"]]}}, False),
]


@pytest.mark.parametrize("tool,taken", EDGE_TOOLS, ids=[t["name"] if isinstance(t.get("name"), str) else "nonstr"
                                                         for t, _ in EDGE_TOOLS])
def test_compile_tool_makes_the_python_templates(tool, taken):
    """compile_tool cuts, from a tool's canonical text, exactly the templates and texts that
    masking.compile_template and prompts._Shown make by dumping marked copies -- or leaves the
    tool to Python (None) where it would need Python's str(), lower() or its errors."""
    text = dumps(tool)
    got = fastprep._fastprep.compile_tool(text)
    assert (got is not None) == taken
    if got is not None:
        assert got == _python_forms(text)


@pytest.mark.parametrize("text", [
    '{"name": "f","parameters":{"type":"object","properties":{}}}',  # a space
    '{"name":"f","parameters":{"type":"object","properties":{"a":{"default":1.50}}}}',  # not repr
    '{"name":"f","parameters":{"type":"object","properties":{"a":{"default":1E5}}}}',
    '{"name":"f","parameters":{"type":"object","properties":{"a":{"default":-0}}}}',  # int 0
    '{"name":"\\u0066","parameters":{"type":"object","properties":{}}}',  # an escape dumps does not write
    '{"name":"f\\/g","parameters":{"type":"object","properties":{}}}',
    '{"name":"f\\u001F","parameters":{"type":"object","properties":{}}}',  # upper-case hex
    '{"name":"f\\u000a","parameters":{"type":"object","properties":{}}}',  # \\n has a short form
    '{"name":"f\\u0008","parameters":{"type":"object","properties":{}}}',  # so has \\b
    '{"name":"f","name":"g","parameters":{"type":"object","properties":{}}}',  # a key twice
    '{"name":"f","parameters":{"type":"object","properties":{"a":{"t":1,"t":2}}}}',
    '{"name":"f","parameters":{"type":"object","properties":{}}} ',
])
def test_compile_tool_takes_only_canonical_texts(text):
    """The templates are made from the dump of the parse: a text that is not that dump goes to
    Python (whose templates then differ from the text -- they are the dump's)."""
    assert fastprep._fastprep.compile_tool(text) is None
    parsed = json.loads(text)
    assert fastprep._fastprep.compile_tool(dumps(parsed)) is not None or not isinstance(parsed, dict)


def test_compile_tool_matches_python_on_the_corpus_tools(corpus):
    texts = {dumps(t) for r in corpus[1] for t in json.loads(r["tools"])}
    taken = 0
    for text in sorted(texts):
        got = fastprep._fastprep.compile_tool(text)
        if got is not None:
            taken += 1
            assert got == _python_forms(text), text
    assert taken >= 0.9 * len(texts)


_json_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
_scalar = st.one_of(st.none(), st.booleans(), st.integers(-10 ** 20, 10 ** 20),
                    st.floats(allow_nan=False, allow_infinity=False), _json_text)
_value = st.recursive(_scalar, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(_json_text, inner, max_size=3)), max_leaves=6)


@st.composite
def _tools(draw):
    names = draw(st.lists(st.one_of(_json_text, st.sampled_from(["a", "b", "default"])), max_size=4, unique=True))
    props = {}
    for n in names:
        spec = draw(st.dictionaries(st.sampled_from(["type", "description", "default", "x-python-type", "enum"]),
                                    st.one_of(_value, st.sampled_from(["", "Ab.", "x ", "default is 'a'"])),
                                    max_size=4))
        props[n] = spec if draw(st.integers(0, 9)) else draw(_value)
    params = {"type": "object", "properties": props}
    if draw(st.booleans()):
        params["required"] = draw(st.lists(st.one_of(st.sampled_from(names or ["z"]), _scalar), max_size=4))
    tool = {"name": draw(_json_text), "description": draw(_json_text), "parameters": params}
    keys = draw(st.permutations(list(tool)))
    return {k: tool[k] for k in keys}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_tools())
def test_compile_tool_property(tool):
    """Random tools (any text in names and descriptions, defaults of every JSON type, keys in
    any order, required lists with non-names): compile_tool's forms are Python's, or None."""
    text = dumps(tool)
    got = fastprep._fastprep.compile_tool(text)
    if got is not None:
        assert got == _python_forms(text)
