"""Function masking (Hammer): names become random strings, so the model must read descriptions.

Per row, with probability ``p`` (Hammer: 2/3), the row is *masked*:

* tools are de-duplicated by name and shuffled;
* every function name becomes a random string of length 5-15 over ``A-Za-z0-9_.``, unique
  within the row, and every call of that function in the target is renamed the same way;
* every parameter name becomes a random string of length 4-10 (unique within its tool),
  renamed in ``properties``, in ``required`` and in the target's arguments of that function;
* where a gold argument equals the parameter's default (a scalar, not a list, not empty), the
  default is perturbed (ints +1..4, floats +U(0,1), strings 5 random characters) and the new
  value replaces the old one in the spec's ``default``, in its description, in the target and
  in the user turns of the conversation.

Descriptions are never masked. Two deliberate differences from Hammer's script, both
documented in the tests: only *whole-word* occurrences of a default are replaced (a default
``1`` must not turn ``2019`` into ``2059``) and booleans are left alone; and a random name
starts and ends with a letter or digit (``_`` and ``.`` only inside), so that it is a run of
whole pre-tokens for byte-level BPE tokenizers and can be tokenized on its own (see
:mod:`hammer_core.data.tokenization`). A perturbed argument keeps its own JSON type (``"5"`` stays
a string).

Randomness (deterministic by construction)
------------------------------------------
Every draw is a pure function of ``(seed, copy, row id, position)``: a row's key is a
BLAKE2b hash of ``(seed, "mask", row id)``, mixed with the copy number; its *stream* is
``splitmix64(key, j)`` for ``j = 0, 1, ...`` (a counter-based generator, vectorized with
NumPy over a whole block of rows). Word 0 decides masking (``u < p``), words ``1..T`` are the
shuffle keys of the ``T`` tools, then one word per name (each tool's function name followed
by its parameters, in declaration order); name collisions and perturbed defaults draw from
reserved counter ranges. So the output depends only on the rows, the config and the seed,
never on batch size, worker count or the order rows are processed in.

A name draw is turned into a string by :class:`NameGenerator`: with ``pool_size = 0`` every
draw is a fresh random string (Hammer's recipe); with ``pool_size = N`` the draw picks one of
``N`` random strings generated from the seed (each one distributed exactly like a fresh
name), so names recur across rows -- which lets the tokenizer cache their tokens.

Speed: tools are compiled once
------------------------------
Real corpora reuse tools (xLAM: ~3.7k distinct APIs in 60k rows), so a tool's JSON text is
parsed and *compiled* once (:class:`CompiledTool`, cached by :class:`ToolCache`): its
canonical JSON is cut into literal text and name slots, and a masked tool is written by
filling the slots (no JSON parsing or serialization per row); with the compiled extension the
templates are cut from the tool's canonical text in C (:func:`_compiled_forms`), the same ones
:func:`compile_template` makes by dumping a copy with marked names. A row's ``tools`` string is cut
into per-tool texts at ``},{"name":`` boundaries; that cut is only trusted when every piece is
a known tool or parses as a JSON object on its own (which proves the cut right), and the
whole list is parsed otherwise.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from operator import itemgetter
from typing import Any

import numpy as np

from hammer_core.data.compiled.switch import compiled_switched_off
from hammer_core.data.row_errors import RowError
from hammer_core.schema import dumps, parse_json
from hammer_core.data.validation import check_depth

try:  # the compiled helpers (optional; see hammer_core.data.compiled.fastprep)
    from hammer_core.data.compiled import _fastprep
except ImportError:
    _fastprep = None


ALPHABET = string.ascii_uppercase + string.ascii_lowercase + "_." + string.digits
ALNUM = string.ascii_uppercase + string.ascii_lowercase + string.digits
FN_LENGTHS = (5, 15)
PARAM_LENGTHS = (4, 10)
VARIANT = "masked"
MASK64 = (1 << 64) - 1

# Counter ranges of a row's stream (word 0: mask coin; 1..T: shuffle keys; then names).
_REDRAW_BASE = 1 << 40  # name collisions: + 4096 * slot + attempt
_DEFAULTS_BASE = 1 << 41  # perturbed defaults: + 4096 * tool + 8 * param + k
_GOLDEN = 0x9E3779B97F4A7C15
_MISSING = object()
_M1, _M2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


# --------------------------------------------------------------------------- randomness

def stable_key(*parts: Any) -> int:
    """A 64-bit key from a tuple of values (BLAKE2b; stable across runs and machines)."""
    data = "\x1f".join(map(str, parts)).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def key_prefix(seed: int, purpose: str) -> bytes:
    """The bytes :func:`stable_key` hashes before the id in ``stable_key(seed, purpose, id)``
    (what the compiled BLAKE2b of :func:`row_keys` and ``FastKernel.hash_ids`` prepend)."""
    return f"{seed}\x1f{purpose}\x1f".encode()


def mix64(keys: np.ndarray, counters: np.ndarray) -> np.ndarray:
    """splitmix64 of ``key + (counter + 1) * golden`` -- element-wise, uint64 in and out."""
    z = keys.astype(np.uint64) + (counters.astype(np.uint64) + np.uint64(1)) * np.uint64(_GOLDEN)
    z ^= z >> np.uint64(30)
    z *= np.uint64(_M1)
    z ^= z >> np.uint64(27)
    z *= np.uint64(_M2)
    z ^= z >> np.uint64(31)
    return z


def mix64_scalar(key: int, counter: int) -> int:
    """:func:`mix64` for one value (rare paths: name collisions, perturbed defaults)."""
    z = (key + (counter + 1) * _GOLDEN) & MASK64
    z = ((z ^ (z >> 30)) * _M1) & MASK64
    z = ((z ^ (z >> 27)) * _M2) & MASK64
    return z ^ (z >> 31)


def unit_float(word: int) -> float:
    """A uniform float in [0, 1) from a 64-bit word (53 bits)."""
    return (word >> 11) * (1.0 / (1 << 53))


def row_keys(seed: int, row_ids: Sequence[str], purpose: str = "mask") -> np.ndarray:
    """One 64-bit key per row id: BLAKE2b of ``(seed, purpose, id)`` -- :func:`stable_key` of
    each, computed by the compiled extension when it is there (the same keys)."""
    ids = row_ids if isinstance(row_ids, list) else list(row_ids)
    if _fastprep is not None and not compiled_switched_off():
        try:  # exact str ids only (a TypeError otherwise), UTF-8 encodable
            return np.frombuffer(_fastprep.keys(key_prefix(seed, purpose), ids), dtype=np.uint64).copy()
        except (TypeError, UnicodeEncodeError):
            pass  # stable_key's str() and UTF-8 decide (or raise)
    return np.fromiter((stable_key(seed, purpose, rid) for rid in ids), dtype=np.uint64, count=len(ids))


def copy_keys(keys: np.ndarray, copy: int) -> np.ndarray:
    """The keys of copy ``copy`` of the rows (independent streams per copy)."""
    return mix64(keys, np.full(len(keys), copy, dtype=np.uint64))


def streams(keys: np.ndarray, counts: np.ndarray) -> list[list[int]]:
    """Words ``0..counts[i]-1`` of the stream of each key (ragged, vectorized)."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    ctr = np.arange(total, dtype=np.int64) - starts
    flat = mix64(np.repeat(keys, counts), ctr.astype(np.uint64)).tolist()
    out, pos = [], 0
    for n in counts.tolist():
        out.append(flat[pos:pos + n])
        pos += n
    return out


