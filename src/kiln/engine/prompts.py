"""Prompt embeddings with clip skip, computed here rather than by the pipelines.

diffusers' own `clip_skip` for SD 1.x reads `text_encoder.text_model`, which transformers 5
removed from `CLIPTextModel`; computing the embeddings ourselves also gives future prompt
weighting (Compel) one place to plug in. The result is a dict of pipeline keyword arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from transformers import CLIPTextModel, CLIPTokenizer

from kiln.errors import InvalidRequestError
from kiln.generation import Architecture, PromptWeighting

PromptKwargs = dict[str, torch.Tensor | None]


@torch.no_grad()
def encode_prompts(
    pipe: Any,
    architecture: Architecture,
    positive: str,
    negative: str | None,
    clip_skip: int,
    *,
    guidance: bool,
    weighting: PromptWeighting | None = None,
) -> PromptKwargs:
    """Embeddings for one positive and one negative prompt, as pipeline keyword arguments.

    `clip_skip` counts layers skipped from the end (0 = the architecture's usual layer: the last
    for SD 1.x, the penultimate for SDXL). A `negative` of None means the empty prompt; for SDXL
    that is all-zero embeddings when the model's `force_zeros_for_empty_prompt` is set, as
    diffusers does. Negative embeddings are only computed when `guidance` (CFG > 1) uses them.
    Raises InvalidRequestError when `clip_skip` is beyond the text encoder's depth. An SDXL
    refiner's pipeline (its second text encoder only) is encoded as SDXL.
    `weighting` reads the prompts' weighting syntax (see `kiln.engine.weighting`). A prompt
    longer than the text encoder's window is encoded in chunks of it (as weighted prompts are),
    never truncated.
    """
    fits = _fits_one_window(pipe, clip_skip, positive, negative or "")
    if weighting is not None or not fits:
        from .weighting import encode_weighted_prompts  # compel is slow to import: on demand

        return encode_weighted_prompts(
            pipe, architecture, positive, negative, clip_skip, guidance=guidance, syntax=weighting
        )
    if architecture == "sd1x":
        return _encode_sd1x(pipe, positive, negative, clip_skip, guidance)
    [kwargs] = _encode_sdxl_pairs(pipe, [(positive, negative)], clip_skip, guidance)
    return kwargs


@torch.no_grad()
def encode_plain_prompts(
    pipe: Any,
    architecture: Architecture,
    pairs: Sequence[tuple[str, str | None]],
    clip_skip: int,
    *,
    guidance: bool,
) -> list[PromptKwargs] | None:
    """What `encode_prompts` gives each (positive, negative) pair of `pairs`, without weighting,
    computed together: SD 1.x encodes every distinct text of the pairs in one text-encoder
    pass; SDXL passes all pairs with a negative prompt, and all without, through diffusers'
    `encode_prompt` at once. The embeddings equal the pairs' own within float rounding (the
    encoders' arithmetic differs slightly with the batch size). None when a text is longer
    than one window of the text encoder (`encode_prompts` chunks it). Raises what
    `encode_prompts` raises."""
    if not _fits_one_window(pipe, clip_skip, *(text for pair in pairs for text in pair if text is not None)):
        return None
    if architecture != "sd1x":
        return _encode_sdxl_pairs(pipe, pairs, clip_skip, guidance)
    texts = [positive for positive, _ in pairs] + [negative or "" for _, negative in pairs if guidance]
    row = {text: index for index, text in enumerate(dict.fromkeys(texts))}
    hidden = _clip_hidden(pipe.tokenizer, pipe.text_encoder, list(row), clip_skip)
    return [{
        "prompt_embeds": hidden[row[positive]][None],
        "negative_prompt_embeds": hidden[row[negative or ""]][None] if guidance else None,
    } for positive, negative in pairs]


def _encode_sdxl_pairs(
    pipe: StableDiffusionXLPipeline, pairs: Sequence[tuple[str, str | None]], clip_skip: int, guidance: bool
) -> list[PromptKwargs]:
    """Each pair's SDXL embeddings through diffusers' `encode_prompt`: one call for the pairs
    with a negative prompt and one for those without. SDXL's `encode_prompt` does not touch
    `text_model`, so its clip skip works under transformers 5; its `clip_skip` already counts
    from the penultimate layer."""
    results: dict[int, PromptKwargs] = {}
    for without_negative in (True, False):  # None may mean all-zero embeddings: its own call
        indices = [i for i, (_, negative) in enumerate(pairs) if (negative is None) == without_negative]
        if not indices:
            continue
        embeds, negative_embeds, pooled, negative_pooled = pipe.encode_prompt(
            prompt=[pairs[i][0] for i in indices],
            device=pipe._execution_device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=guidance,
            negative_prompt=None if without_negative else [pairs[i][1] for i in indices],
            clip_skip=clip_skip,
        )
        for row, i in enumerate(indices):
            results[i] = {
                "prompt_embeds": embeds[row][None],
                "negative_prompt_embeds": None if negative_embeds is None else negative_embeds[row][None],
                "pooled_prompt_embeds": pooled[row][None],
                "negative_pooled_prompt_embeds":
                    None if negative_pooled is None else negative_pooled[row][None],
            }
    return [results[i] for i in range(len(pairs))]


def _fits_one_window(pipe: Any, clip_skip: int, *texts: str) -> bool:
    """Whether every text fits one window of the pipeline's first text encoder (an SDXL
    refiner's is its second); InvalidRequestError when `clip_skip` is beyond its depth."""
    encoder = pipe.text_encoder if pipe.text_encoder is not None else pipe.text_encoder_2
    tokenizer = pipe.tokenizer if pipe.tokenizer is not None else pipe.tokenizer_2
    _check_clip_skip(encoder, clip_skip)
    return not _beyond_window(tokenizer, *texts)


