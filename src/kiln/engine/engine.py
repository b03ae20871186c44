"""The engine: turns batches of one-seed GenerationRequests into images on one device."""

from __future__ import annotations

import copy
import logging
from collections.abc import Hashable, Sequence
from dataclasses import replace
from typing import Any

import torch
from diffusers import AutoencoderKL, ControlNetModel, DiffusionPipeline
from PIL import Image

from kiln.errors import InferenceError, InvalidRequestError, KilnError, ModelLoadError
from kiln.generation import GenerationRequest, ModelSpec
from kiln.progress import StepListener

from .controlnets import ModedMultiControlNet, control_call_kwargs, load_controlnet
from .devices import (
    DeviceOptions,
    activation_bytes,
    default_memory_budget,
    free_memory,
    prepare_module,
    prepare_pipeline,
    set_vae_tiling,
)
from .embeddings import TextualInversions, expand_triggers
from .grouping import Unit, batched_kwargs, call_key, setup_key
from .loras import LoraAdapters
from .modes import check_mode_inputs, check_pipeline_mode, mode_call_kwargs, unchanged_images
from .pipeline_classes import pipeline_class
from .pipelines import load_pipeline, load_refiner, load_vae
from .prompts import PromptKwargs, encode_prompts
from .refiner import Refinement, check_refinable, ensemble_kwargs, refine
from .residency import Lease, Residency, file_bytes
from .scheduling import build_scheduler
from .steps import StepReporter

log = logging.getLogger(__name__)

_MAX_SEED = 2**63 - 1

_DEFAULT_CHANNELS = {"sd1x": (320, 128), "sdxl": (320, 128)}
"""(UNet, VAE) first-block widths of an architecture, for `max_batch` before a model loads."""

Result = Image.Image | KilnError