class NameGenerator:
    """Random names of one kind (function or parameter) from 64-bit draws.

    ``pool_size = 0``: the name is a function of the whole draw (fresh names, as Hammer).
    ``pool_size = N``: the draw selects one of ``N`` names generated from ``(seed, kind, i)``;
    each name is distributed as a fresh one, and a name's string is computed once.
    Characters: the first and last from ``A-Za-z0-9``, the others from :data:`ALPHABET`;
    the length is uniform in ``lengths``.
    """

    _ALNUM = np.frombuffer(ALNUM.encode(), dtype=np.uint8)
    _ALPHA = np.frombuffer(ALPHABET.encode(), dtype=np.uint8)

    def __init__(self, seed: int, kind: str, lengths: tuple[int, int], pool_size: int = 0) -> None:
        if pool_size < 0:
            raise ValueError(f"pool_size must be >= 0, got {pool_size}")
        self.key = np.uint64(stable_key(seed, "names", kind))
        self.lo, self.hi = lengths
        self.pool_size = pool_size
        self._pool: list[str] | None = None

    def names(self, draws: Sequence[int]) -> list[str]:
        """The name of each draw."""
        if not draws:
            return []
        if not self.pool_size:
            return self._generate(draws)
        if self._pool is None:  # the whole pool at once (vectorized), on first use
            self._pool = self._generate(range(self.pool_size))
        idx = (np.array(draws, dtype=np.uint64) % np.uint64(self.pool_size)).tolist()
        return [self._pool[i] for i in idx]

    def _generate(self, idx: Sequence[int]) -> list[str]:
        if not idx:
            return []
        n = len(idx)
        base = np.asarray(idx, dtype=np.uint64) * np.uint64(3)
        words = np.stack([mix64(np.full(n, self.key, dtype=np.uint64), base + np.uint64(j))
                          for j in range(3)], axis=1)
        raw = words.view(np.uint8).reshape(n, 24)
        u16 = raw[:, 0:6].astype(np.uint32).reshape(n, 3, 2)
        u16 = u16[:, :, 0] | (u16[:, :, 1] << 8)
        span = self.hi - self.lo + 1
        lengths = self.lo + (u16[:, 0] % span)
        chars = self._ALPHA[raw[:, 6:6 + self.hi] & 63].copy()
        chars[:, 0] = self._ALNUM[u16[:, 1] % 62]
        chars[np.arange(n), lengths - 1] = self._ALNUM[u16[:, 2] % 62]
        text = chars.tobytes().decode("ascii")
        w = self.hi
        return [text[i * w: i * w + int(k)] for i, k in enumerate(lengths.tolist())]


