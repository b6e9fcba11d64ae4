"""The prepare stage on real Parquet: valid, consistent, deterministic outputs, for any workers."""

from __future__ import annotations

import json
from collections import Counter
from copy import deepcopy
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hammer_core.artifacts import write_table
from hammer_core.config import ConfigError, config_from_dict
from hammer_core.data.formats.xlam import normalize_xlam
from hammer_core.data.compiled import fastprep
from hammer_core.data.prepare import blockio, load_prepared, synthesis
from hammer_core.data.prepare.engine import Engine
from hammer_core.schema import EXAMPLE_SCHEMA, examples_table
from hammer_core.data.synth import synth_rows
from hammer_core.data.tokenization import TOKENS_SCHEMA, tokenize_rows
from hammer_core.data.validation import validate_example

from .conftest import prepare_examples

ROWS = 360


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """An xLAM-shaped synthetic corpus (``hammer synth``), normalized, as an examples artifact."""
    rows = [normalize_xlam(r, source="synth", task=("travel", "finance")[i % 2], index=i)
            for i, r in enumerate(synth_rows(ROWS, seed=7))]
    path = tmp_path_factory.mktemp("corpus") / "examples.parquet"
    return write_table(examples_table(rows), path, kind="examples"), rows


def config(tmp_path: Path, **prepare) -> object:
    p = {"eval_fraction": 0.15, "irrelevance_ratio": 0.1, "hard_negative_ratio": 0.04, "copies": 2,
         "max_length": 4096, "workers": 1, **prepare}
    return config_from_dict({"seed": 3, "output_dir": str(tmp_path), "prepare": p})


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    return prepare_examples(config(out), corpus[0], out / "prepare"), corpus[1]


def test_every_output_row_is_valid_and_tokens_match_the_rows(prepared):
    res, source = prepared
    by_id = {r["id"]: r for r in source}
    train, evals = res.train.read(), res.eval.read()
    assert train.schema.remove_metadata().equals(EXAMPLE_SCHEMA.remove_metadata())
    for table, tokens in ((train, res.train_tokens), (evals, res.eval_tokens)):
        rows = table.to_pylist()
        toks = tokens.read()
        assert toks.schema.remove_metadata().equals(TOKENS_SCHEMA.remove_metadata())
        assert toks.column("id").to_pylist() == [r["id"] for r in rows]
        assert len({r["id"] for r in rows}) == len(rows)
        for r in rows:
            validate_example(r)
            root = r["parent_id"] or r["id"]
            assert root in by_id  # lineage: every row traces back to an ingested row
        # the cached-fragment tokens are exactly the whole-text tokenization of each row
        from hammer_core.model.tokenizer import load_tiny_tokenizer
        ref, too_long = tokenize_rows(rows, load_tiny_tokenizer(), 4096)
        assert not too_long
        assert toks.column("input_ids").to_pylist() == [x["input_ids"] for x in ref]
        assert toks.column("n_prompt").to_pylist() == [x["n_prompt"] for x in ref]
    assert res.train_tokens.manifest["parents"] == [res.train.content_hash]


def test_mix_shares_lineage_and_no_leak(prepared):
    res, source = prepared
    s = res.summary
    train, evals = res.train.read().to_pylist(), res.eval.read().to_pylist()
    for split, rows in (("train", train), ("eval", evals)):
        variants = Counter(r["variant"].split("+")[0] for r in rows)
        no_call = sum(r["calls"] == "[]" for r in rows) / len(rows)
        assert abs(no_call - 0.1) < 0.02, (split, no_call)
        assert s[split]["no_call_share"] == round(no_call, 4)
        made = s["irrelevance"][split]["made"]
        copies = 2 if split == "train" else 1
        assert variants["hard_negative"] == made["hard_negative"] * copies > 0
        assert variants["irrelevance"] == made["irrelevance"] * copies > 0
    masked = sum(r["variant"].endswith("+masked") for r in train) / len(train)
    assert 0.55 < masked < 0.78  # 2/3 of the rows
    assert not any(r["variant"].endswith("masked") for r in evals)  # eval is never masked
    roots = {split: {r["parent_id"] or r["id"] for r in rows} for split, rows in (("train", train), ("eval", evals))}
    assert not roots["train"] & roots["eval"]  # no variant of an eval row in training
    assert s["input_rows"] == ROWS and s["tokenization"] == "fragments"
    assert s["train"]["rows"] == len(train) and s["train_tokens"]["rows"] == len(train)
    # copies: each source row of the train split appears `copies` times
    per_root = Counter(r["parent_id"] or r["id"] for r in train if r["variant"].split("+")[0] == "original")
    assert set(per_root.values()) == {2}
    loaded = load_prepared(Path(res.train.path).parent)
    assert loaded.summary == s and loaded.train.content_hash == res.train.content_hash


