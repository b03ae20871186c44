"""Prompt embeddings with clip skip, computed here rather than by the pipelines.

diffusers' own `clip_skip` for SD 1.x reads `text_encoder.text_model`, which transformers 5
removed from `CLIPTextModel`; computing the embeddings ourselves also gives future prompt
weighting (Compel) one place to plug in. The result is a dict of pipeline keyword arguments.
"""

from __future__ import annotations

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
    first_encoder = pipe.text_encoder if pipe.text_encoder is not None else pipe.text_encoder_2
    first_tokenizer = pipe.tokenizer if pipe.tokenizer is not None else pipe.tokenizer_2
    _check_clip_skip(first_encoder, clip_skip)
    if weighting is not None or _beyond_window(first_tokenizer, positive, negative or ""):
        from .weighting import encode_weighted_prompts  # compel is slow to import: on demand

        return encode_weighted_prompts(
            pipe, architecture, positive, negative, clip_skip, guidance=guidance, syntax=weighting
        )
    if architecture == "sd1x":
        return _encode_sd1x(pipe, positive, negative, clip_skip, guidance)
    return _encode_sdxl(pipe, positive, negative, clip_skip, guidance)


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
    tokenizer: CLIPTokenizer, encoder: CLIPTextModel, text: str, clip_skip: int
) -> torch.Tensor:
    """The CLIP hidden states SD 1.x conditions on, `clip_skip` layers from the end."""
    ids = _token_ids(tokenizer, text).to(encoder.device)
    output = encoder(ids, output_hidden_states=True)
    if clip_skip == 0:
        hidden = output.last_hidden_state  # already through final_layer_norm
    else:
        # A1111 semantics: an earlier layer, still normalised as the last one is.
        text_model = getattr(encoder, "text_model", encoder)  # flattened in transformers 5
        hidden = text_model.final_layer_norm(output.hidden_states[-(clip_skip + 1)])
    return hidden.to(encoder.dtype)


def _encode_sdxl(
    pipe: StableDiffusionXLPipeline,
    positive: str,
    negative: str | None,
    clip_skip: int,
    guidance: bool,
) -> PromptKwargs:
    # SDXL's encode_prompt does not touch `text_model`, so its clip skip works under
    # transformers 5; its `clip_skip` already counts from the penultimate layer.
    embeds, negative_embeds, pooled, negative_pooled = pipe.encode_prompt(
        prompt=positive,
        device=pipe._execution_device,
        num_images_per_prompt=1,
        do_classifier_free_guidance=guidance,
        negative_prompt=negative,
        clip_skip=clip_skip,
    )
    return {
        "prompt_embeds": embeds,
        "negative_prompt_embeds": negative_embeds,
        "pooled_prompt_embeds": pooled,
        "negative_pooled_prompt_embeds": negative_pooled,
    }


def _token_ids(tokenizer: CLIPTokenizer, text: str) -> torch.Tensor:
    # Pad to the full context, as SD was trained: 77 tokens including BOS/EOS (longer texts go
    # to the chunking encoder; truncation only guards that).
    return tokenizer(
        text,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
