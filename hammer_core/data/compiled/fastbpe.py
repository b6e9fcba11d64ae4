"""Exact byte-level BPE encoding of short ASCII strings, compiled (``hammer_core.data.compiled._fastbpe``).

A drop-in for ``backend_tokenizer.encode_batch_fast(texts, add_special_tokens=False)`` on hot
paths that tokenize many short strings (a masked name chunk like `` "aB3_x.Yz",`` costs HF
~8 us; this costs well under 1 us). Exactness is the contract: for every text it handles, the
ids equal ``backend_tokenizer.encode(text, add_special_tokens=False).ids``. Texts it does not
handle get a count of -1 and the caller tokenizes them with HF:

- any non-ASCII character;
- the content of any added token (HF splits those out before the model sees the text);
- a byte whose byte-level symbol is missing from the vocab (HF would drop it or emit unk).

Supported tokenizers (anything else: :meth:`ByteLevelBPE.from_tokenizer` returns None):

- model: BPE, no dropout, no continuing-subword prefix / end-of-word suffix, no byte fallback;
  ``ignore_merges`` honoured (Llama-3);
- normalizer: none, NFC, or a Sequence of NFC only (the identity on ASCII);
- pre-tokenizer: ByteLevel(add_prefix_space=False, use_regex=True) (GPT-2's regex), or
  Sequence[Split(Regex(P), "isolated", invert=False), ByteLevel(add_prefix_space=False,
  use_regex=False)] with P exactly Qwen2's or Llama-3's pattern;
- no truncation or padding configured on the backend (they would change ``encode``'s ids).

The tables are a snapshot of the tokenizer at construction: build a new instance after adding
tokens or otherwise changing it.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

try:
    from hammer_core.data.compiled import _fastbpe
    _IMPORT_ERROR: Exception | None = None
except ImportError as err:  # not built: callers keep using HF
    _fastbpe = None
    _IMPORT_ERROR = err

GPT2 = 0
QWEN2 = 1
LLAMA3 = 2

QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_SPLIT_PATTERNS = {QWEN2_PATTERN: QWEN2, LLAMA3_PATTERN: LLAMA3}

DEFAULT_HEAP_THRESHOLD = 64  # longer pre-tokens use HF's heap-based merge loop (same result)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (what ByteLevel maps every byte through)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


_B2U = bytes_to_unicode()
_U2B = {c: b for b, c in _B2U.items()}


def _backend_json(tok: Any) -> dict:
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        backend = tok
    return json.loads(backend.to_str())


def _is_nfc_only(norm: Any) -> bool:
    if norm is None:
        return True
    if not isinstance(norm, dict):
        return False
    if norm.get("type") == "NFC":
        return True
    if norm.get("type") == "Sequence":
        return all(isinstance(n, dict) and n.get("type") == "NFC" for n in norm.get("normalizers") or [])
    return False


def _byte_level_ok(pre: Any, use_regex: bool) -> bool:
    return (isinstance(pre, dict) and pre.get("type") == "ByteLevel"
            and pre.get("add_prefix_space") is False
            and bool(pre.get("use_regex", True)) is use_regex)


def _regex_kind(pre: Any) -> int | None:
    if _byte_level_ok(pre, True):
        return GPT2
    if not isinstance(pre, dict) or pre.get("type") != "Sequence":
        return None
    parts = pre.get("pretokenizers")
    if not isinstance(parts, list) or len(parts) != 2:
        return None
    split, level = parts
    if not (isinstance(split, dict) and split.get("type") == "Split"
            and split.get("behavior") == "Isolated" and split.get("invert") is False):
        return None
    pattern = split.get("pattern")
    if not isinstance(pattern, dict) or set(pattern) != {"Regex"}:
        return None
    kind = _SPLIT_PATTERNS.get(pattern["Regex"])
    if kind is None or not _byte_level_ok(level, False):
        return None
    return kind


def _merge_pairs(merges: list) -> list[tuple[str, str]] | None:
    pairs = []
    for m in merges:
        if isinstance(m, str):
            parts = m.split(" ")
            if len(parts) != 2:
                return None
            pairs.append((parts[0], parts[1]))
        elif isinstance(m, (list, tuple)) and len(m) == 2 and all(isinstance(x, str) for x in m):
            pairs.append((m[0], m[1]))
        else:
            return None
    return pairs


class ByteLevelBPE:
    """Compiled byte-level BPE encoder for one tokenizer (see the module docstring)."""

    def __init__(self, encoder: Any, kind: int, ignore_merges: bool) -> None:
        self._enc = encoder
        self.kind = kind
        self.ignore_merges = ignore_merges

    @classmethod
    def from_tokenizer(cls, tok: Any, *, heap_threshold: int = DEFAULT_HEAP_THRESHOLD) -> "ByteLevelBPE | None":
        """tok: a transformers PreTrainedTokenizerFast, or a tokenizers.Tokenizer. Reads
        json.loads(backend.to_str()) and returns None (with no exception) when the tokenizer
        is not supported or the extension is not importable. ``heap_threshold`` (tests only):
        pre-tokens longer than this go through the heap-based merge loop."""
        if _fastbpe is None:
            return None
        try:
            spec = cls._spec(_backend_json(tok))
            if spec is None:
                return None
            byte_ids, merges, words, added, kind, ignore_merges = spec
            enc = _fastbpe.Encoder(byte_ids, merges, words, added, kind, ignore_merges, int(heap_threshold))
        except Exception:  # noqa: BLE001 -- anything odd in the tokenizer: not supported
            return None
        return cls(enc, kind, ignore_merges)

    @staticmethod
    def _spec(d: dict) -> tuple | None:
        if d.get("truncation") is not None or d.get("padding") is not None:
            return None
        if not _is_nfc_only(d.get("normalizer")):
            return None
        kind = _regex_kind(d.get("pre_tokenizer"))
        if kind is None:
            return None
        m = d.get("model") or {}
        if m.get("type") != "BPE":
            return None
        if m.get("dropout") not in (None, 0, 0.0):
            return None
        if m.get("continuing_subword_prefix") not in (None, "") or m.get("end_of_word_suffix") not in (None, ""):
            return None
        if m.get("byte_fallback"):
            return None
        ignore_merges = bool(m.get("ignore_merges", False))
        vocab = m.get("vocab")
        if not isinstance(vocab, dict):
            return None
        ids = list(vocab.values())
        if not all(isinstance(i, int) and 0 <= i < 2**31 for i in ids) or len(set(ids)) != len(ids):
            return None  # ids must be distinct int32 (merge bookkeeping relies on it)
        pairs = _merge_pairs(m.get("merges") or [])
        if pairs is None:
            return None
        table: dict[tuple[int, int], tuple[int, int]] = {}
        for rank, (a, b) in enumerate(pairs):
            ia, ib, inew = vocab.get(a), vocab.get(b), vocab.get(a + b)
            if ia is None or ib is None or inew is None:
                return None  # HF refuses to load such a model
            table[(ia, ib)] = (rank, inew)  # a repeated pair: the last one wins, as in HF
        merges = np.array([(a, b, r, n) for (a, b), (r, n) in table.items()], dtype=np.int32).reshape(-1, 4)
        byte_ids = np.array([vocab.get(_B2U[b], -1) for b in range(128)], dtype=np.int32)
        words = None
        if ignore_merges:
            words = []
            for token, i in vocab.items():
                raw = [_U2B.get(ch, 256) for ch in token]
                if raw and all(b < 0x80 for b in raw):
                    words.append((bytes(raw), i))
        added = []
        for t in d.get("added_tokens") or []:
            content = t.get("content")
            if not isinstance(content, str) or not content:
                return None
            if content.isascii():
                added.append(content.encode("ascii"))
        return byte_ids.tobytes(), merges.tobytes(), words, added, kind, ignore_merges

    def c_api(self) -> tuple[Any, Any]:
        """(encoder object, capsule) for compiled callers (``hammer_core.data.compiled._fastprep``'s
        ``Kernel.set_bpe``): the same encoding, called from C without Python objects."""
        return self._enc, _fastbpe._C_API

    def encode_chunks(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(ids int32 -- the ids of all handled texts one after the other, in order;
            counts int32 -- per text, its number of ids, or -1 when this text is not handled
            (the caller tokenizes those with HF)). Both arrays are read-only views."""
        ids, counts = self._enc.encode(texts)
        return np.frombuffer(ids, dtype=np.int32), np.frombuffer(counts, dtype=np.int32)

    def pretokenize(self, text: str) -> list[str] | None:
        """The pre-tokens of an ASCII text as this encoder splits it (None if not ASCII)."""
        return self._enc.pretokenize(text)
