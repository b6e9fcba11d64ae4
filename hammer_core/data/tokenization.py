"""Tokenize rendered examples: the loss falls on the answer only.

Each example becomes ``input_ids = prompt_ids + answer_ids + [eos]`` and ``n_prompt``, the
number of leading tokens that carry no loss (labels are -100 there). The prompt goes through
the tokenizer's chat template when it has one, so instruct models see their native format.
Prompt and answer are tokenized separately (the answer starts a fresh pre-token sequence).

Fast path: fragments
--------------------
:mod:`hammer_core.data.prompts` renders a prompt as fragments cut at pre-token boundaries;
:class:`FragmentTokenizer` tokenizes each distinct fragment once (instructions, each tool's
text, a row's query across its copies...), caches the ids, and concatenates. Misses are
tokenized in a few large calls: fragments joined with a special token (which the tokenizer
splits out before anything else) and cut again at its id -- or, for ASCII chunks of a GPT-2,
Qwen2 or Llama-3 style byte-level BPE, by the compiled encoder (:mod:`hammer_core.data.compiled.fastbpe`,
the same ids; it is part of the probe below, and dropped if the probe fails with it). The
fast path is only used when it is exact for the tokenizer at hand: at construction, a set of
probe rows (masked and not, multi-call, unicode, defaults) is tokenized both ways and must
agree token for token, and the chat template must wrap a prompt as ``prefix + prompt +
suffix``; otherwise every prompt is tokenized whole. While running, rows are spot-checked against whole-text tokenization
(:meth:`FragmentTokenizer.check`).

Formats
-------
``hammer`` (default): Hammer's prompt (:mod:`hammer_core.data.prompts`) as the user turn, the
fenced JSON list of calls as the answer. ``chat_template``: the tokenizer's own chat template
with ``tools=`` (the conversation as turns; the answer is the assistant turn with
``tool_calls``, or the text ``[]`` for "no call"), rendered per row (slower); the template
must render tools.

Length policy
-------------
``reject`` (default): an example longer than ``max_length`` is rejected with its lengths.
``truncate_tools``: distractor tools (not called by the answer) are dropped, longest first,
until it fits (at least one tool stays); if it still does not fit it is rejected. The answer
is never cut: a truncated target would teach the model broken JSON.

Batching helpers for training: :func:`length_buckets` (batches of similar length) and
:func:`pack` (first-fit-decreasing packing into ``max_length`` bins).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from itertools import chain
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:  # importing transformers costs seconds; only the type is needed here
    from transformers import PreTrainedTokenizerBase

from hammer_core.data.compiled import fastprep
from hammer_core.data.prompts import (HEAD, SAFE_CUT, TAIL, prompt_fragments, render_prompt, render_target,
                                 target_fragments, tools_for_prompt)

# a token id is never null: declared so, the writer needs no definition level per id (~16 % less
# CPU writing train_tokens.parquet, same size; readers see list<int32> values as before)
TOKEN_IDS = pa.list_(pa.field("element", pa.int32(), nullable=False))
TOKENS_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("task", pa.string(), nullable=False),
    pa.field("input_ids", TOKEN_IDS, nullable=False),
    pa.field("n_prompt", pa.int32(), nullable=False),
], metadata={"hammer.kind": "tokens"})

NO_CALL_REPLY = "[]"  # the assistant's "no call" answer in the chat_template format
_MARK = "\ue8f0HAMMER-PROMPT\ue8f1"


# --------------------------------------------------------------------------- reference path

#: attribute an export folder's loader sets on its tokenizer, whose chat template is the training
#: prompt itself (hammer_core.data.chat_template): wrapping a rendered prompt in it again would double it
RENDERS_TRAINING_PROMPT = "hammer_renders_training_prompt"


def prompt_text(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]],
                tools: list[dict[str, Any]], prompt_format: str = "hammer") -> str:
    """The full text the model is conditioned on, in the format it was trained with
    (``prepare.prompt_format``): Hammer's prompt as the user turn (chat template applied when
    there is one), or the tokenizer's own template with ``tools=`` (what training rendered).
    An exported tokenizer (:data:`RENDERS_TRAINING_PROMPT` set by the export loader) already
    carries the training prompt as its chat template: it renders the request as a server would."""
    if getattr(tokenizer, RENDERS_TRAINING_PROMPT, False):
        return tokenizer.apply_chat_template(list(messages), tools=[{"type": "function", "function": t} for t in tools],
                                             tokenize=False, add_generation_prompt=True)
    if prompt_format == "chat_template":
        return tokenizer.apply_chat_template(list(messages), tools=openai_tools(tools), tokenize=False,
                                             add_generation_prompt=True)
    prompt = render_prompt(messages, tools)
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
    return prompt


def tokenize_rows(rows: list[dict[str, Any]], tokenizer: PreTrainedTokenizerBase, max_length: int,
                  prompt_format: str = "hammer") -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], str]]]:
    """Reference tokenization (whole strings, one row at a time in spirit) in ``prompt_format``:
    returns (tokenized rows, [(row, reason detail)] for rows over ``max_length``). The prepare
    stage produces the same ids through :class:`FragmentTokenizer` (``hammer``) or
    :func:`encode_chat_template` (``chat_template``, used here too)."""
    if prompt_format == "chat_template":
        encoded = encode_chat_template(tokenizer, [(r["messages"], json.loads(r["tools"]), json.loads(r["calls"]))
                                                   for r in rows])
        pairs = [(np.frombuffer(p, dtype="<i4").tolist(), np.frombuffer(t, dtype="<i4").tolist()) for p, t in encoded]
    else:
        prompts = [prompt_text(tokenizer, r["messages"], json.loads(r["tools"])) for r in rows]
        targets = [render_target(json.loads(r["calls"])) for r in rows]
        p_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"] if rows else []
        t_ids = tokenizer(targets, add_special_tokens=False)["input_ids"] if rows else []
        pairs = [(p, [*t, tokenizer.eos_token_id]) for p, t in zip(p_ids, t_ids)]
    kept, too_long = [], []
    for row, (p, t) in zip(rows, pairs):
        ids = p + t
        if len(ids) > max_length:
            too_long.append((row, too_long_detail(len(p), len(t), max_length)))
            continue
        kept.append({"id": row["id"], "task": row["task"], "input_ids": ids, "n_prompt": len(p)})
    return kept, too_long


def too_long_detail(n_prompt: int, n_answer: int, max_length: int) -> str:
    return (f"{n_prompt + n_answer} tokens > max_length {max_length} "
            f"(prompt {n_prompt}, answer {n_answer})")


# --------------------------------------------------------------------------- chat templates

def chat_wrap(tokenizer: PreTrainedTokenizerBase) -> tuple[str, str] | None:
    """``(prefix, suffix)`` such that the chat template renders a user prompt ``p`` as
    ``prefix + p + suffix`` (``("", "")`` without a template); None when it does not."""
    if not getattr(tokenizer, "chat_template", None):
        return "", ""
    text = tokenizer.apply_chat_template([{"role": "user", "content": _MARK}], tokenize=False,
                                         add_generation_prompt=True)
    if text.count(_MARK) != 1:
        return None
    prefix, suffix = text.split(_MARK)
    probe = render_prompt([{"role": "user", "content": "Weather in Paris?"}], [])
    again = tokenizer.apply_chat_template([{"role": "user", "content": probe}], tokenize=False,
                                          add_generation_prompt=True)
    return (prefix, suffix) if again == prefix + probe + suffix else None


def openai_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tools as chat templates take them (OpenAI style), defaults noted in descriptions."""
    return [{"type": "function", "function": t} for t in tools_for_prompt(tools)]


