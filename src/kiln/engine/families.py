"""What differs between model families in the engine, behind one interface: SD 1.x / SDXL
(UNet pipelines) and FLUX / SD3 (flow-matching transformers, `kiln.engine.flow_pipelines`).

A family says which pipeline class serves a request, builds its prompt embeddings and call
arguments, loads and combines its ControlNets, checks what its pipelines cannot honour, and
estimates the activation memory of a call. The engine runs every family the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from typing import Any, Protocol

import torch
from diffusers import DiffusionPipeline

from kiln.architectures import FLOW_ARCHITECTURES
from kiln.errors import InferenceError, InvalidRequestError
from kiln.generation import GenerationRequest, ModelSpec

from . import flow_pipelines as flow
from .controlnets import ModedMultiControlNet, control_call_kwargs, load_controlnet
from .devices import activation_bytes
from .embeddings import expand_triggers
from .modes import check_pipeline_mode, mode_call_kwargs
from .pipeline_classes import pipeline_class
from .prompts import PromptKwargs, encode_plain_prompts, encode_prompts

log = logging.getLogger(__name__)

Tokens = dict[str, tuple[str, ...]]
"""The tokens of a request's textual-inversion embeddings, by trigger word."""


class PromptMemo:
    """The prompt embeddings computed so far in one pipeline with one LoRA and embedding state
    (the requests of one engine setup), by what they depend on: requests with the same prompts
    (the images of one task, a prompt sent by many clients) encode them once. The tensors are
    shared between those requests; the pipeline call only reads them."""

    def __init__(self) -> None:
        self._kwargs: dict[Hashable, dict[str, Any]] = {}

    def __contains__(self, key: Hashable) -> bool:
        return key in self._kwargs

    def put(self, key: Hashable, kwargs: dict[str, Any]) -> None:
        """Keep `kwargs` as the embeddings of `key` (computed with others: `Family.prime`)."""
        self._kwargs[key] = kwargs

    def get(self, key: Hashable, encode: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """A new dict of the embeddings of `key`, computed by `encode` the first time (an
        error is raised, not kept: the next request of `key` tries again)."""
        if key not in self._kwargs:
            self._kwargs[key] = encode()
        return dict(self._kwargs[key])


class Family(Protocol):
    def view_class(self, cached: DiffusionPipeline, request: GenerationRequest) -> type[DiffusionPipeline]:
        """The pipeline class that runs `request` on the resident pipeline `cached`."""

    def check(self, cached: DiffusionPipeline, request: GenerationRequest) -> None:
        """Raise a KilnError naming the parameter for what `cached` cannot run."""

    def prime(
        self, pipe: DiffusionPipeline, requests: list[GenerationRequest], tokens: Tokens, memo: PromptMemo
    ) -> None:
        """Encode the distinct prompts of `requests` (of one setup) together where the family
        can, into `memo`; what it leaves out, `call_kwargs` encodes one by one. Never raises."""

    def call_kwargs(
        self, pipe: DiffusionPipeline, request: GenerationRequest, tokens: Tokens, memo: PromptMemo
    ) -> dict[str, Any]:
        """The arguments of `request`'s pipeline call alone (without the generator); its prompt
        embeddings from `memo` when another request of the setup had the same prompts."""

    def controlnet(self, nets: list[torch.nn.Module], request: GenerationRequest) -> torch.nn.Module:
        """The pipeline's `controlnet` component for `nets`."""

    def load_controlnet(self, model: ModelSpec, device: str, dtype: torch.dtype) -> torch.nn.Module:
        """A ControlNet of this family (ModelLoadError naming `controlNet`)."""

    def activation_bytes(
        self, pipe: DiffusionPipeline | None, request: GenerationRequest, element_bytes: int
    ) -> tuple[int, int]:
        """(bytes per image, bytes per call) of a call's activations; `pipe` the resident
        pipeline, or None before it is loaded."""


def family(architecture: str) -> Family:
    """The family of models of `architecture`."""
    return FLOW if architecture in FLOW_ARCHITECTURES else SD


class StableDiffusionFamily:
    """SD 1.x and SDXL: prompt embeddings with clip skip, weighting and embeddings computed by
    Kiln (`kiln.engine.prompts`), ControlNets with control modes, refiners."""

    _UNET_CHANNELS = 320  # first-block widths of SD 1.5's and SDXL's UNets and VAEs
    _VAE_CHANNELS = 128

    def view_class(self, cached: DiffusionPipeline, request: GenerationRequest) -> type[DiffusionPipeline]:
        return pipeline_class(request.model.architecture, request.mode, bool(request.controlnets))

    def check(self, cached: DiffusionPipeline, request: GenerationRequest) -> None:
        check_pipeline_mode(cached, request)

    def prime(
        self, pipe: DiffusionPipeline, requests: list[GenerationRequest], tokens: Tokens, memo: PromptMemo
    ) -> None:
        """Prompts without weighting go through the text encoders together
        (`encode_plain_prompts`)."""
        _prime(requests, tokens, memo, lambda pairs, clip_skip: encode_plain_prompts(
            pipe, requests[0].model.architecture, pairs, clip_skip, guidance=requests[0].cfg_scale > 1))

    def prompts(
        self, pipe: DiffusionPipeline, request: GenerationRequest, tokens: Tokens, memo: PromptMemo
    ) -> PromptKwargs:
        """The prompt embeddings of `request` in `pipe` (a base model's or a refiner's), its
        trigger words replaced by the tokens of its embeddings (`memo` holds `pipe`'s)."""
        weighting = request.prompt_weighting
        negative = request.negative_prompt

        def encode() -> PromptKwargs:
            try:
                return encode_prompts(
                    pipe,
                    request.model.architecture,
                    expand_triggers(request.positive_prompt, tokens, weighting),
                    None if negative is None else expand_triggers(negative, tokens, weighting),
                    request.clip_skip,
                    guidance=request.cfg_scale > 1,  # diffusers' own condition for classifier-free guidance
                    weighting=weighting,
                )
            except InvalidRequestError:
                raise
            except Exception as exc:
                raise inference_error(exc) from exc

        return memo.get(_prompt_key(request), encode)

    def call_kwargs(
        self, pipe: DiffusionPipeline, request: GenerationRequest, tokens: Tokens, memo: PromptMemo
    ) -> dict[str, Any]:
        return control_call_kwargs(request, mode_call_kwargs(request, {
            **self.prompts(pipe, request, tokens, memo), **_common_kwargs(request)}))

    def controlnet(self, nets: list[torch.nn.Module], request: GenerationRequest) -> torch.nn.Module:
        modes = [control.control_mode for control in request.controlnets]
        return ModedMultiControlNet(nets, modes, guidance=request.cfg_scale > 1)  # type: ignore[arg-type]

    def load_controlnet(self, model: ModelSpec, device: str, dtype: torch.dtype) -> torch.nn.Module:
        return load_controlnet(model, device, dtype)

    def activation_bytes(
        self, pipe: DiffusionPipeline | None, request: GenerationRequest, element_bytes: int
    ) -> tuple[int, int]:
        unet, vae = self._UNET_CHANNELS, self._VAE_CHANNELS
        if pipe is not None:
            unet, vae = pipe.unet.config.block_out_channels[0], pipe.vae.config.block_out_channels[0]
        return activation_bytes(
            width=request.width, height=request.height, unet_channels=unet, vae_channels=vae,
            element_bytes=element_bytes, guidance=request.cfg_scale > 1, controlnets=len(request.controlnets),
        )


class FlowFamily:
    """FLUX and SD3 (`kiln.engine.flow_pipelines`): their pipelines encode the prompts; no
    weighting, embeddings, refiners or control modes (refused by `check`)."""

    def view_class(self, cached: DiffusionPipeline, request: GenerationRequest) -> type[DiffusionPipeline]:
        return flow.flow_pipeline_class(cached, request)

    def check(self, cached: DiffusionPipeline, request: GenerationRequest) -> None:
        flow.check_flow_request(cached, request)

    def prime(
        self, pipe: DiffusionPipeline, requests: list[GenerationRequest], tokens: Tokens, memo: PromptMemo
    ) -> None:
        """All through one `encode_prompt` call (`flow_pipelines.flow_prompt_kwargs`)."""
        _prime(requests, tokens, memo, lambda pairs, clip_skip: flow.flow_prompt_kwargs(
            pipe, requests[0].model.architecture, pairs, clip_skip, guidance=requests[0].cfg_scale > 1))

    def call_kwargs(
        self, pipe: DiffusionPipeline, request: GenerationRequest, tokens: Tokens, memo: PromptMemo
    ) -> dict[str, Any]:
        def encode() -> dict[str, Any]:
            try:
                [kwargs] = flow.flow_prompt_kwargs(
                    pipe, request.model.architecture, [(request.positive_prompt, request.negative_prompt)],
                    request.clip_skip, guidance=request.cfg_scale > 1)
            except Exception as exc:
                raise inference_error(exc) from exc
            return kwargs

        prompts = memo.get(_prompt_key(request), encode)
        return flow.flow_control_kwargs(request, mode_call_kwargs(request, {**prompts, **_common_kwargs(request)}))

    def controlnet(self, nets: list[torch.nn.Module], request: GenerationRequest) -> torch.nn.Module:
        return flow.flow_controlnet(nets, request)

    def load_controlnet(self, model: ModelSpec, device: str, dtype: torch.dtype) -> torch.nn.Module:
        return flow.load_flow_controlnet(model, device, dtype)

    def activation_bytes(
        self, pipe: DiffusionPipeline | None, request: GenerationRequest, element_bytes: int
    ) -> tuple[int, int]:
        return flow.flow_activation_bytes(pipe, request, element_bytes)


SD = StableDiffusionFamily()
FLOW = FlowFamily()


PromptPairs = list[tuple[str, str | None]]


def _prime(
    requests: list[GenerationRequest],
    tokens: Tokens,
    memo: PromptMemo,
    encode: Callable[[PromptPairs, int], list[dict[str, Any]] | None],
) -> None:
    """Put into `memo` what `encode(pairs, clip_skip)` gives the distinct (positive, negative)
    pairs of the unweighted `requests` not in it yet, where one clip skip has several (a batch
    of one keeps the encoding of a request alone, byte for byte). `encode` gives one result per
    pair, or None to decline; when it fails, the requests are left to be encoded, and to fail,
    one by one."""
    groups: dict[int, dict[Hashable, tuple[str, str | None]]] = {}
    for request in requests:
        key = _prompt_key(request)
        if request.prompt_weighting is None and key not in memo:
            negative = request.negative_prompt
            groups.setdefault(request.clip_skip, {})[key] = (
                expand_triggers(request.positive_prompt, tokens, None),
                None if negative is None else expand_triggers(negative, tokens, None))
    for clip_skip, pairs in groups.items():
        if len(pairs) < 2:
            continue
        try:
            encoded = encode(list(pairs.values()), clip_skip)
        except Exception:  # noqa: BLE001 - each request meets its own error when encoded alone
            log.debug("encoding %d prompts together failed; one by one", len(pairs), exc_info=True)
            continue
        if encoded is not None:
            for key, kwargs in zip(pairs, encoded, strict=True):
                memo.put(key, kwargs)


def _prompt_key(request: GenerationRequest) -> Hashable:
    """What a request's prompt embeddings depend on within one setup."""
    return (request.positive_prompt, request.negative_prompt, request.clip_skip,
            request.cfg_scale > 1, request.prompt_weighting)


def _common_kwargs(request: GenerationRequest) -> dict[str, Any]:
    return {
        "width": request.width,
        "height": request.height,
        "num_inference_steps": request.steps,
        "guidance_scale": request.cfg_scale,
        "output_type": "pil",
    }


def inference_error(exc: Exception) -> InferenceError:
    """`exc`, raised by a library while generating, as the InferenceError a client gets."""
    if isinstance(exc, torch.OutOfMemoryError):
        error = InferenceError("out of device memory while generating; try a smaller image")
    else:
        error = InferenceError(f"generation failed: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error
