"""Weighted prompts: Compel syntax and A1111 `(word:1.2)` syntax, turned into embeddings.

Compel does the weighting; Kiln hands it a text encoder wrapper that returns the hidden layer
Kiln conditions on, so clip skip applies exactly as for plain prompts (compel's own PENULTIMATE
mode reads `text_model`, which transformers 5 removed). Prompts longer than the encoder's
77-token window are encoded in chunks, never truncated; plain prompts that long come here too,
as one unweighted fragment.
"""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import pyparsing
import torch
from compel import Compel, ReturnedEmbeddingsType
from compel.prompt_parser import Blend, PromptParser

from kiln.errors import InvalidRequestError
from kiln.generation import Architecture, PromptWeighting

PromptKwargs = dict[str, torch.Tensor | None]

_A1111_TOKEN = re.compile(r"\\[()\[\]\\:]|\(|\[|\]|:\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*\)|\)|[^\\()\[\]:]+|[\\:]")
_A1111_UP, _A1111_DOWN = 1.1, 1 / 1.1


class _LayerEncoder:
    """Looks like a CLIP text encoder to Compel, but returns the layer Kiln conditions on as
    `last_hidden_state`: `clip_skip` layers from the end, after the final layer norm (SD 1.x),
    or the raw hidden state `clip_skip + 1` layers from the end (SDXL, as diffusers does)."""

    def __init__(self, encoder: Any, clip_skip: int, architecture: Architecture) -> None:
        self._encoder = encoder
        self._clip_skip = clip_skip
        self._architecture = architecture

    @property
    def device(self) -> torch.device:
        return self._encoder.device

    @property
    def dtype(self) -> torch.dtype:
        return self._encoder.dtype

    def __call__(self, input_ids: torch.Tensor, attention_mask: Any = None, **_: Any) -> SimpleNamespace:
        output = self._encoder(input_ids, output_hidden_states=True)
        if self._architecture == "sdxl":
            hidden = output.hidden_states[-(self._clip_skip + 2)]
        elif self._clip_skip == 0:
            hidden = output.last_hidden_state
        else:
            text_model = getattr(self._encoder, "text_model", self._encoder)
            hidden = text_model.final_layer_norm(output.hidden_states[-(self._clip_skip + 1)])
        pooled = {
            name: getattr(output, name)
            for name in ("text_embeds", "pooler_output")
            if getattr(output, name, None) is not None
        }
        return SimpleNamespace(last_hidden_state=hidden, **pooled)


@torch.no_grad()
def encode_weighted_prompts(
    pipe: Any,
    architecture: Architecture,
    positive: str,
    negative: str | None,
    clip_skip: int,
    *,
    guidance: bool,
    syntax: PromptWeighting | None,
) -> PromptKwargs:
    """Embeddings of weighted prompts, as pipeline keyword arguments (the same keys as
    `kiln.engine.prompts.encode_prompts`).

    `syntax` "compel" reads Compel syntax (`word+`, `(words)1.2`, `.blend()`, `.and()`);
    "sdEmbeds" reads A1111 syntax (`(word:1.2)`, `(word)`, `[word]`); None takes the text as it
    is, unweighted (how plain prompts too long for one window are encoded). Positive and negative
    embeddings are padded to the same length. Raises InvalidRequestError naming the prompt
    when its syntax is malformed.
    """
    # (tokenizer, encoder, pooled?): SDXL pools its second encoder only, which is all an SDXL
    # refiner has
    encoders = [(pipe.tokenizer, pipe.text_encoder, False)]
    if architecture == "sdxl":
        encoders.append((pipe.tokenizer_2, pipe.text_encoder_2, True))
    compels = [
        Compel(
            tokenizer=tokenizer,
            text_encoder=_LayerEncoder(encoder, clip_skip, architecture),  # type: ignore[arg-type]
            truncate_long_prompts=False,
            returned_embeddings_type=ReturnedEmbeddingsType.LAST_HIDDEN_STATES_NORMALIZED,
            requires_pooled=pooled,
            device=str(encoder.device),
        )
        for tokenizer, encoder, pooled in encoders
        if encoder is not None
    ]
    zero_negative = (
        architecture == "sdxl" and negative is None and pipe.config.get("force_zeros_for_empty_prompt", False)
    )
    embeds, negative_embeds, pooled, negative_pooled = [], [], None, None
    for compel in compels:
        positive_z, positive_pooled = _conditioning(compel, positive, syntax, "positivePrompt")
        pooled = positive_pooled if positive_pooled is not None else pooled
        if guidance:
            negative_z, negative_pooled_z = _conditioning(compel, negative or "", syntax, "negativePrompt")
            positive_z, negative_z = compel.pad_conditioning_tensors_to_same_length([positive_z, negative_z])
            negative_embeds.append(negative_z)
            negative_pooled = negative_pooled_z if negative_pooled_z is not None else negative_pooled
        embeds.append(positive_z)
    kwargs: PromptKwargs = {
        "prompt_embeds": torch.cat(embeds, dim=-1),
        "negative_prompt_embeds": torch.cat(negative_embeds, dim=-1) if guidance else None,
    }
    if architecture == "sdxl":
        kwargs["pooled_prompt_embeds"] = pooled
        kwargs["negative_pooled_prompt_embeds"] = negative_pooled
        if guidance and zero_negative:
            kwargs["negative_prompt_embeds"] = torch.zeros_like(kwargs["prompt_embeds"])
            kwargs["negative_pooled_prompt_embeds"] = torch.zeros_like(pooled)
    return kwargs