# --------------------------------------------------------------------------- compiled tools

def norm_name(name: str) -> str:
    """A function name reduced to lowercase letters and digits (``Get_Weather`` = ``getweather``)."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _params(tool: dict[str, Any]) -> tuple[list[str], list[Any]]:
    params = tool.get("parameters")
    props = params.get("properties") if isinstance(params, dict) else None
    if not isinstance(props, dict):
        return [], []
    return list(props), list(props.values())


class Template:
    """A JSON text cut into literal pieces and slots: ``lits[0] + v[slots[0]] + lits[1] + ...``.

    A slot is ``0`` for the function name, ``i + 1`` for the name of parameter ``i`` and
    ``-(i + 1)`` for the JSON text of parameter ``i``'s spec.
    """

    __slots__ = ("lits", "slots", "_pick", "_size", "_format")

    def __init__(self, lits: Sequence[str], slots: Sequence[int]) -> None:
        self.lits, self.slots = tuple(lits), tuple(slots)
        self._size = 2 * len(self.slots) + 1
        picker = itemgetter(*self.slots) if self.slots else None
        self._pick = (lambda v: (picker(v),)) if len(self.slots) == 1 else picker
        self._format: str | None = None  # made on first fill (most templates are never filled)

    def pieces(self, names: Sequence[str]) -> list[str]:
        """``[lits[0], names[slots[0]], lits[1], ...]`` (name slots only)."""
        if self._pick is None:
            return list(self.lits)
        out: list[str] = [None] * self._size  # type: ignore[list-item]
        out[::2] = self.lits
        out[1::2] = self._pick(names)
        return out

    def fill(self, names: Sequence[str], specs: Sequence[str] | None = None) -> str:
        if specs is None:
            if self._pick is None:
                return self.lits[0]
            if self._format is None:  # "%s" between the literals: one C-level call fills every slot
                self._format = "%s".join(lit.replace("%", "%%") for lit in self.lits)
            return self._format % self._pick(names)
        lits, out = self.lits, [self.lits[0]]
        for k, slot in enumerate(self.slots):
            out.append(names[slot] if slot >= 0 else specs[-slot - 1])
            out.append(lits[k + 1])
        return "".join(out)


def _free_chars(text: str, n: int) -> list[str]:
    """``n`` private-use characters that do not occur in ``text`` (slot sentinels)."""
    chars = []
    for c in range(0xE000, 0xF900):
        if chr(c) not in text:
            chars.append(chr(c))
            if len(chars) == n:
                return chars
    raise ValueError("the text uses every private-use character; it cannot be templated")


def compile_template(tool: dict[str, Any], dump: Any, spec_texts: Sequence[str] | None = None,
                     source: str = "", dumped: str | None = None) -> tuple[Template, Template]:
    """Templates of ``dump(tool)`` with the names as slots: (names and spec slots, names only).

    ``spec_texts`` are the parameter specs as ``dump`` writes them (inlined in the second
    template); ``source`` is any text the sentinels must not collide with; ``dumped`` is
    ``dump(tool)`` when the caller has it already, or ``""`` when ``source`` holds every
    private-use character of it (see :func:`holds_its_characters`).
    """
    names, specs = _params(tool)
    open_, close, sopen, sclose = _free_chars(source + (dump(tool) if dumped is None else dumped), 4)
    marked = dict(tool)
    marked["name"] = f"{open_}0{close}"
    if names:
        params = dict(tool["parameters"])
        params["properties"] = {f"{open_}{i + 1}{close}": f"{sopen}{i}{sclose}" for i in range(len(names))}
        if isinstance(params.get("required"), list):
            index = {n: i for i, n in enumerate(names)}
            params["required"] = [f"{open_}{index[r] + 1}{close}" if r in index else r
                                  for r in params["required"]]
        marked["parameters"] = params
    # [lit, name slot, spec slot, lit, ...] in one C call: one of the two slot groups matched
    parts = re.split(f"{open_}(\\d+){close}|\"{sopen}(\\d+){sclose}\"", dump(marked))
    lits = parts[0::3]
    slots = [int(n) if n is not None else -int(s) - 1 for n, s in zip(parts[1::3], parts[2::3])]
    full = Template(lits, slots)
    if spec_texts is None:
        spec_texts = [dump(s) for s in specs]
    # inline the specs: merge them into the neighbouring literals
    ilits, islots, cur = [], [], [lits[0]]
    for k, slot in enumerate(slots):
        if slot >= 0:
            ilits.append("".join(cur))
            islots.append(slot)
            cur = [lits[k + 1]]
        else:
            cur.extend((spec_texts[-slot - 1], lits[k + 1]))
    ilits.append("".join(cur))
    return full, Template(tuple(ilits), tuple(islots))


def holds_its_characters(text: str) -> bool:
    """Does the JSON ``text`` hold, as they are, every non-ASCII character of what the tool's
    dumps write (``ensure_ascii=False``: non-ASCII characters are written as they are)? Yes
    unless it has a ``\\u`` escape. Then a character absent from ``text`` is absent from any
    dump of its value, even with the prompt's notes (``str`` of a value of it): sentinels can
    be chosen from ``text`` alone, with no dump made for it."""
    return "\\u" not in text


@dataclass(eq=False, slots=True)
class CompiledTool:
    """One tool, parsed and compiled once: what masking, irrelevance and rendering need."""

    text: str  # canonical compact JSON (the cache key)
    spec: dict[str, Any]
    name: str
    params: tuple[str, ...]
    props: tuple[Any, ...]
    norm_name: str
    signature: tuple[str, tuple[str, ...]]  # (description, sorted parameter names)
    canon: Template  # canonical JSON with name and spec slots
    canon_inline: Template  # canonical JSON with name slots only
    spec_texts: tuple[str, ...]  # canonical JSON of each parameter spec
    defaults: tuple[tuple[int, Any, str], ...]  # (param index, default, str(default)) masking may perturb
    digest: int  # 64-bit id of the text
    param_index: dict[str, int] = field(default_factory=dict)  # parameter name -> index
    extra: dict[str, Any] = field(default_factory=dict)  # per-renderer caches (prompts, tokens)

    @classmethod
    def build(cls, text: str, spec: dict[str, Any]) -> "CompiledTool":
        names, props = _params(spec)
        extra: dict[str, Any] = {}
        forms = _compiled_forms(text)
        if forms is not None:  # the same templates, cut from the text in C
            (full_lits, full_slots, lits, slots, spec_texts), extra[PROMPT_FORM] = forms
            canon, inline = Template(full_lits, full_slots), Template(lits, slots)
        else:
            spec_texts = tuple(dumps(p) for p in props)
            canon, inline = compile_template(spec, dumps, spec_texts, source=text,
                                             dumped="" if holds_its_characters(text) else None)
        desc = spec.get("description", "")
        defaults = tuple((i, p["default"], str(p["default"])) for i, p in enumerate(props)
                         if isinstance(p, dict) and _perturbable(p.get("default")))
        return cls(text=text, spec=spec, name=str(spec.get("name", "")), params=tuple(names),
                   props=tuple(props), norm_name=norm_name(str(spec.get("name", ""))),
                   signature=((desc if isinstance(desc, str) else "").strip().lower(),
                              tuple(sorted(names))),
                   canon=canon, canon_inline=inline, spec_texts=spec_texts, defaults=defaults,
                   digest=stable_key("tool", text), param_index={p: i for i, p in enumerate(names)}, extra=extra)


#: ``CompiledTool.extra`` key of the prompt form cut in C (:func:`_compiled_forms`), taken by
#: ``prompts._Shown`` when it is first made
PROMPT_FORM = "prompt_form"


def _compiled_forms(text: str) -> tuple | None:
    """The compiled extension's ``compile_tool`` of ``text``: what :func:`compile_template`
    makes of the tool (compact form) and of its prompt form (``prompts._Shown``), cut from the
    text in one walk instead of dumping marked copies (several times cheaper a tool). None:
    compiled paths off, or a case the extension leaves to Python -- among them any text that
    is not exactly what :func:`schema.dumps` writes of its parse (the templates are made from
    that dump, not from the text). In every case the templates are the ones the Python code
    (:func:`compile_template` here, ``prompts._Shown``) makes: tests/test_fastprep.py checks it."""
    if _fastprep is None or compiled_switched_off():
        return None
    return _fastprep.compile_tool(text)


def _perturbable(value: Any) -> bool:
    return value is not None and value != "" and not isinstance(value, (list, dict, bool))


class ToolCache:
    """Compiled tools by JSON text; :meth:`split` turns a row's ``tools`` string into them."""

    SEP = '},{"name":'

    def __init__(self, max_size: int = 200_000) -> None:
        self.max_size = max_size
        self._tools: dict[str, CompiledTool] = {}

    def __len__(self) -> int:
        return len(self._tools)

    def get(self, text: str, spec: dict[str, Any] | None = None) -> CompiledTool | None:
        """The compiled tool of ``text`` (None when ``text`` is not one JSON object)."""
        ct = self._tools.get(text)
        if ct is None:
            if spec is None:
                try:
                    spec = parse_json(text)
                except ValueError:
                    return None
            if not isinstance(spec, dict):
                return None
            ct = CompiledTool.build(text, spec)
            if len(self._tools) >= self.max_size:
                self._tools.clear()  # a cache only: dropping it changes speed, never output
            self._tools[text] = ct
        return ct

    def split(self, tools_text: str) -> list[CompiledTool]:
        """The compiled tools of a row's canonical ``tools`` JSON list, in order."""
        inner = tools_text[1:-1] if tools_text.startswith("[") and tools_text.endswith("]") else None
        if inner:
            pieces = inner.split(self.SEP)
            last = len(pieces) - 1
            out = []
            for i, p in enumerate(pieces):
                text = ('{"name":' + p if i else p) + ("}" if i < last else "")
                ct = self.get(text)
                if ct is None:
                    break
                out.append(ct)
            else:
                return out
        elif inner == "":
            return []
        tools = parse_json(tools_text)  # the fast cut failed: parse the whole list
        if not isinstance(tools, list):
            raise ValueError("tools is not a JSON list")
        return [self.get(dumps(t), t) or _not_object(t) for t in tools]


