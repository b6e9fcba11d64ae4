"""The compiled byte-level BPE encoder (hammer_core.data.compiled._fastbpe) against its oracle, Hugging Face
`tokenizers`: for every text it handles, the ids must equal
``backend.encode(text, add_special_tokens=False).ids``; everything else must be refused.

Three real tokenizers: the project's tiny one (GPT-2 ByteLevel regex), and a Qwen2-style and a
Llama-3-style one (Split regex + ByteLevel, NFC, special tokens; the Llama-3 one with
``ignore_merges``) trained here on a small synthetic corpus."""

from __future__ import annotations

import json
import random
import string

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from hammer_core.data.compiled import fastbpe
from hammer_core.data.compiled.fastbpe import LLAMA3_PATTERN, QWEN2_PATTERN, ByteLevelBPE

pytestmark = pytest.mark.skipif(fastbpe._fastbpe is None, reason="the C extension is not built")

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
U2B = {c: b for b, c in fastbpe.bytes_to_unicode().items()}

# Pieces that stress the pre-tokenizer regexes: letter/digit/punctuation runs, contractions in
# both cases, every ASCII whitespace, runs of them, CR/LF combinations, control characters.
PIECES = (list(string.ascii_letters[::3]) + list("0123456789") + list("_.'\"{}[]:,()-+/\\<>|!?#@$%^&*=~`;")
          + ["'s", "'S", "'t", "'T", "'re", "'RE", "'Ve", "'m", "'ll", "'LL", "'d", "'D", "n't", "it's", "we'Re"]
          + ["get", "Weather", "city", "id", "XML", "http", "zzyzx", "12", "345", "6789", "3.14", "_x", ".Yz"]
          + [" ", " ", " ", "  ", "   ", "    ", "\t", "\t\t", "\n", "\n\n", "\r", "\r\n", " \n", "\n ", "\x0b",
             "\x0c", "\x00", "\x01", "\x1c", "\x1f", "\x7f", " '", " \"", "<|", "|>", "im_end", "foo", "BAR"])
NAME_ALPHABET = string.ascii_letters + string.digits + "_."


def random_text(rng: random.Random, max_len: int = 60) -> str:
    text = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 25)))
    return text[:rng.randint(0, max_len)]


def random_name(rng: random.Random) -> str:
    return "".join(rng.choice(NAME_ALPHABET) for _ in range(rng.randint(4, 15)))


def name_chunks(rng: random.Random, n: int) -> list[str]:
    out = []
    for i in range(n):
        name = random_name(rng)
        if i % 3 == 0:
            desc = " ".join(random_name(rng) for _ in range(rng.randint(0, 6)))
            out.append(f' "{name}": {{"type": "string", "description": "{desc}"}}')
        else:
            out.append(f' "{name}",')
    return out