def _beyond_window(tokenizer: CLIPTokenizer, *texts: str) -> bool:
    """Whether a text has more tokens than one window holds (besides its BOS and EOS)."""
    window = tokenizer.model_max_length - 2
    return any(len(tokenizer(text, add_special_tokens=False).input_ids) > window for text in texts)


def _check_clip_skip(text_encoder: CLIPTextModel, clip_skip: int) -> None:
    depth = text_encoder.config.num_hidden_layers
    # Keep at least one transformer layer: hidden_states[0] is the bare token embedding.
    if not 0 <= clip_skip < depth - 1:
        raise InvalidRequestError(
            f"clipSkip must be between 0 and {depth - 2} for this model, got {clip_skip}",
            parameter="clipSkip",
        )


def _encode_sd1x(
    pipe: StableDiffusionPipeline,
    positive: str,
    negative: str | None,
    clip_skip: int,
    guidance: bool,
) -> PromptKwargs:
    encoder = pipe.text_encoder
    kwargs: PromptKwargs = {
        "prompt_embeds": _clip_hidden(pipe.tokenizer, encoder, positive, clip_skip),
        "negative_prompt_embeds": None,
    }
    if guidance:
        kwargs["negative_prompt_embeds"] = _clip_hidden(
            pipe.tokenizer, encoder, negative or "", clip_skip
        )
    return kwargs


def _clip_hidden(
    tokenizer: CLIPTokenizer, encoder: CLIPTextModel, text: str | list[str], clip_skip: int
) -> torch.Tensor:
    """The CLIP hidden states SD 1.x conditions on, `clip_skip` layers from the end: one row
    per text."""
    ids = _token_ids(tokenizer, text).to(encoder.device)
    output = encoder(ids, output_hidden_states=True)
    if clip_skip == 0:
        hidden = output.last_hidden_state  # already through final_layer_norm
    else:
        # A1111 semantics: an earlier layer, still normalised as the last one is.
        text_model = getattr(encoder, "text_model", encoder)  # flattened in transformers 5
        hidden = text_model.final_layer_norm(output.hidden_states[-(clip_skip + 1)])
    return hidden.to(encoder.dtype)


def _token_ids(tokenizer: CLIPTokenizer, text: str | list[str]) -> torch.Tensor:
    # Pad to the full context, as SD was trained: 77 tokens including BOS/EOS (longer texts go
    # to the chunking encoder; truncation only guards that).
    return tokenizer(
        text,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
