"""The engine: turns batches of one-seed GenerationRequests into images on one device."""

from __future__ import annotations

import copy
import logging
from collections.abc import Hashable, Sequence
from dataclasses import replace
from typing import Any

import torch
from diffusers import DiffusionPipeline
from PIL import Image

from kiln.errors import InferenceError, KilnError
from kiln.generation import GenerationRequest, ModelSpec
from kiln.progress import StepListener

from .devices import (
    DeviceOptions,
    default_memory_budget,
    free_memory,
    set_vae_tiling,
)
from .embeddings import TextualInversions
from .families import SD, PromptMemo, Tokens, family, inference_error
from .grouping import Unit, batched_kwargs, call_key, setup_key
from .ip_adapters import IpAdapters
from .loras import LoraAdapters
from .modes import check_mode_inputs, check_request, unchanged_images
from .refiner import Refinement, check_refinable, ensemble_kwargs, refine
from .residency import Lease, Residency
from .resident_models import ResidentModels, pipeline_key, refiner_key
from .scheduling import build_scheduler
from .steps import StepReporter

log = logging.getLogger(__name__)

Result = Image.Image | KilnError


class Engine:
    """Generates images with resident diffusers pipelines, batching compatible requests into
    one pipeline call.

    Device paths (`kiln.engine.devices`): `device` None picks "cuda" when available, else
    "cpu"; `dtype` "auto" is fp16 on CUDA (bf16 for FLUX and SD3) and fp32 on a CPU ("bf16" on
    either, "fp32"); `cpu_offload` "model" or "sequential" keeps FLUX and SD3 weights in CPU
    memory between uses (needs an accelerator); attention runs through PyTorch SDPA;
    `channels_last` (None: on CUDA only) stores the UNet and VAE channels-last; `compile`
    compiles the UNet (or transformer) with `torch.compile`; images of more than
    `vae_tiling_pixels` pixels are decoded in VAE tiles.

    Families (`kiln.engine.families`): SD 1.x and SDXL run UNet pipelines, FLUX and SD3
    flow-matching transformer pipelines (`kiln.engine.flow_pipelines`); each family picks the
    pipeline class of a request, its prompt embeddings and ControlNets, and what it refuses.

    Models (pipelines, refiners, VAEs, ControlNets, LoRAs, embeddings, IP-Adapters and their
    image encoders, annotators) share one residency
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
        cpu_offload: str = "none",
    ) -> None:
        self._options = DeviceOptions.resolve(
            device, dtype, channels_last, compile, vae_tiling_pixels, cpu_offload
        )
        self._memory_budget = memory_budget
        self._residency = Residency(
            memory_budget or default_memory_budget(self._options.device), self._options.device
        )
        self._models = ResidentModels(self._options)
        self._loras = LoraAdapters(self._residency, max_loras_per_model)
        self._embeddings = TextualInversions(self._residency)
        self._ip_adapters = IpAdapters(self._residency, self._options.device, self._options.dtype)
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
        return self._models.pipeline(self._residency, model)

    def generate(self, request: GenerationRequest) -> list[Image.Image]:
        """One RGB image of `request.width` x `request.height` per seed, in seed order, each
        from its own pipeline call (a batch of one): the images do not depend on how many
        seeds were asked for, and equal what `generate_batch` gives a batch of one.

        Raises the KilnError of the first seed that fails (see `generate_batch`).
        """
        check_request(request)
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
        LoRAs, ControlNet settings, VAE, embeddings, refiner and IP-Adapters with their weights,
        and prompt and image embeddings of the same shape) run in one (with a refiner, one base
        call and one refiner call), each image with its own generator seeded with its seed: its
        initial noise is what it would be alone, and it equals the request run alone within a
        few grey levels (the UNet's arithmetic differs slightly with the batch size). The same
        batch on the same device and thread count gives identical pixels, and a batch of one is
        exactly the request alone. Others run in separate calls. If a shared call fails, its requests are
        run one by one, so that only the failing one gets the error.

        In the "image" and "inpaint" modes, strength 0 gives `init_image` itself without
        running. Errors: InvalidRequestError (bad size, steps, seed, scheduler, clip skip,
        prompt syntax, mode inputs, a refiner after a pipeline that cannot hand over),
        UnsupportedError (what the model's architecture cannot honour: `kiln.architectures`),
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
                check_request(request)
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
                        results[index] = inference_error(exc.with_traceback(None))
        assert all(result is not None for result in results)
        return results  # type: ignore[return-value]

    def max_batch(self, request: GenerationRequest) -> int:
        """How many images of `request`'s model and size fit in one call, at least 1.

        (available memory − activations per call) // activations per image, where the
        activations are the family's estimate (`kiln.engine.devices.activation_bytes`,
        `flow_pipelines.flow_activation_bytes`) for this model (the resident one's widths, else
        its architecture's) at this size, and the available memory is the device's free memory
        (`devices.free_memory`), and no more than `memory_budget` − `resident_bytes` when a
        memory budget was given.
        """
        model = request.model
        pipe = self.pipeline(model) if pipeline_key(model) in self._residency.keys() else None
        per_image, per_call = family(model.architecture).activation_bytes(
            pipe, request, self._options.element_bytes)
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
            cached = self._models.pipeline(lease, first.model)
        except KilnError as error:
            for index in indices:
                results[index] = error
            return
        for index in indices:
            request = requests[index]
            try:
                family(request.model.architecture).check(cached, request)
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
            self._loras.activate(lease, cached, pipeline_key(first.model), first.loras)
            tokens = self._embeddings.activate(lease, cached, pipeline_key(first.model), first.embeddings)
            self._ip_adapters.activate(lease, cached, pipeline_key(first.model), first.ip_adapters)
            pipe = self._view(lease, cached, first)
            refiner = self._refiner_view(lease, first) if first.refiner is not None else None
        except KilnError as error:
            for index in runnable:
                results[index] = error
            return
        calls: dict[Hashable, list[Unit]] = {}
        memo, refiner_memo = PromptMemo(), PromptMemo()
        batch = [requests[index] for index in runnable]
        family(first.model.architecture).prime(pipe, batch, tokens, memo)
        if refiner is not None:
            SD.prime(refiner[0], batch, refiner[1], refiner_memo)
        for index in runnable:
            request = requests[index]
            try:
                kwargs = {**family(request.model.architecture).call_kwargs(pipe, request, tokens, memo),
                          **self._ip_adapters.call_kwargs(lease, pipe, request)}
                stage = None
                if refiner is not None:
                    refiner_pipe, refiner_tokens = refiner
                    kwargs, refiner_kwargs = ensemble_kwargs(
                        request, kwargs, SD.prompts(refiner_pipe, request, refiner_tokens, refiner_memo))
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
        architecture = request.model.architecture
        scheduler = build_scheduler(cached.scheduler, request.scheduler, architecture, request.mode)
        cls = family(architecture).view_class(cached, request)
        if type(cached) is cls:
            # The shallow copy shares the weights; assigning the scheduler replaces the copy's
            # config dict rather than mutating the resident pipeline's.
            pipe = copy.copy(cached)
        else:
            components: dict[str, Any] = {}
            if request.controlnets:
                nets = [self._models.controlnet(lease, control.model) for control in request.controlnets]
                components["controlnet"] = family(architecture).controlnet(nets, request).to(self.device)
            pipe = cls.from_pipe(cached, **components)
            pipe.set_progress_bar_config(disable=True)
        pipe.scheduler = scheduler
        if request.vae is not None:  # like the scheduler, replaces the view's own config entry
            pipe.vae = self._models.vae(lease, cached, request.vae)
        if request.refiner is not None:
            check_refinable(pipe)
        return pipe

    def _refiner_view(self, lease: Lease, request: GenerationRequest) -> tuple[DiffusionPipeline, Tokens]:
        """A view of the request's resident refiner, with its scheduler and VAE, and the tokens
        of the request's embeddings in the refiner's text encoder."""
        assert request.refiner is not None
        model = request.refiner.model
        cached = self._models.refiner(lease, model)
        tokens = self._embeddings.activate(lease, cached, refiner_key(model), request.embeddings)
        pipe = copy.copy(cached)
        pipe.scheduler = build_scheduler(cached.scheduler, request.scheduler)
        if request.vae is not None:
            pipe.vae = self._models.vae(lease, cached, request.vae)
        return pipe, tokens

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
            return inference_error(exc.with_traceback(None))
        for unit, image in zip(units, images, strict=True):
            results[unit.index] = image if image.mode == "RGB" else image.convert("RGB")
        return None
