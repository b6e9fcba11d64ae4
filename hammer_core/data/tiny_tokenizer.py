"""Train the tiny preset's byte-level BPE tokenizer on the project's own text.

The shipped ``data/tokenizer/tokenizer.json`` was made with::

    python -m hammer_core.data.tiny_tokenizer

It learns from the bundled sample corpus rendered in Hammer's prompt format (so the
instructions, JSON punctuation and tool vocabulary get compact tokens) plus random masked
names. Byte-level BPE encodes any text, so the tokenizer never fails on unseen input.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from hammer_core.artifacts import atomic_write_text
from hammer_core.data.masking import ALPHABET
from hammer_core.paths import DATA_DIR, TINY_TOKENIZER_DIR
from hammer_core.data.prompts import render_prompt, render_target

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def corpus_texts(sample_dir: Path) -> list[str]:
    from hammer_core.data.row_errors import RowError
    from hammer_core.data.formats.xlam import normalize_xlam
    from hammer_core.data.readers import read_records

    texts = []
    for path in sorted(sample_dir.glob("*.jsonl")):
        for i, (_, rec) in enumerate(read_records(path)):
            if isinstance(rec, RowError):
                continue
            try:
                row = normalize_xlam(rec, source=path.stem, task=path.stem, index=i)
            except RowError:
                continue
            texts.append(render_prompt(row["messages"], json.loads(row["tools"])))
            texts.append(render_target(json.loads(row["calls"])))
    rng = random.Random(0)
    texts.append(" ".join("".join(rng.choices(ALPHABET, k=rng.randint(4, 15))) for _ in range(2000)))
    return texts


def train_tokenizer(texts: list[str], vocab_size: int = 8192) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sample-dir", type=Path, default=DATA_DIR / "sample")
    ap.add_argument("--out", type=Path, default=TINY_TOKENIZER_DIR)
    ap.add_argument("--vocab-size", type=int, default=8192)
    args = ap.parse_args(argv)
    tok = train_tokenizer(corpus_texts(args.sample_dir), args.vocab_size)
    atomic_write_text(args.out / "tokenizer.json", tok.to_str(pretty=False))
    print(f"wrote {args.out / 'tokenizer.json'} (vocab {tok.get_vocab_size()})")


if __name__ == "__main__":
    main()