def _not_object(t: Any) -> CompiledTool:
    raise ValueError(f"a tool is a {type(t).__name__}, not an object")


# --------------------------------------------------------------------------- JSON writing

_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_INF = float("inf")
_SPACED = json.JSONEncoder(ensure_ascii=False).encode


_MEMO: dict[int, tuple[Any, str, str]] = {}  # id(list or dict) -> (it, compact, spaced)


def value_json(value: Any, compact: bool = True) -> str:
    """``json.dumps(value)`` (compact or with Python's default separators), fast for scalars;
    lists and dicts are memoized by identity (a row's values are serialized for every copy,
    and parsed values are never mutated; the memo keeps them alive, so ids stay unique)."""
    t = type(value)
    if t is str:
        return encode_basestring(value)
    if t is int:
        return int.__repr__(value)
    if t is bool:
        return "true" if value else "false"
    if value is None:
        return "null"
    if t is float and value == value and value not in (_INF, -_INF):
        return float.__repr__(value)
    if t is list or t is dict:
        hit = _MEMO.get(id(value))
        if hit is None or hit[0] is not value:
            if len(_MEMO) > 100_000:
                _MEMO.clear()
            hit = _MEMO[id(value)] = (value, _COMPACT(value), _SPACED(value))
        return hit[1] if compact else hit[2]
    return (_COMPACT if compact else _SPACED)(value)