def chat_template_texts(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]],
                        tools: list[dict[str, Any]], calls: list[dict[str, Any]]) -> tuple[str, str]:
    """(prompt, answer) in the tokenizer's own tool-calling format (``chat_template``)."""
    shown = openai_tools(tools)
    prompt = tokenizer.apply_chat_template(list(messages), tools=shown, tokenize=False,
                                           add_generation_prompt=True)
    if calls:
        turn = {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}} for c in calls]}
    else:
        turn = {"role": "assistant", "content": NO_CALL_REPLY}
    full = tokenizer.apply_chat_template([*messages, turn], tools=shown, tokenize=False)
    if not full.startswith(prompt):
        raise ValueError("the chat template does not render the conversation as prompt + answer; "
                         "use prepare.prompt_format: hammer")
    return prompt, full[len(prompt):]


def check_chat_template_tools(tokenizer: PreTrainedTokenizerBase) -> None:
    """Raise a clear error when the tokenizer's template ignores ``tools=``."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("prepare.prompt_format is chat_template but the tokenizer has no chat template")
    probe = [{"name": "zz_probe_fn", "description": "probe", "parameters": {"type": "object", "properties": {}}}]
    text = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tools=openai_tools(probe),
                                         tokenize=False, add_generation_prompt=True)
    if "zz_probe_fn" not in text:
        raise ValueError("the tokenizer's chat template does not render tools; use prepare.prompt_format: hammer")


# --------------------------------------------------------------------------- fragments

def _separator(tokenizer: PreTrainedTokenizerBase) -> tuple[str, int] | None:
    """A special token that splits text cleanly (no stripping around it): (text, id)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    for tid, tok in sorted(backend.get_added_tokens_decoder().items()):
        if tok.special and not (tok.lstrip or tok.rstrip or tok.single_word) and tok.content:
            return tok.content, tid
    return None