def stress_texts(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    texts = [random_text(rng) for _ in range(n)] + name_chunks(rng, n // 4)
    texts += ["", " ", "a", "'", "'s", "\n", "\r\n", "  ", " \t ", "x  ", "x \n", "12345678", " 1234567",
              "<|im_end|>", "a<|im_end|>b", "<|im_end", "café", "naïve 's", "fooBAR", "foo BAR"]
    return texts


# --------------------------------------------------------------------------- tokenizers


def corpus(seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    words = ("the weather in Paris is nice don't it's WE'RE they'll I'M you've she'd get_weather "
             "city units metric Celsius function arguments name type string description integer "
             "number boolean required properties object array items default value return result "
             "search query limit offset page user id XMLHttpRequest getElementById snake_case").split()
    lines = []
    for _ in range(400):
        kind = rng.randrange(4)
        if kind == 0:
            lines.append(" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) + rng.choice([".", "?", "!"]))
        elif kind == 1:
            name = rng.choice(words)
            lines.append(json.dumps({"name": name, "arguments": {rng.choice(words): rng.randint(0, 99999),
                                                                 rng.choice(words): rng.choice(words)}}))
        elif kind == 2:
            lines.append(rng.choice(["\t", "    ", "  "]) + f"return {rng.choice(words)}({rng.randint(0, 999)})"
                         + rng.choice(["\n", "\r\n", "\n\n", " \n"]))
        else:
            lines.append(f' "{random_name(rng)}": {{"type": "string", "description": "{rng.choice(words)}"}},')
    return lines


def train_split_tokenizer(pattern: str, ignore_merges: bool) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer=trainer)
    d = json.loads(tok.to_str())
    if ignore_merges:
        d["model"]["ignore_merges"] = True
        # words only reachable by ignore_merges (no merge builds them)
        vocab = d["model"]["vocab"]
        nxt = max(vocab.values()) + 1
        for w in ["zzyzx", "Ġzzyzx", "Weather", "ĠWeather", "345", "678", "'RE", "Ġ\"", "ĠĠĠ", "ĉĉ"]:
            if w not in vocab:
                vocab[w] = nxt
                nxt += 1
    tok = Tokenizer.from_str(json.dumps(d))
    tok.add_tokens([AddedToken("fooBAR", special=False, normalized=True)])
    return tok


@pytest.fixture(scope="module")
def tiny():
    from hammer_core.model.tokenizer import load_tiny_tokenizer
    return load_tiny_tokenizer()


@pytest.fixture(scope="module")
def qwen2():
    return train_split_tokenizer(QWEN2_PATTERN, ignore_merges=False)


@pytest.fixture(scope="module")
def llama3():
    return train_split_tokenizer(LLAMA3_PATTERN, ignore_merges=True)


_ENCODERS: dict = {}


def encoder(name: str, request, heap_threshold: int = fastbpe.DEFAULT_HEAP_THRESHOLD) -> ByteLevelBPE:
    """One encoder per (tokenizer, threshold) for the whole module."""
    key = (name, heap_threshold)
    if key not in _ENCODERS:
        _ENCODERS[key] = ByteLevelBPE.from_tokenizer(request.getfixturevalue(name), heap_threshold=heap_threshold)
    return _ENCODERS[key]


def backend(tok):
    return getattr(tok, "backend_tokenizer", tok)


def hf_ids(tok, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in backend(tok).encode_batch(texts, add_special_tokens=False)]


def added_contents(tok) -> list[str]:
    key = id(backend(tok))
    if key not in _ADDED:
        _ADDED[key] = (tok, [t["content"] for t in json.loads(backend(tok).to_str())["added_tokens"]])
    return _ADDED[key][1]


_ADDED: dict = {}  # id(backend) -> (tokenizer kept alive, added contents)


def check_against_hf(tok, enc: ByteLevelBPE, texts: list[str]) -> int:
    """Asserts exactness and the refusal rule; returns the number of handled texts."""
    ids, counts = enc.encode_chunks(texts)
    assert ids.dtype == np.int32 and counts.dtype == np.int32 and len(counts) == len(texts)
    assert int(counts[counts > 0].sum()) == len(ids)
    ref = hf_ids(tok, texts)
    added = added_contents(tok)
    pos = handled = 0
    for text, count, want in zip(texts, counts.tolist(), ref):
        should = text.isascii() and not any(a in text for a in added)
        assert (count >= 0) == should, (text, count)
        if count < 0:
            continue
        handled += 1
        got = ids[pos:pos + count].tolist()
        pos += count
        assert got == want, (text, got, want, enc.pretokenize(text))
    assert pos == len(ids)
    return handled


# --------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("name", ["tiny", "qwen2", "llama3"])
def test_supported_and_kind(name, request):
    tok = request.getfixturevalue(name)
    enc = ByteLevelBPE.from_tokenizer(tok)
    assert enc is not None
    assert enc.kind == {"tiny": fastbpe.GPT2, "qwen2": fastbpe.QWEN2, "llama3": fastbpe.LLAMA3}[name]
    assert enc.ignore_merges == (name == "llama3")


@pytest.mark.parametrize("name", ["tiny", "qwen2", "llama3"])
def test_pretokens_match_hf(name, request):
    tok = request.getfixturevalue(name)
    enc = ByteLevelBPE.from_tokenizer(tok)
    pre = backend(tok).pre_tokenizer
    for text in stress_texts(seed=7, n=3000):
        if not text.isascii():
            continue
        want = ["".join(chr(U2B[c]) for c in piece) for piece, _ in pre.pre_tokenize_str(text)]
        assert enc.pretokenize(text) == want, text


@pytest.mark.parametrize("name", ["tiny", "qwen2", "llama3"])
@pytest.mark.parametrize("heap_threshold", [fastbpe.DEFAULT_HEAP_THRESHOLD, 0])
def test_random_texts_match_hf(name, heap_threshold, request):
    tok = request.getfixturevalue(name)
    enc = ByteLevelBPE.from_tokenizer(tok, heap_threshold=heap_threshold)
    texts = stress_texts(seed={"tiny": 1, "qwen2": 2, "llama3": 3}[name] + heap_threshold, n=12000)
    handled = check_against_hf(tok, enc, texts)
    assert handled > 0.8 * len(texts)


@pytest.mark.parametrize("name", ["tiny", "qwen2", "llama3"])
def test_name_chunks_all_handled(name, request):
    tok = request.getfixturevalue(name)
    enc = ByteLevelBPE.from_tokenizer(tok)
    texts = name_chunks(random.Random(3), 6000)
    assert check_against_hf(tok, enc, texts) == len(texts)


@pytest.mark.parametrize("name", ["tiny", "qwen2", "llama3"])
def test_long_pretokens(name, request):
    """Pre-tokens far longer than the quadratic path's limit go through the heap path."""
    tok = request.getfixturevalue(name)
    enc = ByteLevelBPE.from_tokenizer(tok)
    rng = random.Random(5)
    texts = [" " * 300, "x" + " " * 1000 + "y", "\n" * 500, " \r\n" * 200 + "a", "ab" * 400, " " + "the" * 300,
             "1" * 1000, "," * 700 + "\n\n", "\t" * 129 + "b", "'s" * 200,
             "".join(rng.choice("ab") for _ in range(3000)), "".join(rng.choice(" \t\n") for _ in range(2000)),
             " ".join(random_name(rng) for _ in range(400)), "".join(rng.choice(PIECES) for _ in range(2000))]
    texts += [rng.choice(string.ascii_lowercase) * k for k in (63, 64, 65, 255, 256, 257)]
    assert check_against_hf(tok, enc, texts) == len(texts)


@pytest.mark.parametrize("name", ["tiny", "qwen2", "llama3"])
@settings(max_examples=250, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(text=st.lists(st.sampled_from(PIECES), max_size=25).map("".join))
def test_property_single_text(name, text, request):
    tok = request.getfixturevalue(name)
    enc = encoder(name, request)
    ids, counts = enc.encode_chunks([text])
    if text.isascii() and not any(a in text for a in added_contents(tok)):
        assert counts.tolist() == [len(ids)]
        assert ids.tolist() == backend(tok).encode(text, add_special_tokens=False).ids
    else:
        assert counts.tolist() == [-1] and len(ids) == 0


def test_ignore_merges_is_exercised(llama3):
    """The Llama-3 tokenizer's ignore_merges changes some outputs, and we follow it."""
    d = json.loads(llama3.to_str())
    d["model"]["ignore_merges"] = False
    plain = Tokenizer.from_str(json.dumps(d))
    texts = stress_texts(seed=11, n=4000) + ["zzyzx", " zzyzx", "WE'RE", " Weather", "\t\t", '"zzyzx",']
    differ = [t for t in texts if t.isascii()
              and llama3.encode(t, add_special_tokens=False).ids != plain.encode(t, add_special_tokens=False).ids]
    assert len(differ) > 10
    check_against_hf(llama3, ByteLevelBPE.from_tokenizer(llama3), differ)
    check_against_hf(plain, ByteLevelBPE.from_tokenizer(plain), differ)


def test_legacy_string_merges(qwen2):
    """merges written as "a b" strings (older tokenizer.json) read the same as [a, b] pairs."""
    d = json.loads(qwen2.to_str())
    assert isinstance(d["model"]["merges"][0], list)
    d["model"]["merges"] = [" ".join(m) for m in d["model"]["merges"]]
    legacy = Tokenizer.from_str(json.dumps(d))
    check_against_hf(legacy, ByteLevelBPE.from_tokenizer(legacy), stress_texts(seed=13, n=2000))


def test_transformers_and_tokenizers_objects(tiny):
    a = ByteLevelBPE.from_tokenizer(tiny)
    b = ByteLevelBPE.from_tokenizer(tiny.backend_tokenizer)
    texts = name_chunks(random.Random(9), 200)
    for x, y in zip(a.encode_chunks(texts), b.encode_chunks(texts)):
        assert np.array_equal(x, y)


# --------------------------------------------------------------------------- refusals


def test_refused_texts(tiny, qwen2):
    enc = ByteLevelBPE.from_tokenizer(tiny)
    texts = ["", ' "abc",', "café", "a<|im_end|>", "<|im_end|>", "<|endoftext|> x", "x\u2028y", "\udcff",
             "<|im_end", ""]
    ids, counts = enc.encode_chunks(texts)
    assert counts.tolist()[:5] == [0, len(hf_ids(tiny, [' "abc",'])[0]), -1, -1, -1]
    assert counts.tolist()[5:8] == [-1, -1, -1]
    assert counts[8] > 0 and counts[9] == 0
    assert ids.tolist() == hf_ids(tiny, [' "abc",'])[0] + hf_ids(tiny, ["<|im_end"])[0]
    # a non-special added token is split out by HF too: refused
    q = ByteLevelBPE.from_tokenizer(qwen2)
    assert q.encode_chunks(["xfooBARy", "foo BAR"])[1].tolist()[0] == -1
    ids, counts = ByteLevelBPE.from_tokenizer(tiny).encode_chunks([])
    assert len(ids) == 0 and len(counts) == 0
    with pytest.raises(TypeError):
        enc.encode_chunks(["ok", b"bytes"])


def test_missing_byte_symbol_refused():
    """A byte whose symbol is not in the vocab: HF silently drops it, we refuse the text."""
    vocab = {c: i for i, c in enumerate(string.ascii_lowercase + "Ġ")}
    merges = [("a", "b"), ("Ġ", "ab"), ("c", "d")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    enc = ByteLevelBPE.from_tokenizer(tok)
    assert enc is not None
    texts = ["ab cab", "abcd ab", "ab!", "AB", "ab  cd"]
    ids, counts = enc.encode_chunks(texts)
    assert counts.tolist()[2:4] == [-1, -1]
    check_against_hf(tok, enc, [t for t, c in zip(texts, counts) if c >= 0])
    assert tok.encode("ab!").ids == tok.encode("ab").ids  # what we avoid: HF dropped the '!'


def _variant(tok, edit) -> Tokenizer:
    d = json.loads(backend(tok).to_str())
    edit(d)
    return Tokenizer.from_str(json.dumps(d))


def test_unsupported_tokenizers(tiny, qwen2):
    wp = Tokenizer(models.WordPiece(vocab={"[UNK]": 0, "a": 1, "##b": 2}, unk_token="[UNK]"))
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    assert ByteLevelBPE.from_tokenizer(wp) is None

    meta = Tokenizer(models.BPE(vocab={"▁": 0, "a": 1, "▁a": 2}, merges=[("▁", "a")]))
    meta.pre_tokenizer = pre_tokenizers.Metaspace()
    assert ByteLevelBPE.from_tokenizer(meta) is None

    def prefix_space(d):
        d["pre_tokenizer"]["add_prefix_space"] = True

    def qwen_prefix_space(d):
        d["pre_tokenizer"]["pretokenizers"][1]["add_prefix_space"] = True

    def other_pattern(d):
        d["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = QWEN2_PATTERN.replace(r"\p{N}", r"\p{N}{1,2}")

    def contiguous(d):
        d["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "MergedWithPrevious"

    def lowercase(d):
        d["normalizer"] = {"type": "Lowercase"}

    def byte_fallback(d):
        d["model"]["byte_fallback"] = True

    def dropout(d):
        d["model"]["dropout"] = 0.1

    def suffix(d):
        d["model"]["end_of_word_suffix"] = "</w>"

    def no_regex(d):
        d["pre_tokenizer"]["use_regex"] = False

    for base, edit in [(tiny, prefix_space), (tiny, lowercase), (tiny, byte_fallback), (tiny, dropout),
                       (tiny, suffix), (tiny, no_regex), (qwen2, qwen_prefix_space), (qwen2, other_pattern),
                       (qwen2, contiguous)]:
        assert ByteLevelBPE.from_tokenizer(_variant(base, edit)) is None, edit.__name__

    truncating = Tokenizer.from_str(backend(tiny).to_str())
    truncating.enable_truncation(max_length=4)
    assert ByteLevelBPE.from_tokenizer(truncating) is None
    assert ByteLevelBPE.from_tokenizer(object()) is None