def calls_json(calls: Sequence[tuple[str, Sequence[tuple[str, Any]]]], compact: bool = True) -> str:
    """Calls ``[(name, [(arg, value), ...]), ...]`` as the JSON list ``[{"name", "arguments"}]``."""
    if not calls:
        return "[]"
    if compact:
        return "[" + ",".join(
            '{"name":' + encode_basestring(n) + ',"arguments":{'
            + ",".join(encode_basestring(k) + ":" + value_json(v) for k, v in args) + "}}"
            for n, args in calls) + "]"
    return "[" + ", ".join(
        '{"name": ' + encode_basestring(n) + ', "arguments": {'
        + ", ".join(encode_basestring(k) + ": " + value_json(v, False) for k, v in args) + "}}"
        for n, args in calls) + "]"


# --------------------------------------------------------------------------- masking a row

@dataclass(slots=True)
class ToolView:
    """A tool as one output row shows it: its names (``[function, param 0, ...]``) and the
    specs that masking changed (perturbed defaults), by parameter index."""

    tool: CompiledTool
    names: list[str]
    overrides: dict[int, dict[str, Any]] | None = None

    def spec_texts(self) -> list[str]:
        texts = list(self.tool.spec_texts)
        for i, spec in (self.overrides or {}).items():
            texts[i] = dumps(spec)
        return texts

    def canonical(self) -> str:
        if self.overrides:
            return self.tool.canon.fill(self.names, self.spec_texts())
        return self.tool.canon_inline.fill(self.names)


