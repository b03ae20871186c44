"""Textual-inversion embeddings in a resident pipeline: loaded under tokens of their own, counted
by the residency, and removed without a trace when evicted."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionXLPipeline

from kiln.engine.embeddings import TextualInversions, expand_triggers, read_vectors
from kiln.engine.residency import Residency
from kiln.errors import ModelLoadError
from kiln.generation import EmbeddingInput, ModelSpec
from tests.tiny_extras import (
    write_a1111_pt,
    write_a1111_safetensors,
    write_diffusers_bin,
    write_sdxl_embedding,
)

from .helpers import TinyModels

KEY = ("pipeline", "test:sdxl@1", "path")


@pytest.fixture()
def pipe(tiny: TinyModels) -> StableDiffusionXLPipeline:
    return StableDiffusionXLPipeline.from_pretrained(tiny.sdxl.path, local_files_only=True)


def state(pipe: StableDiffusionXLPipeline) -> list[object]:
    """What the embeddings may change: both vocabularies and embedding matrices."""
    return [
        (tokenizer.get_vocab(), len(tokenizer), encoder.get_input_embeddings().weight.detach().clone())
        for tokenizer, encoder in ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2))
    ]


def same(a: list[object], b: list[object]) -> bool:
    return all(x[0] == y[0] and x[1] == y[1] and torch.equal(x[2], y[2]) for x, y in zip(a, b, strict=True))


def test_the_file_formats_give_their_vectors(tmp_path: Path) -> None:
    assert read_vectors(write_a1111_safetensors(tmp_path / "a.safetensors"))["text_encoder"].shape == (3, 32)
    assert read_vectors(write_a1111_pt(tmp_path / "b.pt"))["text_encoder"].shape == (2, 32)
    assert read_vectors(write_diffusers_bin(tmp_path / "learned_embeds.bin"))["text_encoder"].shape == (1, 32)
    assert read_vectors(tmp_path)["text_encoder"].shape == (1, 32)  # a folder holding learned_embeds.bin
    xl = read_vectors(write_sdxl_embedding(tmp_path / "xl.safetensors"))
    assert (xl["text_encoder"].shape, xl["text_encoder_2"].shape) == ((2, 32), (2, 64))


def test_an_embedding_is_a_child_entry_sized_by_its_rows_and_evicts_cleanly(
    pipe: StableDiffusionXLPipeline, tmp_path: Path
) -> None:
    residency = Residency(10**9)
    embeddings = TextualInversions(residency)
    spec = ModelSpec("test:emb-xl@1", "sdxl", str(write_sdxl_embedding(tmp_path / "xl.safetensors")))
    before = state(pipe)
    plain_ids = [pipe.tokenizer("a red circle <kiln").input_ids, pipe.tokenizer_2("a red circle <kiln").input_ids]
    with residency.lease() as lease:
        lease.get(KEY, lambda: pipe)
        pipe_bytes = residency.resident_bytes
        tokens = embeddings.activate(lease, pipe, KEY, (EmbeddingInput(spec, "tinyembxl"),))
    names = tokens["tinyembxl"]
    assert len(names) == 2
    for tokenizer in (pipe.tokenizer, pipe.tokenizer_2):
        assert len(tokenizer(" ".join(names), add_special_tokens=False).input_ids) == 2
    [child] = residency.children(KEY)
    assert residency.resident_bytes == pipe_bytes + 2 * (32 + 64) * 4  # its rows, in float32
    # a prompt without the tokens tokenizes as before
    assert [pipe.tokenizer("a red circle <kiln").input_ids,
            pipe.tokenizer_2("a red circle <kiln").input_ids] == plain_ids

    assert residency.evict(child)
    assert same(state(pipe), before)
    with residency.lease() as lease:  # loads again, under new tokens
        again = embeddings.activate(lease, pipe, KEY, (EmbeddingInput(spec, "tinyembxl"),))
    assert again["tinyembxl"] != names


def test_a_weight_scales_the_vectors_and_gets_tokens_of_its_own(
    pipe: StableDiffusionXLPipeline, tmp_path: Path
) -> None:
    residency = Residency(10**9)
    embeddings = TextualInversions(residency)
    spec = ModelSpec("test:emb-xl@1", "sdxl", str(write_sdxl_embedding(tmp_path / "xl.safetensors")))
    with residency.lease() as lease:
        lease.get(KEY, lambda: pipe)
        one = embeddings.activate(lease, pipe, KEY, (EmbeddingInput(spec, "w"),))["w"]
        half = embeddings.activate(lease, pipe, KEY, (EmbeddingInput(spec, "w", 0.5),))["w"]
    table = pipe.text_encoder_2.get_input_embeddings().weight
    vocab = pipe.tokenizer_2.get_vocab()
    assert one != half
    assert torch.allclose(table[vocab[half[0]]], table[vocab[one[0]]] * 0.5)


def test_an_embedding_of_another_width_is_a_typed_error(pipe: StableDiffusionXLPipeline, tmp_path: Path) -> None:
    residency = Residency(10**9)
    spec = ModelSpec("test:emb@1", "sd1x", str(write_a1111_safetensors(tmp_path / "sd.safetensors")))
    before = state(pipe)
    with residency.lease() as lease, pytest.raises(ModelLoadError) as caught:
        lease.get(KEY, lambda: pipe)
        TextualInversions(residency).activate(lease, pipe, KEY, (EmbeddingInput(spec, "x"),))
    assert caught.value.parameter == "embeddings" and "text_encoder_2" in caught.value.message
    assert same(state(pipe), before)


def test_trigger_words_are_replaced_as_whole_words() -> None:
    tokens = {"neg": ("<a>", "<b>")}
    assert expand_triggers("neg, NEG neg_v2 negative (neg:1.2)", tokens, "sdEmbeds") == (
        "<a> <b>, <a> <b> neg_v2 negative (<a> <b>:1.2)")
    assert expand_triggers("neg+ (neg)1.3", tokens, "compel") == "(<a> <b>)+ ((<a> <b>))1.3"