def test_same_bytes_for_any_worker_count_and_run(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(blockio, "BLOCK_ROWS", 64)  # several blocks, so two workers really share them
    monkeypatch.setattr(blockio, "ROW_GROUP_ROWS", 100)
    hashes = []
    pool = pa.default_memory_pool().backend_name
    footer = pq.ParquetFile(corpus[0].path).metadata
    decoded = sum(footer.row_group(i).total_byte_size for i in range(footer.num_row_groups))
    reads = []
    monkeypatch.setattr(blockio, "_blocks", lambda *a, _read=blockio._blocks, **k: reads.append(1) or _read(*a, **k))
    # (workers, memory for pass 2, reads of the input, Arrow's own default pool)
    runs = [(1, synthesis.KEEP_INPUT_BYTES, 1, False),  # the input kept whole for pass 2
            (2, synthesis.KEEP_INPUT_BYTES, 1, False),
            (1, decoded // 2, 1, False),  # too big to keep: pass 1 keeps the rows likely to be selected
            (2, 0, 2, False),  # no memory at all: pass 2 reads the input again
            (1, synthesis.KEEP_INPUT_BYTES, 1, True)]  # the stage allocates from malloc unless a pool was chosen
    for run, (workers, keep, n_reads, own_pool) in enumerate(runs):
        monkeypatch.setattr(synthesis, "KEEP_INPUT_BYTES", keep)
        if own_pool:
            monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", pool)
        reads.clear()
        res = prepare_examples(config(tmp_path, workers=workers), corpus[0], tmp_path / f"run{run}")
        assert len(reads) == n_reads
        assert pa.default_memory_pool().backend_name == pool  # the stage put the default back
        hashes.append([a.content_hash for a in (res.train, res.eval, res.train_tokens, res.eval_tokens, res.rejects)])
        assert pq.ParquetFile(res.train.path).metadata.row_group(0).num_rows == 100
        made = res.summary["irrelevance"]["train"]["made"]
        assert made["irrelevance"] > 0 and made["hard_negative"] > 0  # pass 2 had rows to make
    assert all(h == hashes[0] for h in hashes)
    cfg = config(tmp_path)
    reseeded = config_from_dict({**cfg.model_dump(), "seed": 4})
    res = prepare_examples(reseeded, corpus[0], tmp_path / "reseeded")
    assert res.train.content_hash != hashes[0][0]


def test_the_stage_allocates_from_malloc_unless_a_pool_was_chosen(monkeypatch):
    before = pa.default_memory_pool().backend_name
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    with blockio._system_memory_pool():
        assert pa.default_memory_pool().backend_name == "system"
    assert pa.default_memory_pool().backend_name == before
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", before)
    with blockio._system_memory_pool():
        assert pa.default_memory_pool().backend_name == before


def test_blocks_on_a_dask_cluster_give_the_same_bytes(corpus, tmp_path, monkeypatch):
    pytest.importorskip("distributed")  # in the lock (prefect-dask); optional for a bare install
    monkeypatch.setattr(blockio, "BLOCK_ROWS", 64)  # several blocks spread over the two workers
    local = prepare_examples(config(tmp_path, workers=1), corpus[0], tmp_path / "local")
    cfg = config_from_dict({**config(tmp_path).model_dump(), "orchestration": {"task_runner": "dask",
                                                                               "dask_workers": 2}})
    on_dask = prepare_examples(cfg, corpus[0], tmp_path / "dask", dask=True)
    for a, b in zip((local.train, local.eval, local.train_tokens, local.eval_tokens, local.rejects),
                    (on_dask.train, on_dask.eval, on_dask.train_tokens, on_dask.eval_tokens, on_dask.rejects)):
        assert a.content_hash == b.content_hash, a.path.name
    assert on_dask.summary == local.summary


def test_length_policy_rejects_or_trims_but_never_cuts_an_answer(corpus, tmp_path):
    lengths = np.array([len(r) for r in prepare_examples(config(tmp_path, copies=1, hard_negative_ratio=0),
                                                     corpus[0], tmp_path / "full").train_tokens.read()
                        .column("input_ids").to_pylist()])
    limit = int(np.percentile(lengths, 60))
    rejected = prepare_examples(config(tmp_path, copies=1, max_length=limit, hard_negative_ratio=0), corpus[0], tmp_path / "rej")
    rej = rejected.rejects.read().to_pylist()
    assert rej and all(r["reason"] == "too_long" and f"max_length {limit}" in r["detail"] for r in rej)
    assert rejected.summary["rejected_too_long"] == len(rej)
    assert max(len(x) for x in rejected.train_tokens.read().column("input_ids").to_pylist()) <= limit

    trimmed = prepare_examples(config(tmp_path, copies=1, max_length=limit, hard_negative_ratio=0,
                             length_policy="truncate_tools"), corpus[0], tmp_path / "trim")
    rows = trimmed.train.read().to_pylist()
    toks = trimmed.train_tokens.read().column("input_ids").to_pylist()
    assert max(len(x) for x in toks) <= limit
    cut = [r for r in rows if r["variant"].endswith("+trimmed")]
    assert cut and trimmed.summary["trimmed"] == len(cut) + sum(
        r["variant"].endswith("+trimmed") for r in trimmed.eval.read().to_pylist())
    assert len(trimmed.rejects.read()) < len(rej)  # trimming saves rows that rejecting loses
    for r in cut:
        validate_example(r)  # every called function is still offered
        assert json.loads(r["tools"])


def test_render_only_and_chat_template_format(corpus, tmp_path, tiny_tokenizer_dir):
    dry = prepare_examples(config(tmp_path, copies=1), corpus[0], tmp_path / "dry", tokenize=False)
    assert dry.train_tokens is None and dry.summary["tokenization"] == "none"
    assert not (tmp_path / "dry" / "train_tokens.parquet").exists()

    cfg = config_from_dict({**config(tmp_path, copies=1).model_dump(),
                            "model": {"name_or_path": "hammer-tiny-qwen2", "tokenizer": str(tiny_tokenizer_dir)}})
    cfg = config_from_dict({**cfg.model_dump(),
                            "prepare": {**cfg.prepare.model_dump(), "prompt_format": "chat_template"}})
    res = prepare_examples(cfg, corpus[0], tmp_path / "chat")
    assert res.summary["tokenization"] == "chat_template"
    row = res.train_tokens.read().slice(0, 1).to_pylist()[0]
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    text = tok.decode(row["input_ids"][row["n_prompt"]:])
    assert text.startswith("<tool_call>") or text.startswith("[]")


def test_lz4_compression_writes_the_same_rows(corpus, tmp_path):
    """prepare.compression: lz4 changes the files' codec (and bytes), never the rows."""
    zstd = prepare_examples(config(tmp_path, copies=1), corpus[0], tmp_path / "zstd")
    lz4 = prepare_examples(config(tmp_path, copies=1, compression="lz4"), corpus[0], tmp_path / "lz4")
    for name in ("train", "eval", "train_tokens", "eval_tokens"):
        a, b = getattr(zstd, name), getattr(lz4, name)
        assert a.read().equals(b.read()) and a.content_hash != b.content_hash
        for path, codec in ((a.path, "ZSTD"), (b.path, "LZ4")):
            md = pq.ParquetFile(path).metadata.row_group(0)
            assert {md.column(i).compression for i in range(md.num_columns)} == {codec}
    assert lz4.train.manifest["extra"]["prepare"]["compression"] == "lz4"
    assert lz4.summary == zstd.summary
    with pytest.raises(ConfigError, match="compression"):
        config_from_dict({"prepare": {"compression": "gzip"}})


@pytest.fixture
def tiny_tokenizer_dir(tmp_path):
    """The shipped tokenizer with a chat template that renders tools (like Qwen2.5's)."""
    from hammer_core.model.tokenizer import load_tiny_tokenizer

    from .test_recipe import TOOLS_TEMPLATE
    tok = deepcopy(load_tiny_tokenizer())
    tok.chat_template = TOOLS_TEMPLATE
    tok.save_pretrained(tmp_path / "tok")
    return tmp_path / "tok"


def test_config_checks_the_recipe():
    with pytest.raises(ConfigError, match="hard_negative_ratio"):
        config_from_dict({"prepare": {"irrelevance_ratio": 0.05, "hard_negative_ratio": 0.1}})
    with pytest.raises(ConfigError, match="length_policy"):
        config_from_dict({"prepare": {"length_policy": "cut"}})
    assert config_from_dict({}).prepare.copies == 3  # Hammer's default


def test_blocks_are_read_ahead_in_order_errors_reraised_and_the_reader_stops_when_closed():
    import threading

    from hammer_core.data.prepare.blockio import _prefetched

    def items(fail_at=None):
        for i in range(10):
            if i == fail_at:
                raise OSError(f"disk error at {i}")
            yield i

    assert list(_prefetched(items())) == list(range(10))
    got = []
    with pytest.raises(OSError, match="disk error at 4"):
        for x in _prefetched(items(fail_at=4)):
            got.append(x)
    assert got == [0, 1, 2, 3]  # everything before the error, in order
    gen = _prefetched(iter(range(10_000)), depth=2)
    assert next(gen) == 0
    gen.close()  # the consumer stops early: the reader thread ends too
    assert not any(t.name == "hammer-prepare-read" for t in threading.enumerate())


def test_artifact_writer_dictionary_encodes_and_keeps_statistics_only_where_asked(tmp_path):
    from hammer_core.artifacts import ArtifactWriter

    rows = [{"id": f"r{i}", "source": "s", "task": "t", "messages": [{"role": "user", "content": f"q{i}"}],
             "tools": "[]", "calls": "[]", "parent_id": None, "variant": "original"} for i in range(50)]
    with ArtifactWriter(tmp_path / "x.parquet", EXAMPLE_SCHEMA, kind="examples",
                        dictionary=["source", "task", "variant", "messages.list.element.role"],
                        statistics=["id", "task"]) as w:
        w.write_rows(rows)
    md = pq.ParquetFile(tmp_path / "x.parquet").metadata.row_group(0)
    col = {md.column(i).path_in_schema: md.column(i) for i in range(md.num_columns)}
    assert "RLE_DICTIONARY" in col["task"].encodings and "RLE_DICTIONARY" in col["messages.list.element.role"].encodings
    assert "RLE_DICTIONARY" not in col["id"].encodings
    assert "RLE_DICTIONARY" not in col["messages.list.element.content"].encodings
    assert col["id"].is_stats_set and col["id"].statistics.min == "r0"
    assert not col["messages.list.element.content"].is_stats_set and not col["tools"].is_stats_set
    assert pq.read_table(tmp_path / "x.parquet").to_pylist() == rows


def test_same_bytes_whatever_the_row_groups_of_the_input(corpus, tmp_path, monkeypatch):
    """The writers hand each row group to Parquet as the chunks it was added in (no copy), and
    Parquet cuts pages at chunk boundaries: the outputs' bytes must still depend only on the
    rows, not on how the input file was cut into row groups (one, or one every 50 or 7 rows:
    blocks then span several of them)."""
    from hammer_core.artifacts import ArtifactWriter

    monkeypatch.setattr(blockio, "BLOCK_ROWS", 64)
    monkeypatch.setattr(blockio, "ROW_GROUP_ROWS", 100)
    table = pq.read_table(corpus[0].path)
    hashes = []
    for k, group in enumerate((ROWS, 50, 7)):
        with ArtifactWriter(tmp_path / f"in{k}" / "examples.parquet", EXAMPLE_SCHEMA, kind="examples") as w:
            for a in range(0, ROWS, group):
                w.write_table(table.slice(a, group))
            examples = w.finish()
        assert pq.ParquetFile(examples.path).metadata.num_row_groups == -(-ROWS // group)
        res = prepare_examples(config(tmp_path, workers=1), examples, tmp_path / f"out{k}")
        hashes.append([a.content_hash for a in (res.train, res.eval, res.train_tokens, res.eval_tokens)])
    assert hashes[0] == hashes[1] == hashes[2]


@pytest.mark.skipif(not fastprep.enabled(), reason="the C extension is not built")
@pytest.mark.parametrize("tokenize", [False, True])
def test_deferred_emits_give_the_same_bytes_surface_their_errors_and_stop(corpus, tmp_path, monkeypatch, tokenize):
    """In one process the kernel's emit of a block runs on the emit thread while the next block
    is parsed: the same bytes as emitting in place; an error there fails the run (no output
    left) and the thread ends with the run."""
    import threading

    monkeypatch.setattr(blockio, "BLOCK_ROWS", 64)
    submitted = []
    real_submit = Engine._submit
    monkeypatch.setattr(Engine, "_submit", lambda self, emit: submitted.append(1) or real_submit(self, emit))
    deferred = prepare_examples(config(tmp_path), corpus[0], tmp_path / "deferred", tokenize=tokenize)
    assert len(submitted) > 10  # every block's splits, pass 1 and pass 2

    in_place = tmp_path / "in_place"
    with monkeypatch.context() as m:
        m.setattr(Engine, "defer", property(lambda self: False, lambda self, value: None), raising=False)
        direct = prepare_examples(config(tmp_path), corpus[0], in_place, tokenize=tokenize)
    arts = ("train", "eval", "train_tokens", "eval_tokens", "rejects")
    assert [getattr(deferred, a) and getattr(deferred, a).content_hash for a in arts] == \
        [getattr(direct, a) and getattr(direct, a).content_hash for a in arts]

    calls = []
    real_output = Engine._fast_output

    def failing(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("emit went wrong")
        return real_output(self, *args, **kwargs)

    monkeypatch.setattr(Engine, "_fast_output", failing)
    with pytest.raises(RuntimeError, match="emit went wrong"):
        prepare_examples(config(tmp_path), corpus[0], tmp_path / "failed", tokenize=tokenize)
    assert not list((tmp_path / "failed").glob("*.parquet"))
    assert not any(t.name.startswith("hammer-prepare-emit") for t in threading.enumerate())
