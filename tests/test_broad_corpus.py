"""The broad benchmark corpus (hammer_core/data/broad_corpus.py): breadth, determinism, real ingest,
row-kind shares, query/argument consistency, the unseen-tool split, no BFCL name overlap."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from hammer_core.data import broad_corpus as bc
from hammer_core.data.ingest import SourceSpec, ingest

ROWS = 250  # per cluster: 1,000 rows in 8 files, about a second to write


def _write(out: Path, seed: int = 0, rows: int = ROWS, share: float = 0.15) -> dict:
    return bc.generate_corpus(out, rows_per_cluster=rows, seed=seed, unseen_share=share)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("broad")
    return out, _write(out)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _files(out: Path, pattern: str = "*.jsonl") -> list[Path]:
    return sorted(out.glob(pattern))


def _seen_files(out: Path) -> list[Path]:
    return [p for p in _files(out) if not p.name.endswith(".unseen.jsonl")]


#: SHA-256 of every file the generator writes for 120 rows per cluster and seed 7, from the
#: generator as it was when its tables were Python (before they moved to broad_corpus_tools.json):
#: an edit of the tables or the samplers that changes the corpus shows here.
PINNED = {
    "everyday.jsonl": "0a6c3390d3819fe99f48317c40e6fb8b94f525512d10b41721c88bc20b5266d8",
    "everyday.unseen.jsonl": "1f623e1b7eef97de680afd2ee1cb17c65de02034f2afc5475090ea9da2200ca4",
    "leisure.jsonl": "2c9cef06361b83d6c88af604ff017662534bf20047319a2c472082098f99de7f",
    "leisure.unseen.jsonl": "d48a1d7c8c6cfc73280a7657230456b808652f109cb1ea5d30b383b6604ff236",
    "money.jsonl": "03322f87ee33e00311a82584bec757b2dffca6da826c998f820a43d1f5ae7ec4",
    "money.unseen.jsonl": "235133dd8138580675a8fd0c90b5580859b1bf0f8a31a583e932d720acf48199",
    "science.jsonl": "0becbce56f4b981b91465135b05454a006e857f02869f7e4cfa1c605e7af964f",
    "science.unseen.jsonl": "c0016c585ecc81d06c8aa6d0cf1e16ef7f4b8fbc4f834e007800b3d0e3591459",
    "tools.json": "a0fb394363d85057d01743583d5b2cfb19b384f566dd6bfb365cf633b325ed93",
}


def test_the_tables_as_data_write_the_same_bytes(tmp_path: Path) -> None:
    import hashlib

    _write(tmp_path, seed=7, rows=120)
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(tmp_path.iterdir())} == PINNED


def test_tool_set_is_broad() -> None:
    tools = bc.all_tools()
    assert len(bc.DOMAINS) >= 12 and 3 <= len(bc.CLUSTERS) <= 4
    assert len(tools) >= 300
    assert len({t.name for t in tools}) == len(tools) == len(bc.tool_ids())
    assert all(t.id == f"{t.domain}/{t.name}" for t in tools)
    assert all(len(bc.DOMAINS[d]) >= 10 for d in bc.DOMAINS)
    for families in bc._FAMILIES.values():
        for family in families:
            assert len(family.queries) >= 3, family.name
    types = Counter(p.type.split(",")[0] for t in tools for p in t.function.params)
    assert {"str", "int", "float", "bool", "List[str]", "List[int]", "List[float]"} <= set(types)
    optional = [p for t in tools for p in t.function.params if p.type.endswith(", optional")]
    assert len(optional) > 100 and sum(p.default is not bc._NO_DEFAULT for p in optional) > 80
    assert all(t.function.description.endswith(".") and len(t.function.description) > 25
               for t in tools)


def test_summary_and_files(corpus) -> None:
    out, summary = corpus
    names = {p.name for p in _files(out)}
    assert names == {f"{c}.jsonl" for c in bc.CLUSTERS} | {f"{c}.unseen.jsonl" for c in bc.CLUSTERS}
    assert summary["files"] == {p.name: len(_rows(p)) for p in _files(out)}
    assert summary["rows"] == ROWS * len(bc.CLUSTERS)
    assert summary["domains"] == len(bc.DOMAINS) and summary["tools"] == len(bc.all_tools())
    assert summary["tools_in_rows"] >= 300
    manifest = json.loads((out / "tools.json").read_text())
    assert len(manifest["tools"]) == summary["tools"]
    assert sum(t["unseen"] for t in manifest["tools"]) == summary["unseen_tools"]


def test_same_seed_same_bytes_other_seed_differs(corpus, tmp_path: Path) -> None:
    out, _ = corpus
    _write(tmp_path / "again")
    _write(tmp_path / "other", seed=1)
    for path in _files(out, "*"):
        assert (tmp_path / "again" / path.name).read_bytes() == path.read_bytes(), path.name
    for path in _files(out):
        assert (tmp_path / "other" / path.name).read_bytes() != path.read_bytes(), path.name
    assert bc.unseen_tools(0) == bc.unseen_tools(0) != bc.unseen_tools(1)


def test_every_row_passes_the_real_ingest(corpus, tmp_path: Path) -> None:
    out, summary = corpus
    # a held-out file is ingested under its cluster's task, as a benchmark config would
    specs = [SourceSpec(str(p), task=p.name.split(".")[0]) for p in _files(out)]
    result = ingest(specs, tmp_path / "ingest")
    assert result.summary["rejected"] == 0, result.summary["by_reason"]
    assert result.summary["duplicates"] == 0
    assert result.summary["kept"] == summary["rows"]
    assert result.summary["by_task"] == {c: ROWS for c in bc.CLUSTERS}


def test_row_shapes_and_kind_shares(corpus) -> None:
    out, _ = corpus
    domain_of = {t.name: t.domain for t in bc.all_tools()}
    for group in (_seen_files(out), _files(out)):
        kinds: Counter[str] = Counter()
        same_domain = distractors = 0
        for path in group:
            for row in _rows(path):
                tools = [t["name"] for t in json.loads(row["tools"])]
                answers = json.loads(row["answers"])
                assert 2 <= len(tools) <= bc.MAX_TOOLS and len(set(tools)) == len(tools)
                kinds[bc._kind_of(answers)] += 1
                gold = {a["name"] for a in answers}
                if gold:
                    home = domain_of[answers[0]["name"]]
                    others = [t for t in tools if t not in gold]
                    distractors += len(others)
                    same_domain += sum(domain_of[t] == home for t in others)
                if bc._kind_of(answers) == "parallel":
                    assert answers[0]["arguments"] != answers[1]["arguments"], row["query"]
        total = sum(kinds.values())
        assert abs(kinds["parallel"] / total - bc.PARALLEL_SHARE) < 0.03, kinds
        assert abs(kinds["multiple"] / total - bc.MULTIPLE_SHARE) < 0.03, kinds
        assert abs(kinds["none"] / total - bc.NO_CALL_SHARE) < 0.03, kinds
        assert same_domain / distractors > 0.8  # distractors mostly from the same domain


def _values(arguments: dict) -> list:
    out = []
    for value in arguments.values():
        out.extend(value if isinstance(value, list) else [value])
    return [v for v in out if not isinstance(v, bool)]  # booleans come from wording


def test_argument_values_come_from_the_query(corpus) -> None:
    out, _ = corpus
    rows = ok = optional_given = default_said = 0
    defaults = {(t.name, p.name): p.default for t in bc.all_tools() for p in t.function.params
                if p.default is not bc._NO_DEFAULT}
    for path in _files(out):
        for row in _rows(path):
            answers = json.loads(row["answers"])
            if not answers:
                continue
            rows += 1
            ok += all(str(v) in row["query"] for a in answers for v in _values(a["arguments"]))
            for a in answers:
                given = [k for k in a["arguments"] if (a["name"], k) in defaults]
                optional_given += bool(given)
                default_said += any(a["arguments"][k] == defaults[(a["name"], k)] for k in given)
    assert ok / rows > 0.98, f"{rows - ok} of {rows} rows have a value not in their query"
    assert optional_given / rows > 0.2 and default_said > 20


def test_unseen_tools_never_appear_in_seen_files(corpus) -> None:
    out, summary = corpus
    manifest = json.loads((out / "tools.json").read_text())
    unseen = {t["name"] for t in manifest["tools"] if t["unseen"]}
    assert unseen == {bc.tool_ids()[i].name for i in bc.unseen_tools(0)}
    assert 0.12 < len(unseen) / summary["tools"] < 0.18
    for domain, tools in bc.DOMAINS.items():
        assert any(t.name in unseen for t in tools), domain
    for path in _seen_files(out):
        for row in _rows(path):
            listed = {t["name"] for t in json.loads(row["tools"])}
            assert not listed & unseen, (path.name, row["id"], listed & unseen)
    gold_unseen = Counter()
    for path in _files(out, "*.unseen.jsonl"):
        for row in _rows(path):
            for a in json.loads(row["answers"]):
                assert a["name"] in unseen
                gold_unseen[a["name"]] += 1
    assert len(gold_unseen) > 0.8 * len(unseen)  # the held-out rows cover the held-out tools


def test_no_unseen_files_without_a_share(tmp_path: Path) -> None:
    summary = _write(tmp_path, rows=40, share=0.0)
    assert sorted(summary["files"]) == [f"{c}.jsonl" for c in sorted(bc.CLUSTERS)]
    assert summary["unseen_tools"] == 0 and summary["rows"] == 40 * len(bc.CLUSTERS)


def test_no_call_rows_offer_no_tool_for_the_question() -> None:
    asked_tools = bc.all_tools()[::7]
    for tool in asked_tools:
        cluster = bc.CLUSTER_OF[tool.domain]
        offer = {d: list(bc.DOMAINS[d]) for d in bc.CLUSTERS[cluster]}
        rng = __import__("random").Random(tool.name)
        for _ in range(5):
            _, listed, calls = bc._make_row(rng, "none", [tool], offer, cluster)
            assert calls == [] and tool not in listed and len(listed) >= 2
            assert not any(bc._can_answer(t, tool) for t in listed)


def test_no_tool_name_is_a_bfcl_function_name() -> None:
    from hammer_core.evaluation import bfcl

    try:
        entries = [e for c in ("simple_python", "multiple", "parallel", "parallel_multiple",
                               "irrelevance") for e in bfcl.load_category(c)]
    except FileNotFoundError as err:
        pytest.skip(str(err))
    bfcl_names = {f["name"] for e in entries for f in e.functions}
    assert len(bfcl_names) > 500
    assert not {t.name for t in bc.all_tools()} & bfcl_names


def test_cli_prints_a_one_line_summary(tmp_path: Path, capsys) -> None:
    assert bc.main([str(tmp_path), "--rows-per-cluster", "30", "--seed", "3",
                    "--unseen-share", "0.2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert summary["rows"] == 120 and summary["domains"] == len(bc.DOMAINS)
    assert sum(summary["files"].values()) == 120
    with pytest.raises(SystemExit):
        bc.main([str(tmp_path), "--unseen-share", "1.5"])
