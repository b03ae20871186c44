"""Prompt weighting (`promptWeighting`, `usePromptWeighting`) through the REST API."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import SD, SDXL, decode_image, inference, post
from tests.service.test_lora import error_of, pixels


def differs(a: np.ndarray, b: np.ndarray) -> bool:
    """Visibly different: the random-weight demo model reacts weakly to text, so a changed
    conditioning moves pixels by tenths of a level on average (0.0 when it is ignored)."""
    return float(np.abs(a - b).mean()) > 0.1
COMPEL_FORMS = [
    "small+ dog",
    "(pixar style)-",
    "small+++ dog",
    "(small+ dog)++",
    "(pixar)1.2 style",
    '("small dog", "robot").blend(1, 0.8)',
    '("small dog", "pixar style").and()',
]


@pytest.mark.parametrize("prompt", COMPEL_FORMS)
def test_each_compel_form_parses_and_changes_the_image(client, prompt):
    literal = pixels(client, positivePrompt=prompt)  # without weighting: plain characters
    weighted = pixels(client, positivePrompt=prompt, promptWeighting="compel")
    assert differs(weighted, literal)
    assert np.array_equal(pixels(client, positivePrompt=prompt, usePromptWeighting=True), weighted)


def test_weights_matter_not_just_the_syntax(client):
    up = pixels(client, positivePrompt="(small dog)1.5 robot", promptWeighting="compel")
    down = pixels(client, positivePrompt="(small dog)0.5 robot", promptWeighting="compel")
    neutral = pixels(client, positivePrompt="small dog robot", promptWeighting="compel")
    assert differs(up, neutral) and differs(down, neutral)
    assert np.array_equal(neutral, pixels(client, positivePrompt="small dog robot"))


def test_sd_embeds_reads_a1111_syntax(client):
    a1111 = pixels(client, positivePrompt="a (small dog:1.5) robot", promptWeighting="sdembeds")
    compel = pixels(client, positivePrompt="a (small dog)1.5 robot", promptWeighting="compel")
    literal = pixels(client, positivePrompt="a (small dog:1.5) robot")
    assert differs(a1111, literal)
    # the same weights: far closer to the Compel spelling than to the literal text
    assert np.abs(a1111 - compel).mean() < np.abs(a1111 - literal).mean() / 2


def test_the_negative_prompt_is_weighted_too(client):
    plain = pixels(client, negativePrompt="blurry photo", promptWeighting="compel")
    weighted = pixels(client, negativePrompt="(blurry)1.6 photo", promptWeighting="compel")
    assert differs(weighted, plain)


@pytest.mark.parametrize("weighting", [{"promptWeighting": "compel"}, {}], ids=["compel", "plain"])
@pytest.mark.parametrize("model", [SD, SDXL])
def test_long_prompts_are_not_truncated(client, weighting, model):
    # The tiny tokenizer spends about one token per character: 77 tokens end near character 75.
    head = "a red circle on a blue background " * 3
    one = pixels(client, model=model, positivePrompt=head + "and a green star", **weighting)
    other = pixels(client, model=model, positivePrompt=head + "and a white cube", **weighting)
    assert differs(one, other)


def test_a_long_negative_prompt_is_not_truncated(client):
    head = "blurry, dark, noisy, low quality " * 3
    assert differs(pixels(client, negativePrompt=head + "green"), pixels(client, negativePrompt=head + "white"))


def test_sdxl_with_pooled_embeddings_and_clip_skip(client):
    def sdxl(**overrides) -> np.ndarray:
        response = post(client, [inference(model=SDXL, **overrides)])
        assert response.status_code == 200, response.text
        return np.asarray(decode_image(response.json()["data"][0]), dtype=np.int16)

    literal = sdxl(positivePrompt="(small dog)1.4 robot")
    weighted = sdxl(positivePrompt="(small dog)1.4 robot", promptWeighting="compel")
    skipped = sdxl(positivePrompt="(small dog)1.4 robot", promptWeighting="compel", clipSkip=1)
    assert differs(weighted, literal)
    assert differs(skipped, weighted)
    neutral = sdxl(positivePrompt="small dog robot", promptWeighting="compel", negativePrompt="blurry")
    assert np.array_equal(neutral, sdxl(positivePrompt="small dog robot", negativePrompt="blurry"))


def test_clip_skip_still_applies_with_weighting(client):
    base = pixels(client, positivePrompt="(small dog)1.3", promptWeighting="compel")
    skipped = pixels(client, positivePrompt="(small dog)1.3", promptWeighting="compel", clipSkip=2)
    assert differs(skipped, base)
    # with neutral weights, clip skip gives exactly what the unweighted path gives
    assert np.array_equal(
        pixels(client, positivePrompt="small dog", promptWeighting="compel", clipSkip=1),
        pixels(client, positivePrompt="small dog", clipSkip=1),
    )


@pytest.mark.parametrize("prompt", [
    '("small dog", "robot").blend(1, 0.8',
    '("small dog", "robot").blend(1, 0.8) extra words',
    '("small dog", "robot").and( ',
])
def test_a_malformed_blend_is_a_typed_error(client, prompt):
    error = error_of(client, positivePrompt=prompt, promptWeighting="compel")
    assert (error["code"], error["parameter"]) == ("invalidPositivePrompt", "positivePrompt")
    assert "blend" in error["message"] or "Compel" in error["message"]


def test_unknown_weighting_names_are_typed_errors(client):
    error = error_of(client, promptWeighting="a1111")
    assert (error["code"], error["parameter"]) == ("invalidPromptWeighting", "promptWeighting")
    assert error["allowedValues"] == ["compel", "sdEmbeds"]
    error = error_of(client, usePromptWeighting="yes")
    assert (error["code"], error["parameter"]) == ("invalidUsePromptWeighting", "usePromptWeighting")