@dataclass(slots=True)
class RowView:
    """One output row before serialization: tools in shown order, calls with shown names,
    and the messages (None: the input row's, unchanged)."""

    tools: list[ToolView]
    calls: list[tuple[str, list[tuple[str, Any]]]]
    messages: list[dict[str, str]] | None = None
    masked: bool = False

    def tools_json(self) -> str:
        return "[" + ",".join(t.canonical() for t in self.tools) + "]"

    def calls_json(self) -> str:
        return calls_json(self.calls)


def plain_view(tools: Sequence[CompiledTool], calls: list[dict[str, Any]]) -> RowView:
    """The view of an unmasked row."""
    return RowView([ToolView(t, [t.name, *t.params]) for t in tools],
                   [(c["name"], list(c["arguments"].items())) for c in calls])


def words_needed(tools: Sequence[CompiledTool]) -> int:
    """Stream words a row's mask uses: coin, shuffle keys, one per name."""
    return 1 + 2 * len(tools) + sum(len(t.params) for t in tools)


def dedup_by_name(tools: Sequence[CompiledTool]) -> list[CompiledTool]:
    seen: set[str] = set()
    out = []
    for t in tools:
        if t.name not in seen:
            seen.add(t.name)
            out.append(t)
    return out


class Masker:
    """Applies Hammer's masking to rows, given their stream words (see the module doc)."""

    def __init__(self, seed: int, p: float, fn_names: NameGenerator, param_names: NameGenerator) -> None:
        self.seed, self.p = seed, p
        self.fn_names, self.param_names = fn_names, param_names

    @classmethod
    def from_config(cls, seed: int, p: float, pool_size: int = 0) -> "Masker":
        return cls(seed, p, NameGenerator(seed, "function", FN_LENGTHS, pool_size),
                   NameGenerator(seed, "parameter", PARAM_LENGTHS, pool_size))

    def is_masked(self, words: Sequence[int]) -> bool:
        return unit_float(words[0]) < self.p

    @staticmethod
    def _split_draws(words: Sequence[int], tools: Sequence[CompiledTool]) -> tuple[list[int], list[int]]:
        """The name draws of a row: one per function name, one per parameter (flat), in the
        stream order: tool by tool in declaration order, function name then parameters."""
        n = len(tools)
        fn, params, pos = [], [], 1 + n
        for t in tools:
            fn.append(words[pos])
            params.extend(words[pos + 1: pos + 1 + len(t.params)])
            pos += 1 + len(t.params)
        return fn, params

    def draw_names(self, rows: Sequence[tuple[Sequence[int], Sequence[CompiledTool]]]
                   ) -> list[tuple[list[str], list[str]]]:
        """(function names, parameter names) of many rows at once (vectorized), before the
        within-row uniqueness fix-up done by :meth:`mask`."""
        fn_all: list[int] = []
        p_all: list[int] = []
        sizes = []
        for words, tools in rows:
            pos = 1 + len(tools)
            a, b = len(fn_all), len(p_all)
            for t in tools:
                k = len(t.params)
                fn_all.append(words[pos])
                if k:
                    p_all.extend(words[pos + 1: pos + 1 + k])
                pos += 1 + k
            sizes.append((a, len(fn_all), b, len(p_all)))
        fn_names, p_names = self.fn_names.names(fn_all), self.param_names.names(p_all)
        return [(fn_names[a:b], p_names[c:d]) for a, b, c, d in sizes]

    def mask(self, key: int, words: Sequence[int], tools: Sequence[CompiledTool],
             calls: list[dict[str, Any]], messages: list[dict[str, str]],
             names: tuple[list[str], list[str]] | None = None) -> RowView:
        """The masked view of a row (``tools`` de-duplicated; ``words`` from :func:`streams`
        with :func:`words_needed` words for them; ``names`` from :meth:`draw_names`, else
        drawn here)."""
        n = len(tools)
        order = sorted(range(n), key=words[1:1 + n].__getitem__)
        fn_names, p_names = names if names is not None else self.draw_names([(words, tools)])[0]
        fn = self._unique(self.fn_names, list(fn_names), key, slot0=0)
        views, by_name = [], {}
        slot = pos = 0
        for i, t in enumerate(tools):
            k = len(t.params)
            pn = self._unique(self.param_names, p_names[pos:pos + k], key, slot0=n + slot) if k else []
            slot += k
            pos += k
            view = ToolView(t, [fn[i], *pn])
            views.append(view)
            by_name[t.name] = (i, view)

        out_calls = []
        for c in calls:
            i, view = by_name[c["name"]]
            index = view.tool.param_index
            out_calls.append((view.names[0], [(view.names[index[a] + 1], v)
                                              for a, v in c["arguments"].items()]))
        history = None
        if len(messages) > 1:  # a conversation: earlier call turns use the masked names too
            history = rename_history(messages, {
                name: (view.names[0], {a: view.names[k + 1] for a, k in view.tool.param_index.items()})
                for name, (_, view) in by_name.items()})
        new_messages = self._perturb_defaults(key, views, by_name, calls, out_calls, history or messages)
        return RowView([views[i] for i in order], out_calls, new_messages or history, masked=True)

    @staticmethod
    def _unique(gen: NameGenerator, names: list[str], key: int, slot0: int) -> list[str]:
        if len(set(names)) == len(names):
            return names
        seen: set[str] = set()
        for k, name in enumerate(names):  # rare: redraw duplicates from reserved counters
            attempt = 0
            while name in seen:
                name = gen.names([mix64_scalar(key, _REDRAW_BASE + 4096 * (slot0 + k) + attempt)])[0]
                attempt += 1
            names[k] = name
            seen.add(name)
        return names

    def _perturb_defaults(self, key: int, views: list[ToolView], by_name: dict[str, tuple[int, ToolView]],
                          calls: list[dict[str, Any]], out_calls: list, messages: list[dict[str, str]]
                          ) -> list[dict[str, str]] | None:
        """Perturb the defaults that gold arguments use; returns the new messages, if changed."""
        new_messages = None
        done: dict[tuple[int, int], Any] = {}  # (tool, param) -> the perturbed value
        for ci, c in enumerate(calls):
            i, view = by_name[c["name"]]
            t = view.tool
            if not t.defaults:
                continue
            args = c["arguments"]
            for pi, default, old in t.defaults:
                arg = args.get(t.params[pi], _MISSING)
                if arg is _MISSING or str(arg) != old:
                    continue
                value = done.get((i, pi), _MISSING)
                if value is _MISSING:
                    # perturb the value as the gold argument types it (so the call keeps its
                    # declared type); the spec's default keeps the default's own type
                    value = done[(i, pi)] = perturb(arg, lambda k, i=i, pi=pi: mix64_scalar(
                        key, _DEFAULTS_BASE + 4096 * i + 8 * pi + k))
                    spec = dict(t.props[pi])
                    spec["default"] = str(value) if isinstance(default, str) else value
                    if isinstance(spec.get("description"), str):
                        spec["description"] = replace_word(spec["description"], old, str(value))
                    view.overrides = {**(view.overrides or {}), pi: spec}
                    if new_messages is None:
                        new_messages = [dict(m) for m in messages]
                    for m in new_messages:
                        if m.get("role") == "user":
                            m["content"] = replace_word(m["content"], old, str(value))
                elif type(value) is not type(arg):  # another call passing the default differently
                    value = str(value) if isinstance(arg, str) else arg
                shown = view.names[pi + 1]
                name, shown_args = out_calls[ci]
                out_calls[ci] = (name, [(a, value if a == shown else v) for a, v in shown_args])
        return new_messages


