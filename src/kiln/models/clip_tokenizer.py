"""CLIP's tokenizer files (vocab.json, merges.txt) built offline from the BPE file of `openai-clip`.

Every Stable Diffusion text encoder (CLIP ViT-L, OpenCLIP ViT-H and ViT-bigG) uses OpenAI's CLIP
vocabulary of 49,408 tokens. The `openai-clip` package ships it as `clip/bpe_simple_vocab_16e6.txt.gz`;
the file is read as data (importing the `clip` package would import torchvision).
"""

from __future__ import annotations

import gzip
import json
from functools import cache
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

VOCAB_SIZE = 49408
BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
MAX_LENGTH = 77
_MERGES = VOCAB_SIZE - 2 * 256 - 2  # 48,894: the vocabulary is 512 byte tokens, merges, BOS, EOS


def bpe_file() -> Path:
    """The gzipped BPE merges file of the installed `openai-clip` distribution."""
    try:
        path = Path(str(distribution("openai-clip").locate_file("clip/bpe_simple_vocab_16e6.txt.gz")))
    except PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise FileNotFoundError(
            "CLIP's vocabulary file is missing: install the `openai-clip` package "
            "(a dependency of Kiln) with `pip install openai-clip==1.0.1`"
        )
    return path


def _byte_characters() -> list[str]:
    """The 256 characters CLIP's (GPT-2's) byte-level BPE stands bytes for, in vocabulary order:
    the printable bytes as themselves, then the others as the characters from U+0100 on."""
    printable = [
        *range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)
    ]
    others = [byte for byte in range(256) if byte not in printable]
    return [chr(byte) for byte in printable] + [chr(256 + n) for n in range(len(others))]


@cache
def merges() -> tuple[tuple[str, str], ...]:
    """The 48,894 BPE merges, by rank, as OpenAI's `simple_tokenizer.py` reads them."""
    lines = gzip.decompress(bpe_file().read_bytes()).decode("utf-8").split("\n")
    pairs = tuple(tuple(line.split()) for line in lines[1 : 1 + _MERGES])  # line 0 is a header
    if len(pairs) != _MERGES or any(len(pair) != 2 for pair in pairs):
        raise ValueError(f"{bpe_file()} is not CLIP's BPE file ({len(pairs)} merges)")
    return pairs  # type: ignore[return-value]


@cache
def vocabulary() -> dict[str, int]:
    """Token → id: the 256 byte characters, the same with `</w>`, every merge, then BOS and EOS."""
    characters = _byte_characters()
    tokens = [*characters, *(c + "</w>" for c in characters), *("".join(m) for m in merges()), BOS, EOS]
    return {token: index for index, token in enumerate(tokens)}


def tokenizer_files(pad_token: str) -> dict[str, str]:
    """The files of a `transformers.CLIPTokenizer` folder, by name.

    `pad_token` is `EOS` for OpenAI's CLIP ViT-L (SD 1.x, SDXL's first encoder) and `"!"` for the
    OpenCLIP encoders (SD 2.x, SDXL's second), as the published Stable Diffusion tokenizers have.
    """
    specials = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": pad_token}
    return {
        "vocab.json": json.dumps(vocabulary(), ensure_ascii=False),
        "merges.txt": "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges()),
        "special_tokens_map.json": json.dumps(specials, indent=2),
        "tokenizer_config.json": json.dumps(
            {
                **specials,
                "tokenizer_class": "CLIPTokenizer",
                "model_max_length": MAX_LENGTH,
                "do_lower_case": True,
                "add_prefix_space": False,
                "errors": "replace",
            },
            indent=2,
        ),
    }