class Engine:
    """Generates images with resident diffusers pipelines, batching compatible requests into
    one pipeline call.

    Device paths (`kiln.engine.devices`): `device` None picks "cuda" when available, else
    "cpu"; `dtype` "auto" is fp16 on CUDA and fp32 on a CPU ("bf16" on either, "fp32");
    attention runs through PyTorch SDPA; `channels_last` (None: on CUDA only) stores the UNet
    and VAE channels-last; `compile` compiles the UNet with `torch.compile`; images of more
    than `vae_tiling_pixels` pixels are decoded in VAE tiles.

    Models (pipelines, refiners, VAEs, ControlNets, LoRAs, embeddings, annotators) share one
    residency
    (`kiln.engine.residency`) of `memory_budget` bytes (None: a share of the device's memory),
    least recently used evicted first; each pipeline keeps at most `max_loras_per_model` LoRAs.

    Calls are meant to be serialised on one worker thread. Each batch gets its own scheduler
    on a view of the resident pipeline, so no request's sampler settings leak into another's.

    Example:
        >>> engine = Engine()
        >>> images = engine.generate_batch([request_a, request_b])  # doctest: +SKIP
    """

    def __init__(
        self,
        device: str | None = None,
        *,
        dtype: str = "auto",
        memory_budget: int | None = None,
        channels_last: bool | None = None,
        compile: bool = False,
        vae_tiling_pixels: int = 1536 * 1536,
        max_loras_per_model: int = 8,
    ) -> None:
        self._options = DeviceOptions.resolve(
            device, dtype, channels_last, compile, vae_tiling_pixels
        )
        self._memory_budget = memory_budget
        self._residency = Residency(
            memory_budget or default_memory_budget(self._options.device), self._options.device
        )
        self._loras = LoraAdapters(self._residency, max_loras_per_model)
        self._embeddings = TextualInversions(self._residency)
        self._pipeline_calls = 0

    @property
    def device(self) -> str:
        """The torch device the engine runs on, e.g. "cpu" or "cuda"."""
        return self._options.device

    @property
    def loaded_models(self) -> tuple[str, ...]:
        """Airs of the pipelines held in memory, least recently used first."""
        keys = self._residency.keys()
        return tuple(key[1] for key in keys if isinstance(key, tuple) and key[0] == "pipeline")

    @property
    def resident_bytes(self) -> int:
        """Bytes of the models held now (pipelines, ControlNets, LoRAs, annotators)."""
        return self._residency.resident_bytes

    @property
    def evictions(self) -> int:
        """Models evicted since the engine started."""
        return self._residency.evictions

    @property
    def pipeline_calls(self) -> int:
        """Pipeline calls run since the engine started (a batch of N runs in one or more)."""
        return self._pipeline_calls

    def load(self, model: ModelSpec) -> None:
        """Load `model` into residency now, so a later request does not wait for it.

        Raises ModelLoadError if it cannot be loaded.
        """
        self.pipeline(model)

    def pipeline(self, model: ModelSpec) -> DiffusionPipeline:
        """The resident pipeline of `model`, loaded first if needed (ModelLoadError if it
        cannot be). Shared: run it through `generate_batch`, do not reconfigure it."""
        return self._residency.get(_pipeline_key(model), lambda: self._load_pipeline(model),
                                   expected_size=self._expected_size(model))

    def generate(self, request: GenerationRequest) -> list[Image.Image]:
        """One RGB image of `request.width` x `request.height` per seed, in seed order, each
        from its own pipeline call (a batch of one): the images do not depend on how many
        seeds were asked for, and equal what `generate_batch` gives a batch of one.

        Raises the KilnError of the first seed that fails (see `generate_batch`).
        """
        _check_request(request)
        images = []
        for seed in request.seeds:
            [result] = self.generate_batch([replace(request, seeds=(seed,))])
            if isinstance(result, KilnError):
                raise result
            images.append(result)
        return images

    def generate_batch(
        self, requests: Sequence[GenerationRequest], on_step: StepListener | None = None
    ) -> list[Result]:
        """Result i is request i's RGB image of its width x height, or the KilnError that
        failed that request alone; one request's fault never fails another, and nothing is
        raised for it.

        Every request has exactly one seed (ValueError otherwise). Requests that can share a
        pipeline call (the same model, mode, size, steps, scheduler, CFG, clip skip, strength,
        LoRAs, ControlNet settings, VAE, embeddings and refiner, and prompt embeddings of the
        same shape) run in one (with a refiner, one base call and one refiner call),
        each image with its own generator seeded with its seed: its initial noise is what it
        would be alone, and it equals the request run alone within a few grey levels (the
        UNet's arithmetic differs slightly with the batch size). The same batch on the same
        device and thread count gives identical pixels, and a batch of one is exactly the
        request alone. Others run in separate calls. If a shared call fails, its requests are
        run one by one, so that only the failing one gets the error.

        In the "image" and "inpaint" modes, strength 0 gives `init_image` itself without
        running. Errors: InvalidRequestError (bad size, steps, seed, scheduler, clip skip,
        prompt syntax, mode inputs, a refiner after a pipeline that cannot hand over),
        ModelLoadError (model, LoRA, ControlNet, VAE, embedding or refiner), and
        InferenceError for failures while generating, including running out of memory.

        `on_step`, when given, receives each image's progress (`kiln.progress.StepProgress`,
        `index` its position in `requests`) after each denoising step, on this thread; a
        batched call that fails and is rerun image by image reports their steps again. Without
        it the pipeline runs with no step callback at all.
        """
        if any(len(request.seeds) != 1 for request in requests):
            raise ValueError("generate_batch takes requests of exactly one seed each")
        results: list[Result | None] = [None] * len(requests)
        setups: dict[Hashable, list[int]] = {}
        for index, request in enumerate(requests):
            try:
                _check_request(request)
                check_mode_inputs(request)
            except KilnError as error:
                results[index] = error
                continue
            setups.setdefault(setup_key(request), []).append(index)
        for indices in setups.values():
            try:
                with self._residency.lease() as lease:
                    self._run_setup(lease, requests, indices, results, on_step)
            except Exception as exc:  # a fault of the engine or a library, not of one request
                log.exception("preparing a batch of %d failed", len(indices))
                for index in indices:
                    if results[index] is None:
                        results[index] = _inference_error(exc.with_traceback(None))
        assert all(result is not None for result in results)
        return results  # type: ignore[return-value]

    def max_batch(self, request: GenerationRequest) -> int:
        """How many images of `request`'s model and size fit in one call, at least 1.

        (available memory − activations per call) // activations per image, where the
        activations are `kiln.engine.devices.activation_bytes` for this model at this size,
        and the available memory is the device's free memory (`devices.free_memory`), and no
        more than `memory_budget` − `resident_bytes` when a memory budget was given.
        """
        unet_channels, vae_channels = self._channels(request.model)
        per_image, per_call = activation_bytes(
            width=request.width,
            height=request.height,
            unet_channels=unet_channels,
            vae_channels=vae_channels,
            element_bytes=self._options.element_bytes,
            guidance=request.cfg_scale > 1,
            controlnets=len(request.controlnets),
        )
        available = free_memory(self.device)
        if self._memory_budget is not None:
            available = min(available, self._memory_budget - self.resident_bytes)
        return max(1, (available - per_call) // per_image)

    def annotate(self, kind: str, path: str, image: Image.Image, options: Any = None) -> Image.Image:
        """The guide image of preprocessor `kind` for `image`, from the annotator model at
        `path` (see `kiln.engine.annotators.annotate`), loaded into this engine's residency."""
        from .annotators import annotate  # each annotator imports its libraries on first use

        return annotate(kind, path, image, device=self.device, options=options,
                        residency=self._residency)

    # -- one setup: requests that share a pipeline view and LoRA state ----------------------

    def _run_setup(
        self,
        lease: Lease,
        requests: Sequence[GenerationRequest],
        indices: list[int],
        results: list[Result | None],
        on_step: StepListener | None,
    ) -> None:
        first = requests[indices[0]]
        runnable = []
        try:
            cached = lease.get(_pipeline_key(first.model), lambda: self._load_pipeline(first.model),
                               expected_size=self._expected_size(first.model))
        except KilnError as error:
            for index in indices:
                results[index] = error
            return
        for index in indices:
            request = requests[index]
            try:
                check_pipeline_mode(cached, request)
            except KilnError as error:
                results[index] = error
                continue
            unchanged = unchanged_images(request)
            if unchanged is not None:  # strength 0: nothing to transform, so nothing to run
                results[index] = unchanged[0]
            else:
                runnable.append(index)
        if not runnable:
            return
        try:
            # before the prompts are encoded: a LoRA may adapt the text encoder too
            self._loras.activate(lease, cached, _pipeline_key(first.model), first.loras)
            tokens = self._embeddings.activate(lease, cached, _pipeline_key(first.model), first.embeddings)
            pipe = self._view(lease, cached, first)
            refiner = self._refiner_view(lease, first) if first.refiner is not None else None
        except KilnError as error:
            for index in runnable:
                results[index] = error
            return
        calls: dict[Hashable, list[Unit]] = {}
        for index in runnable:
            request = requests[index]
            try:
                kwargs = self._call_kwargs(pipe, request, tokens)
                stage = None
                if refiner is not None:
                    refiner_pipe, refiner_tokens = refiner
                    kwargs, refiner_kwargs = ensemble_kwargs(
                        request, kwargs, self._prompts(refiner_pipe, request, refiner_tokens))
                    stage = Refinement(refiner_pipe, refiner_kwargs)
            except KilnError as error:
                results[index] = error
                continue
            unit = Unit(index, request, kwargs, stage)
            calls.setdefault(call_key(kwargs, None if stage is None else stage.kwargs), []).append(unit)
        for units in calls.values():
            self._run_call(pipe, units, results, on_step)

    def _view(self, lease: Lease, cached: DiffusionPipeline, request: GenerationRequest) -> DiffusionPipeline:
        """A private view of the resident pipeline, of the class of the request's mode, with
        the request's own scheduler and VAE. Every view shares the resident weights.
        """
        scheduler = build_scheduler(cached.scheduler, request.scheduler)
        cls = pipeline_class(request.model.architecture, request.mode, bool(request.controlnets))
        if type(cached) is cls:
            # The shallow copy shares the weights; assigning the scheduler replaces the copy's
            # config dict rather than mutating the resident pipeline's.
            pipe = copy.copy(cached)
        else:
            components: dict[str, Any] = {}
            if request.controlnets:
                nets = [self._controlnet(lease, control.model) for control in request.controlnets]
                modes = [control.control_mode for control in request.controlnets]
                controlnet = ModedMultiControlNet(nets, modes, guidance=request.cfg_scale > 1)
                components["controlnet"] = controlnet.to(self.device)
            pipe = cls.from_pipe(cached, **components)
            pipe.set_progress_bar_config(disable=True)
        pipe.scheduler = scheduler
        if request.vae is not None:  # like the scheduler, replaces the view's own config entry
            pipe.vae = self._vae(lease, cached, request.vae)
        if request.refiner is not None:
            check_refinable(pipe)
        return pipe

    def _refiner_view(
        self, lease: Lease, request: GenerationRequest
    ) -> tuple[DiffusionPipeline, dict[str, tuple[str, ...]]]:
        """A view of the request's resident refiner, with its scheduler and VAE, and the tokens
        of the request's embeddings in the refiner's text encoder."""
        assert request.refiner is not None
        model = request.refiner.model
        key = ("refiner", model.air, model.path)

        def load() -> DiffusionPipeline:
            pipe = load_refiner(model, self.device, self._options.dtype)
            prepare_pipeline(pipe, self._options)
            return pipe

        cached = lease.get(key, load, expected_size=self._expected_size(model))
        tokens = self._embeddings.activate(lease, cached, key, request.embeddings)
        pipe = copy.copy(cached)
        pipe.scheduler = build_scheduler(cached.scheduler, request.scheduler)
        if request.vae is not None:
            pipe.vae = self._vae(lease, cached, request.vae)
        return pipe, tokens

    def _prompts(
        self, pipe: DiffusionPipeline, request: GenerationRequest, tokens: dict[str, tuple[str, ...]]
    ) -> PromptKwargs:
        """The prompt embeddings of `request` in `pipe`, its trigger words replaced by the
        tokens of its embeddings."""
        weighting = request.prompt_weighting
        negative = request.negative_prompt
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
            raise _inference_error(exc) from exc

    def _call_kwargs(
        self, pipe: DiffusionPipeline, request: GenerationRequest, tokens: dict[str, tuple[str, ...]]
    ) -> dict[str, Any]:
        """The keyword arguments of `request`'s pipeline call alone (without the generator)."""
        kwargs = {
            **self._prompts(pipe, request, tokens),
            "width": request.width,
            "height": request.height,
            "num_inference_steps": request.steps,
            "guidance_scale": request.cfg_scale,
            "output_type": "pil",
        }
        return control_call_kwargs(request, mode_call_kwargs(request, kwargs))

    def _run_call(self, pipe: DiffusionPipeline, units: list[Unit], results: list[Result | None],
                  on_step: StepListener | None) -> None:
        """One pipeline call for `units`; if it fails with several, each is run alone."""
        failure = self._call(pipe, units, results, on_step)
        if failure is None:
            return
        if len(units) == 1:
            results[units[0].index] = failure
            return
        log.warning("a batched call of %d images failed (%s); running them one by one", len(units), failure)
        for unit in units:
            self._run_call(pipe, [unit], results, on_step)

    def _call(self, pipe: DiffusionPipeline, units: list[Unit], results: list[Result | None],
              on_step: StepListener | None) -> InferenceError | None:
        """Run the pipeline once for `units`, filling their results; or the error it raised."""
        kwargs = batched_kwargs(pipe, units)
        generators = [torch.Generator(self.device).manual_seed(unit.request.seeds[0]) for unit in units]
        first = units[0].request
        set_vae_tiling(pipe.vae, first.width, first.height, self._options.vae_tiling_pixels)
        if on_step is not None:
            indices = [unit.index for unit in units]
            kwargs = {**kwargs, "callback_on_step_end": StepReporter(
                indices, first.model.architecture, first.steps, on_step)}
        self._pipeline_calls += 1
        try:
            with torch.inference_mode():
                # A batch of one passes its generator as such: exactly the call of old.
                generator = generators if len(units) > 1 else generators[0]
                images = pipe(**kwargs, generator=generator).images
                if units[0].refine is not None:  # the base returned latents: the refiner finishes them
                    images = refine(units, images, generator, kwargs.get("callback_on_step_end"),
                                    self._options.vae_tiling_pixels)
        except Exception as exc:
            out_of_memory = isinstance(exc, torch.OutOfMemoryError)
            log.warning("a pipeline call of %d image(s) failed", len(units), exc_info=not out_of_memory)
            # Without its traceback, whose frames hold the call's activations on the device.
            return _inference_error(exc.with_traceback(None))
        for unit, image in zip(units, images, strict=True):
            results[unit.index] = image if image.mode == "RGB" else image.convert("RGB")
        return None

    # -- models -------------------------------------------------------------------------------

    def _load_pipeline(self, model: ModelSpec) -> DiffusionPipeline:
        pipe = load_pipeline(model, self.device, self._options.dtype)
        prepare_pipeline(pipe, self._options)
        return pipe

    def _controlnet(self, lease: Lease, model: ModelSpec) -> ControlNetModel:
        def load() -> ControlNetModel:
            net = load_controlnet(model, self.device, self._options.dtype)
            prepare_module(net, self._options)
            return net

        return lease.get(("controlnet", model.air, model.path), load,
                         expected_size=self._expected_size(model))

    def _vae(self, lease: Lease, cached: DiffusionPipeline, model: ModelSpec) -> AutoencoderKL:
        """The resident VAE of `model`, checked to fit `cached`'s latents (ModelLoadError)."""
        def load() -> AutoencoderKL:
            vae = load_vae(model, self.device, self._options.dtype)
            prepare_module(vae, self._options)
            vae.enable_slicing()
            return vae

        vae = lease.get(("vae", model.air, model.path), load, expected_size=self._expected_size(model))
        ours, theirs = vae.config, cached.vae.config
        if (ours.latent_channels, len(ours.block_out_channels)) != (
                theirs.latent_channels, len(theirs.block_out_channels)):
            raise ModelLoadError(
                f"VAE {model.air} makes {ours.latent_channels}-channel latents at 1/"
                f"{2 ** (len(ours.block_out_channels) - 1)} of the image size, the model's VAE "
                f"{theirs.latent_channels}-channel ones at 1/{2 ** (len(theirs.block_out_channels) - 1)}: "
                "use a VAE made for this model's architecture",
                parameter="vae", air=model.air,
            )
        return vae

    def _expected_size(self, model: ModelSpec) -> int:
        """Bytes `model` will take once loaded in the engine's dtype."""
        return file_bytes(model.path, self._options.element_bytes)

    def _channels(self, model: ModelSpec) -> tuple[int, int]:
        """(UNet, VAE) first-block widths: the resident model's, else its architecture's."""
        key = _pipeline_key(model)
        if key in self._residency.keys():
            pipe = self.pipeline(model)
            return pipe.unet.config.block_out_channels[0], pipe.vae.config.block_out_channels[0]
        return _DEFAULT_CHANNELS[model.architecture]


def _pipeline_key(model: ModelSpec) -> tuple[str, str, str]:
    return ("pipeline", model.air, model.path)


def _check_request(request: GenerationRequest) -> None:
    """Reject what diffusers would fail on obscurely, naming the parameter to fix."""
    for name, value in (("width", request.width), ("height", request.height)):
        if value <= 0 or value % 8:
            raise InvalidRequestError(
                f"{name} must be a positive multiple of 8, got {value}", parameter=name
            )
    if request.steps < 1:
        raise InvalidRequestError(
            f"steps must be at least 1, got {request.steps}", parameter="steps"
        )
    for seed in request.seeds:
        if not 0 <= seed <= _MAX_SEED:
            raise InvalidRequestError(
                f"seed must be between 0 and {_MAX_SEED}, got {seed}", parameter="seed"
            )


def _inference_error(exc: Exception) -> InferenceError:
    if isinstance(exc, torch.OutOfMemoryError):
        error = InferenceError("out of device memory while generating; try a smaller image")
    else:
        error = InferenceError(f"generation failed: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error