class FragmentTokenizer:
    """Token ids of fragment lists, cached per fragment, exact or whole-text (see module doc).

    ``encode(prompts, targets)`` returns, per row, the prompt ids and the answer ids (eos
    included) as little-endian int32 ``bytes`` -- ready to be joined into an Arrow column.
    """

    CHUNK_CHARS = 16_384

    def __init__(self, tokenizer: PreTrainedTokenizerBase, *, fast: bool = True,
                 cache_size: int = 1 << 17) -> None:
        self.tokenizer = tokenizer
        self.backend = getattr(tokenizer, "backend_tokenizer", None)
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos token")
        self.eos = np.array([tokenizer.eos_token_id], dtype="<i4").tobytes()
        self.wrap = chat_wrap(tokenizer)
        prefix, suffix = self.wrap or ("", "")
        self.head, self.tail, self.suffix = prefix + HEAD, TAIL + suffix, suffix
        self.sep = _separator(tokenizer)
        self.cache: dict[str, bytes] = {}
        self.cache_size = cache_size
        self.fast = bool(fast and self.backend is not None and self.wrap is not None and self.sep is not None)
        # the compiled byte-level BPE for new chunks (exactly HF's ids; None: HF tokenizes them)
        self.bpe: Any = None
        if self.fast and fastprep.enabled():
            from hammer_core.data.compiled.fastbpe import ByteLevelBPE
            self.bpe = ByteLevelBPE.from_tokenizer(tokenizer)
        if self.fast:
            views = probe_views()
            self.fast = self.verify(views)
            if not self.fast and self.bpe is not None:  # never expected: then without the BPE
                self.bpe = None
                self.fast = self.verify(views)

    # -- public ---------------------------------------------------------------------------
    def wrap_prompt(self, frags: list[str]) -> list[str]:
        """The prompt's fragments with the chat template's prefix and suffix merged in."""
        frags = list(frags)
        frags[0] = self.head if frags[0] is HEAD else self._prefix() + frags[0]
        frags[-1] = self.tail if frags[-1] is TAIL else frags[-1] + self.suffix
        return frags

    def encode(self, prompts: Sequence[list[str]], targets: Sequence[list[str]]) -> list[tuple[bytes, bytes]]:
        """(prompt ids, answer ids + eos) per row, for already wrapped prompt fragments."""
        if not self.fast:
            p = self._whole(["".join(f) for f in prompts])
            t = self._whole(["".join(f) for f in targets])
            return [(a, b + self.eos) for a, b in zip(p, t)]
        cache = self.cache
        if len(cache) > self.cache_size:
            cache.clear()  # a cache only: clearing changes speed, never ids
        frags = set(chain.from_iterable(prompts))
        frags.update(chain.from_iterable(targets))
        missing = [f for f in frags if f not in cache]
        if missing:  # new fragments: tokenize them all at once
            self._fill(sorted(missing))  # sorted: the same chunks for the same block, always
        eos, join = self.eos, b"".join
        return [(join([cache[f] for f in p]), join([cache[f] for f in t]) + eos) for p, t in zip(prompts, targets)]

    def check(self, prompt: list[str], target: list[str], ids: tuple[bytes, bytes], row_id: str) -> None:
        """Spot check: the cached ids of one row equal whole-text tokenization (else raise)."""
        if not self.fast:
            return
        whole = self._whole(["".join(prompt), "".join(target)])
        if (whole[0], whole[1] + self.eos) != ids:
            raise RuntimeError(
                f"fragment tokenization differs from whole-text tokenization on row {row_id!r}; "
                "this tokenizer breaks the fragment boundaries -- set prepare.fast_tokenization: false")

    def verify(self, views: Sequence[tuple[Any, list[dict[str, str]]]]) -> bool:
        """Do cached fragments give exactly the whole-text ids on ``views`` (rows)?"""
        prompts = [self.wrap_prompt(prompt_fragments(v, m)) for v, m in views]
        targets = [target_fragments(v) for v, _ in views]
        saved, self.fast = self.fast, True
        try:
            got = self.encode(prompts, targets)
        finally:
            self.fast = saved
        want_p = self._whole(["".join(f) for f in prompts])
        want_t = self._whole(["".join(f) for f in targets])
        self.cache.clear()
        return all(g == (p, t + self.eos) for g, p, t in zip(got, want_p, want_t))

    # -- internals ------------------------------------------------------------------------
    def _prefix(self) -> str:
        return self.head[: len(self.head) - len(HEAD)]

    def _whole(self, texts: list[str]) -> list[bytes]:
        if not texts:
            return []
        if self.backend is not None:
            encs = self.backend.encode_batch(texts, add_special_tokens=False)
            return [np.asarray(e.ids, dtype="<i4").tobytes() for e in encs]
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [np.asarray(i, dtype="<i4").tobytes() for i in ids]

    def _fill(self, texts: list[str]) -> None:
        """Tokenize ``texts`` into the cache. Each text is cut at its safe cuts (see
        :data:`hammer_core.data.prompts.SAFE_CUT`) into chunks -- mostly words, which recur across
        rows and are cached too; the new chunks are tokenized joined by the separator token."""
        cache = self.cache
        chunked: list[tuple[str, list[str]]] = []
        new: dict[str, None] = {}
        for t in texts:
            parts = SAFE_CUT.split(t) if " " in t else [t]
            for p in parts:
                if p not in cache:
                    new[p] = None
            if len(parts) > 1:
                chunked.append((t, parts))
        if new:
            self._tokenize_chunks(list(new))
        for t, parts in chunked:
            cache[t] = b"".join([cache[p] for p in parts])

    def _encode_batch(self, texts: list[str]) -> list[Any]:
        """The backend's encodings of ``texts`` (no special tokens added); ``encode_batch_fast``
        where the backend has it (the same ids, without character offsets: ~30 % faster)."""
        fast = getattr(self.backend, "encode_batch_fast", None)
        if fast is not None:
            return fast(texts, add_special_tokens=False)
        return self.backend.encode_batch(texts, add_special_tokens=False)

    def _compiled(self, texts: list[str]) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
        """(the texts the compiled BPE tokenized, their ids one after the other, their counts,
        the texts left for the HF tokenizer)."""
        if self.bpe is None or not texts:
            return [], np.zeros(0, np.int32), np.zeros(0, np.int32), texts
        ids, counts = self.bpe.encode_chunks(texts)
        ok = counts >= 0
        if ok.all():
            return texts, ids, counts, []
        done = [t for t, k in zip(texts, ok.tolist()) if k]
        rest = [t for t, k in zip(texts, ok.tolist()) if not k]
        return done, ids, counts[ok], rest

    def tokenize_chunks_flat(self, texts: list[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
        """The ids of chunks ``texts`` (pieces between safe cuts, see :meth:`_fill`), the same ids
        :meth:`_tokenize_chunks` caches, in bulk: ``(chunks, ids, counts)`` -- the chunks in the
        order of ``ids`` (int32, all chunks' ids one after the other) and each chunk's number of
        ids. For callers that keep their own cache (:mod:`hammer_core.data.compiled.fastprep`)."""
        done, done_ids, done_counts, texts = self._compiled(texts)
        sep, sep_id = self.sep  # type: ignore[misc]
        plain = [t for t in texts if sep not in t]
        alone = [t for t in texts if sep in t]
        lengths = np.array(list(map(len, plain)), dtype=np.int64) + len(sep)
        group_of = np.cumsum(lengths) // self.CHUNK_CHARS  # ~CHUNK_CHARS characters a group
        bounds = np.flatnonzero(np.diff(group_of)) + 1
        starts = [0, *bounds.tolist()]
        ends = [*bounds.tolist(), len(plain)]
        groups = [plain[a:b] for a, b in zip(starts, ends) if b > a]
        encs = self._encode_batch([sep.join(g) for g in groups] + alone) if plain or alone else []
        out_chunks: list[str] = list(done)
        flats: list[np.ndarray] = [np.asarray(done_ids, dtype=np.int32)]
        counts: list[np.ndarray] = [np.asarray(done_counts, dtype=np.int32)]
        for g, enc in zip(groups, encs):
            ids = np.asarray(enc.ids, dtype=np.int32)
            cuts = np.flatnonzero(ids == sep_id)
            if len(cuts) != len(g) - 1:  # should not happen; tokenize this group one by one
                whole = [np.frombuffer(b, dtype="<i4").astype(np.int32) for b in self._whole(g)]
                out_chunks.extend(g)
                flats.extend(whole)
                counts.append(np.array([len(w) for w in whole], dtype=np.int32))
                continue
            edges = np.concatenate([[-1], cuts, [len(ids)]])
            counts.append((np.diff(edges) - 1).astype(np.int32))
            flats.append(np.delete(ids, cuts))
            out_chunks.extend(g)
        for t, enc in zip(alone, encs[len(groups):]):
            ids = np.asarray(enc.ids, dtype=np.int32)
            out_chunks.append(t)
            flats.append(ids)
            counts.append(np.array([len(ids)], dtype=np.int32))
        if not out_chunks:
            return [], np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int32)
        return out_chunks, np.concatenate(flats).astype(np.int32), np.concatenate(counts).astype(np.int32)

    def _tokenize_chunks(self, texts: list[str]) -> None:
        done, done_ids, done_counts, texts = self._compiled(texts)
        if done:
            raw = np.asarray(done_ids, dtype="<i4").tobytes()
            ends = np.cumsum(done_counts).tolist()
            for t, s, e in zip(done, [0, *ends[:-1]], ends):
                self.cache[t] = raw[4 * s: 4 * e]
        if not texts:
            return
        sep, sep_id = self.sep  # type: ignore[misc]
        alone = [t for t in texts if sep in t]
        groups: list[list[str]] = []
        size = self.CHUNK_CHARS
        for t in texts:
            if sep in t:
                continue
            if size + len(t) > self.CHUNK_CHARS:
                groups.append([])
                size = 0
            groups[-1].append(t)
            size += len(t) + len(sep)
        encs = self._encode_batch([sep.join(g) for g in groups] + alone)
        cache = self.cache
        for g, enc in zip(groups, encs):
            ids = np.asarray(enc.ids, dtype="<i4")
            cuts = np.flatnonzero(ids == sep_id)
            if len(cuts) != len(g) - 1:  # should not happen; tokenize this group one by one
                for t, b in zip(g, self._whole(g)):
                    cache[t] = b
                continue
            raw = ids.tobytes()
            starts = [0, *(cuts + 1).tolist()]
            ends = [*cuts.tolist(), len(ids)]
            for t, s, e in zip(g, starts, ends):
                cache[t] = raw[4 * s: 4 * e]
        for t, enc in zip(alone, encs[len(groups):]):
            cache[t] = np.asarray(enc.ids, dtype="<i4").tobytes()


def probe_views() -> list[tuple[Any, list[dict[str, str]]]]:
    """Rows that exercise every fragment boundary: masked (names of every shape) and not,
    multi-call, nested values, defaults, unicode, queries ending in punctuation or digits."""
    from hammer_core.data.masking import Masker, ToolCache, mask_row_view
    from hammer_core.schema import dumps

    def tool(name: str, params: dict[str, Any], desc: str) -> dict[str, Any]:
        return {"name": name, "description": desc, "parameters": {
            "type": "object", "properties": params,
            "required": [p for p, s in params.items() if "default" not in s]}}

    tools = [
        tool("get_weather", {"city": {"type": "string", "description": "City, e.g. 'Paris'."},
                             "units": {"type": "string", "description": "Units.", "default": "metric"}},
             "Current weather for a city."),
        tool("search.flights_v2", {"from": {"type": "string", "description": "Origin (IATA)."},
                                   "max_stops": {"type": "integer", "description": "Stops", "default": 1},
                                   "tags": {"type": "array", "items": {"type": "string"},
                                            "description": "Tags: [\"a\", \"b\"]."}},
             "Search flights -- \"cheap\" ones first; ünïcödé ✈."),
        tool("Calc", {"x": {"type": "number", "description": "x", "default": 2.5}}, "Adds 2.5."),
        tool("noargs", {}, "No arguments at all."),
    ]
    calls = [
        [{"name": "get_weather", "arguments": {"city": "São Paulo", "units": "metric"}}],
        [{"name": "search.flights_v2", "arguments": {"from": "JFK", "max_stops": 1, "tags": ["x", "y z"]}},
         {"name": "Calc", "arguments": {"x": 2.5}}],
        [{"name": "noargs", "arguments": {}}],
        [],
    ]
    queries = ["Weather in São Paulo in metric units?", "Fly from JFK with 1 stop, tags x and \"y z\"; add 2.5.",
               "Run it 42", "Tell me a joke...", " leading space", "trailing newline\n"]
    rows = []
    for i, c in enumerate(calls):
        for j, q in enumerate(queries):
            k = (i + j) % len(tools)
            rows.append({"id": f"probe-{i}-{j}", "tools": dumps(tools[k:] + tools[:k]),
                         "calls": dumps(c), "messages": [{"role": "system", "content": "sys"},
                                                         {"role": "user", "content": q}][j % 2:],
                         "variant": "original"})
    cache, out = ToolCache(), []
    for seed in range(3):
        masker = Masker.from_config(seed, 0.7)
        for r in rows:
            out.append((mask_row_view(r, masker, seed, cache), r["messages"]))
    return out


def encode_chat_template(tokenizer: PreTrainedTokenizerBase, rows: Sequence[tuple[list[dict[str, str]],
                         list[dict[str, Any]], list[dict[str, Any]]]]) -> list[tuple[bytes, bytes]]:
    """(prompt ids, answer ids [+ eos]) per (messages, tools, calls), in the tokenizer's own format."""
    texts = [chat_template_texts(tokenizer, m, t, c) for m, t, c in rows]
    if not texts:
        return []
    p = tokenizer([a for a, _ in texts], add_special_tokens=False)["input_ids"]
    t = tokenizer([b for _, b in texts], add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id

    def answer(ids: list[int]) -> list[int]:  # up to the template's end-of-turn token, or + eos
        return ids[: len(ids) - ids[::-1].index(eos)] if eos in ids else [*ids, eos]

    return [(np.asarray(a, dtype="<i4").tobytes(), np.asarray(answer(b), dtype="<i4").tobytes())
            for a, b in zip(p, t)]


def tokens_table(ids: Sequence[str] | pa.Array, tasks: Sequence[str] | pa.Array,
                 encoded: Sequence[tuple[bytes, bytes]]) -> pa.Table:
    """The tokens artifact's rows from encoded (prompt, answer) bytes (ids and tasks as lists of
    str or Arrow string arrays)."""
    lengths = np.fromiter((len(p) + len(t) for p, t in encoded), dtype=np.int64, count=len(encoded)) // 4
    offsets = np.zeros(len(encoded) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    values = np.frombuffer(b"".join([p + t for p, t in encoded]), dtype="<i4")
    n_prompt = np.fromiter((len(p) // 4 for p, _ in encoded), dtype=np.int32, count=len(encoded))
    input_ids = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=pa.int32()), type=TOKEN_IDS)
    ids_a = ids if isinstance(ids, pa.Array) else pa.array(ids, pa.string())
    tasks_a = tasks if isinstance(tasks, pa.Array) else pa.array(tasks, pa.string())
    return pa.Table.from_arrays([ids_a, tasks_a, input_ids,
                                 pa.array(n_prompt, pa.int32())], schema=TOKENS_SCHEMA)


# --------------------------------------------------------------------------- batching

def length_buckets(lengths: Sequence[int], batch_size: int, seed: int, window: int = 64) -> list[list[int]]:
    """Batches of row indices with similar lengths (less padding), in a seeded random order.

    Rows are shuffled, cut into windows of ``window * batch_size``, each window is sorted by
    length and cut into batches, and the batches are shuffled. Every index appears exactly
    once; only the last batch may be smaller.
    """
    if batch_size < 1 or window < 1:
        raise ValueError("batch_size and window must be >= 1")
    rng = np.random.default_rng(seed)
    lengths_a = np.asarray(lengths)
    order = rng.permutation(len(lengths_a))
    span = batch_size * window
    batches: list[list[int]] = []
    for start in range(0, len(order), span):
        chunk = order[start:start + span]
        chunk = chunk[np.argsort(lengths_a[chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size].tolist() for i in range(0, len(chunk), batch_size))
    full = [b for b in batches if len(b) == batch_size]
    rest = [i for b in batches if len(b) < batch_size for i in b]
    full = [full[i] for i in rng.permutation(len(full))]
    return full + ([rest] if rest else [])


def pack(lengths: Sequence[int], max_length: int) -> list[list[int]]:
    """Pack rows into bins of at most ``max_length`` tokens (first fit, longest first).

    Returns the bins as lists of row indices; deterministic (ties by index). A row longer
    than ``max_length`` is an error (the prepare stage never emits one).
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    room: list[int] = []
    for i in order:
        n = lengths[i]
        if n > max_length:
            raise ValueError(f"row {i} has {n} tokens > max_length {max_length}")
        for b, free in enumerate(room):
            if n <= free:
                bins[b].append(i)
                room[b] -= n
                break
        else:
            bins.append([i])
            room.append(max_length - n)
    return bins


def padding_ratio(batches: Sequence[Sequence[int]], lengths: Sequence[int]) -> float:
    """Share of padding tokens when each batch is padded to its longest row."""
    total = sum(max(lengths[i] for i in b) * len(b) for b in batches if b)
    real = sum(lengths[i] for b in batches for i in b)
    return 0.0 if not total else 1.0 - real / total


__all__ = ["NO_CALL_REPLY", "TOKENS_SCHEMA", "TOKEN_IDS", "FragmentTokenizer", "chat_template_texts", "chat_wrap",
           "check_chat_template_tools", "encode_chat_template", "length_buckets", "openai_tools", "pack",
           "padding_ratio", "probe_views", "prompt_text", "tokenize_rows", "tokens_table", "too_long_detail"]
