"""The CLIP-format tokenizer: learned merges, one token per caption word, SD's conventions."""

from __future__ import annotations

from pathlib import Path

from transformers import CLIPTokenizer

from kiln.demo.captions import vocabulary
from kiln.demo.tokenizer import build_tokenizer


def test_each_caption_word_is_one_token_and_the_folder_loads(tmp_path: Path) -> None:
    build_tokenizer().save_pretrained(tmp_path)
    tokenizer = CLIPTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert tokenizer.model_max_length == 77
    assert tokenizer.pad_token == tokenizer.eos_token == "<|endoftext|>"
    for word in vocabulary():
        assert len(tokenizer(word, add_special_tokens=False).input_ids) == 1, word
    ids = tokenizer("an orange star", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and ids[0] == tokenizer.bos_token_id
    assert ids[1:5] == [*tokenizer("an orange star", add_special_tokens=False).input_ids,
                        tokenizer.eos_token_id]
    assert len(set(tokenizer("an orange", add_special_tokens=False).input_ids)) == 2
