"""The CLIP tokenizer Kiln builds from the BPE file of the `openai-clip` package gives CLIP's ids."""

from __future__ import annotations

import importlib.util

import pytest
from transformers import CLIPTokenizer

from kiln.models import clip_tokenizer

# The ids OpenAI's own tokenizer gives (github.com/openai/CLIP, clip/simple_tokenizer.py, with its
# bpe_simple_vocab_16e6.txt.gz), BOS 49406 and EOS 49407 added as CLIP's `tokenize` does. The
# first is also the example of the transformers CLIP documentation; the reference tokenizer test
# below re-derives every one of them with OpenAI's code.
EXPECTED_IDS = {
    "a photo of a cat": [49406, 320, 1125, 539, 320, 2368, 49407],
    "A photo of a dog": [49406, 320, 1125, 539, 320, 1929, 49407],
    "an astronaut riding a horse on mars, 4k, highly detailed": [
        49406, 550, 18376, 6765, 320, 4558, 525, 7496, 267, 275, 330, 267, 5302, 12609, 49407,
    ],
    "masterpiece, best quality, 1girl, (blue hair:1.2)": [
        49406, 12066, 267, 949, 3027, 267, 272, 1611, 267, 263, 1746, 2225, 281, 272, 269, 273, 264, 49407,
    ],
    "Hello, World!!  don't stop": [49406, 3306, 267, 1002, 748, 847, 713, 1691, 49407],
    "café crème brûlée": [49406, 15304, 1075, 12138, 614, 711, 127, 119, 75, 13489, 49407],
}


def _tokenizer(folder, pad_token: str) -> CLIPTokenizer:
    folder.mkdir()
    for name, text in clip_tokenizer.tokenizer_files(pad_token).items():
        (folder / name).write_text(text, "utf-8")
    return CLIPTokenizer.from_pretrained(folder, local_files_only=True)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> CLIPTokenizer:
    return _tokenizer(tmp_path_factory.mktemp("tokenizer") / "clip", clip_tokenizer.EOS)


@pytest.mark.parametrize("prompt", list(EXPECTED_IDS))
def test_the_built_tokenizer_gives_clips_ids(tokenizer, prompt):
    assert tokenizer(prompt).input_ids == EXPECTED_IDS[prompt]


def test_openais_reference_tokenizer_gives_the_same_ids():
    pytest.importorskip("ftfy", reason="OpenAI's tokenizer needs ftfy (a dependency of openai-clip)")
    # Loaded by file: importing the `clip` package would import torchvision.
    source = clip_tokenizer.bpe_file().parent / "simple_tokenizer.py"
    spec = importlib.util.spec_from_file_location("openai_clip_simple_tokenizer", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    reference = module.SimpleTokenizer(str(clip_tokenizer.bpe_file()))
    for prompt, ids in EXPECTED_IDS.items():
        assert [49406, *reference.encode(prompt), 49407] == ids, prompt


def test_the_vocabulary_is_clips():
    vocabulary = clip_tokenizer.vocabulary()
    assert len(vocabulary) == clip_tokenizer.VOCAB_SIZE == 49408
    assert vocabulary["<|startoftext|>"] == 49406 and vocabulary["<|endoftext|>"] == 49407
    assert (vocabulary["!"], vocabulary["a</w>"], vocabulary["cat</w>"]) == (0, 320, 2368)


def test_padding_is_end_of_text_for_clip_and_exclamation_for_open_clip(tokenizer, tmp_path):
    open_clip = _tokenizer(tmp_path / "open-clip", "!")
    for tok, pad_id in ((tokenizer, 49407), (open_clip, 0)):
        ids = tok("a photo of a cat", padding="max_length", max_length=tok.model_max_length).input_ids
        assert len(ids) == 77
        assert ids[:7] == EXPECTED_IDS["a photo of a cat"] and set(ids[7:]) == {pad_id}
