"""A CLIP-format tokenizer whose merges are learned on the caption words.

The vocabulary is CLIP's layout (the 256 byte characters, the same with `</w>`, the merges, then
`<|startoftext|>` and `<|endoftext|>`), so `CLIPTokenizer.from_pretrained` loads it. The merges
come from `tokenizers.BpeTrainer` run on the caption vocabulary, so every caption word is one
token; hand-written whole-word merges collide ("an" merged inside "orange").
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import CLIPTokenizer

from kiln.demo.captions import vocabulary

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
MAX_LENGTH = 77
END_OF_WORD = "</w>"


def byte_chars() -> list[str]:
    """CLIP's (GPT-2's) reversible map of the 256 byte values to printable characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: b for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = 256 + extra
            extra += 1
    return [chr(chars[b]) for b in range(256)]


def learn_merges(words: Iterable[str]) -> list[tuple[str, str]]:
    """BPE merges, in order, that make each of `words` a single token."""
    words = sorted(set(words))
    bpe = Tokenizer(models.BPE(end_of_word_suffix=END_OF_WORD))
    bpe.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(vocab_size=100_000, min_frequency=1, show_progress=False,
                                  initial_alphabet=byte_chars(), end_of_word_suffix=END_OF_WORD)
    bpe.train_from_iterator(words, trainer=trainer)
    merges = json.loads(bpe.to_str())["model"]["merges"]
    pairs = [tuple(m.split(" ")) if isinstance(m, str) else (m[0], m[1]) for m in merges]
    # The trainer breaks ties between equally frequent pairs in a per-process random order.
    # Sorting by the merged token's length (parts before wholes), then alphabetically, gives
    # the same ids in every process; build_tokenizer checks each word is still one token.
    return sorted(pairs, key=lambda pair: (len(pair[0] + pair[1]), pair[0] + pair[1], pair))


def build_tokenizer(words: Iterable[str] | None = None) -> CLIPTokenizer:
    """A CLIP tokenizer for `words` (default: the caption vocabulary); pad is `<|endoftext|>`."""
    words = vocabulary() if words is None else sorted(set(words))
    merges = learn_merges(words)
    chars = byte_chars()
    tokens = [*chars, *(c + END_OF_WORD for c in chars), *(a + b for a, b in merges), BOS, EOS]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), "utf-8")
        (folder / "merges.txt").write_text(
            "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), "utf-8")
        tokenizer = CLIPTokenizer.from_pretrained(folder, local_files_only=True, pad_token=EOS)
    tokenizer.model_max_length = MAX_LENGTH
    split = [w for w in words if len(tokenizer(w, add_special_tokens=False).input_ids) != 1]
    if split:
        raise ValueError(f"the learned merges leave these words in pieces: {split}")
    return tokenizer