def rename_history(messages: Sequence[dict[str, str]], renames: dict[str, tuple[str, dict[str, str]]]
                   ) -> list[dict[str, str]] | None:
    """The conversation with renamed functions inside its earlier assistant call turns (the
    canonical JSON list of calls, see :mod:`hammer_core.schema`), so that a multi-turn row
    stays consistent with its renamed tools; ``renames`` maps a function name to (its new name,
    {argument: new argument name}). None if no turn changed. Calls of functions not in
    ``renames``, and arguments it does not map, keep their names."""
    out = None
    for k, m in enumerate(messages):
        text = m.get("content", "")
        if m.get("role") != "assistant" or not text.startswith("[{"):
            continue
        try:
            calls = parse_json(text)
            check_depth(calls, "calls")
        except (ValueError, RecursionError, RowError):  # not JSON, or nested too deep for calls
            continue
        if not isinstance(calls, list) or not all(isinstance(c, dict) and isinstance(c.get("name"), str)
                                                  and isinstance(c.get("arguments"), dict) for c in calls):
            continue
        renamed, changed = [], False
        for c in calls:
            hit = renames.get(c["name"])
            if hit is None:
                renamed.append(c)
                continue
            new_name, args = hit
            renamed.append({**c, "name": new_name,
                            "arguments": {args.get(a, a): v for a, v in c["arguments"].items()}})
            changed = True
        if changed:
            if out is None:
                out = [dict(x) for x in messages]
            out[k]["content"] = dumps(renamed)
    return out