def _conditioning(
    compel: Compel, text: str, syntax: PromptWeighting | None, parameter: str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(embeddings, pooled embeddings or None) of one prompt for one text encoder."""
    provider = compel.conditioning_provider
    if syntax == "compel":
        check_compel_syntax(text, parameter)
        result = compel.build_conditioning_tensor(text)
        return result if compel.requires_pooled else (result, None)
    fragments = parse_a1111(text) if syntax == "sdEmbeds" else [(text, 1.0)]
    embeds = provider.get_embeddings_for_weighted_prompt_fragments(
        text_batch=[[fragment for fragment, _ in fragments]],
        fragment_weights_batch=[[weight for _, weight in fragments]],
        device=compel.device,
    )
    if not compel.requires_pooled:
        return embeds, None
    plain = "".join(fragment for fragment, _ in fragments)
    return embeds, provider.get_pooled_embeddings([plain], device=compel.device)


def check_compel_syntax(text: str, parameter: str) -> None:
    """Raise InvalidRequestError naming `parameter` when `text` is not valid Compel syntax.

    Compel itself reads a malformed `.blend(` or `.and(` as literal words; Kiln refuses it.
    """
    try:
        conjunction = PromptParser().parse_conjunction(text)
    except (pyparsing.ParseBaseException, PromptParser.ParsingException, ValueError) as exc:
        raise _syntax_error(parameter, str(exc)) from None
    if ".blend(" in text and not any(isinstance(p, Blend) for p in conjunction.prompts):
        raise _syntax_error(parameter, 'a blend is written ("text one", "text two").blend(1, 0.8)')
    if ".and(" in text and len(conjunction.prompts) < 2:
        raise _syntax_error(parameter, 'a conjunction is written ("text one", "text two").and()')


def _syntax_error(parameter: str, why: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"'{parameter}' is not valid Compel prompt-weighting syntax: {why}. Blends and and() "
        "must be the whole prompt; send the prompt without promptWeighting to use these "
        "characters literally.",
        code=f"invalid{parameter[0].upper()}{parameter[1:]}",
        parameter=parameter,
    )


def parse_a1111(text: str) -> list[tuple[str, float]]:
    """A1111 attention syntax as (text, weight) fragments, adjacent equal weights merged.

    `(words)` multiplies by 1.1, `[words]` divides by 1.1, `(words:1.5)` multiplies by 1.5;
    brackets nest, and ones left open at the end still apply. `\\(` is a literal bracket, and
    an unmatched closing bracket is literal text.
    """
    fragments: list[list[Any]] = []
    open_brackets: list[tuple[str, int]] = []

    def scale(start: int, factor: float) -> None:
        for fragment in fragments[start:]:
            fragment[1] *= factor

    for match in _A1111_TOKEN.finditer(text):
        token = match[0]
        if token in ("(", "["):
            open_brackets.append((token, len(fragments)))
        elif match[1] is not None and open_brackets and open_brackets[-1][0] == "(":
            scale(open_brackets.pop()[1], float(match[1]))
        elif token == ")" and open_brackets and open_brackets[-1][0] == "(":
            scale(open_brackets.pop()[1], _A1111_UP)
        elif token == "]" and open_brackets and open_brackets[-1][0] == "[":
            scale(open_brackets.pop()[1], _A1111_DOWN)
        else:
            literal = token[1:] if token.startswith("\\") and len(token) == 2 else token
            fragments.append([literal, 1.0])
    for kind, start in reversed(open_brackets):
        scale(start, _A1111_UP if kind == "(" else _A1111_DOWN)
    merged: list[tuple[str, float]] = []
    for fragment, weight in fragments:
        if merged and merged[-1][1] == weight:
            merged[-1] = (merged[-1][0] + fragment, weight)
        else:
            merged.append((fragment, weight))
    return merged or [("", 1.0)]