def perturb(value: Any, word: Any) -> Any:
    """Hammer's perturbation of a default: ints +1..4, floats +U(0,1), else 5 random chars.
    ``word(k)`` is the k-th random 64-bit word reserved for this default. (Applied to the gold
    argument's value, which equals the default: ``10`` for a default ``"10"`` stays an int.)"""
    if isinstance(value, int):
        return value + 1 + word(0) % 4
    if isinstance(value, float):
        return value + unit_float(word(0))
    w = word(0)
    return "".join(ALPHABET[(w >> (6 * k)) & 63] for k in range(5))


def replace_word(text: str, old: str, new: str) -> str:
    """Replace whole-word ``old`` (as is, capitalized, lower, upper) by the same form of ``new``.
    A number is whole only with its decimals: ``2`` is not replaced inside ``2.5`` (nor, once an
    earlier default became ``2.57``, inside that)."""
    if not old or old not in text and old.lower() not in text.lower():
        return text
    for o, n in ((old, new), (old.capitalize(), new.capitalize()), (old.lower(), new.lower()),
                 (old.upper(), new.upper())):
        if o and o in text:  # (a form not in the text: nothing to replace, no pattern to run)
            text = re.sub(rf"(?<![\w.]){re.escape(o)}(?!\w|\.\d)", lambda _m, n=n: n, text)
    return text


# --------------------------------------------------------------------------- row-level API

def output_identity(row_id: str, variant: str, parent_id: str | None, copy: int,
                    masked: bool) -> tuple[str, str, str | None]:
    """(id, variant, parent_id) of copy ``copy`` of a row: masked rows get ``~m<copy>``,
    unmasked copies after the first ``~c<copy>``; the parent is the ingested row."""
    root = parent_id or row_id
    if masked:
        return f"{row_id}~m{copy}", f"{variant}+{VARIANT}", root
    if copy == 0:
        return row_id, variant, parent_id
    return f"{row_id}~c{copy}", variant, root


def mask_row_view(row: dict[str, Any], masker: Masker, copy: int = 0,
                  cache: ToolCache | None = None) -> RowView:
    """The view of copy ``copy`` of one canonical row (masked or not, as its coin says)."""
    cache = cache or ToolCache()
    tools = dedup_by_name(cache.split(row["tools"]))
    calls = parse_json(row["calls"])
    key = int(copy_keys(row_keys(masker.seed, [row["id"]]), copy)[0])
    words = streams(np.array([key], dtype=np.uint64), np.array([words_needed(tools)]))[0]
    if masker.is_masked(words):
        return masker.mask(key, words, tools, calls, list(row["messages"]))
    return plain_view(tools, calls)


def apply_view(row: dict[str, Any], view: RowView, copy: int = 0) -> dict[str, Any]:
    """The canonical output row of ``view`` (ids and lineage per :func:`output_identity`)."""
    rid, variant, parent = output_identity(row["id"], row["variant"], row.get("parent_id"), copy,
                                           view.masked)
    out = {**row, "id": rid, "variant": variant, "parent_id": parent}
    if view.masked:
        out["tools"] = view.tools_json()
        out["calls"] = view.calls_json()
        if view.messages is not None:
            out["messages"] = view.messages
    return out


def mask_row(row: dict[str, Any], seed: int = 0, copy: int = 0, *, p: float = 1.0,
             pool_size: int = 0) -> dict[str, Any]:
    """Copy ``copy`` of ``row`` under Hammer's masking (``p = 1``: always masked)."""
    return apply_view(row, mask_row_view(row, Masker.from_config(seed, p, pool_size), copy), copy)


def mask_rows(rows: list[dict[str, Any]], p: float, seed: int, copies: int = 1,
              pool_size: int = 0) -> list[dict[str, Any]]:
    """Hammer's mix for a small list of rows: ``copies`` passes, each row masked with
    probability ``p`` (copy-major order). The prepare stage runs the same code in blocks."""
    masker, cache = Masker.from_config(seed, p, pool_size), ToolCache()
    return [apply_view(r, mask_row_view(r, masker, k, cache), k) for k in range(copies) for r in rows]


__all__ = ["ALPHABET", "ALNUM", "FN_LENGTHS", "PARAM_LENGTHS", "VARIANT", "CompiledTool", "Masker",
           "NameGenerator", "RowView", "Template", "ToolCache", "ToolView", "apply_view", "calls_json",
           "copy_keys", "mask_row", "mask_row_view", "mask_rows", "mix64", "mix64_scalar", "norm_name",
           "output_identity", "parse_json", "perturb", "plain_view", "rename_history", "replace_word", "row_keys",
           "stable_key", "streams", "unit_float", "value_json", "words_needed"]
