"""IP-Adapters: image prompts for SD 1.x and SDXL UNets.

An IP-Adapter adds, beside each cross-attention layer's keys and values of the text, keys and
values of a guide image embedded by a CLIP image encoder, scaled by the adapter's weight.
diffusers loads adapters into a UNet (`load_ip_adapter`) and embeds images (`encode_image`);
Kiln decides what is resident and passes each image's embeddings to the call itself
(`ip_adapter_image_embeds`), so the images of one batched call may each have their own guides.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import torch
from diffusers import DiffusionPipeline
from diffusers.models.embeddings import ImageProjection
from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

from kiln.errors import ModelLoadError
from kiln.generation import GenerationRequest, IpAdapterInput, ModelSpec

from .residency import Lease, Residency, file_bytes

ImageEncoder = tuple[CLIPVisionModelWithProjection, CLIPImageProcessor]

# diffusers warns at every load that no image encoder comes with the adapters: Kiln embeds the
# guide images itself, with the encoder registered beside each adapter.
logging.getLogger("diffusers.loaders.ip_adapter").setLevel(logging.ERROR)


class IpAdapters:
    """The IP-Adapters loaded into the resident pipelines, and their image encoders.

    A pipeline holds one set of adapters at a time, as an entry of `residency` that is a child
    of the pipeline's: `activate` loads a batch's set when it differs from the one held
    (reading the adapters' files again; evicting the old set unloads it), sets the weights, and
    unloads every adapter for a batch without any, so that its images are exactly those of the
    bare model. Image encoders are entries of their own, shared by the adapters that use them.
    Calls must be serialised (the engine's worker).
    """

    def __init__(self, residency: Residency, device: str, dtype: torch.dtype) -> None:
        self._residency = residency
        self._device = device
        self._dtype = dtype

    def activate(
        self, lease: Lease, pipe: DiffusionPipeline, pipe_key: Hashable, adapters: tuple[IpAdapterInput, ...]
    ) -> None:
        """Make exactly `adapters`, in order and with their weights, active on `pipe` (the
        resident pipeline held under `pipe_key`), pinned by `lease`.

        Raises ModelLoadError when an adapter's file cannot be read or does not fit the UNet.
        """
        wanted = ("ipadapters", pipe_key, tuple((adapter.model.air, adapter.model.path) for adapter in adapters))
        for key in self._residency.children(pipe_key):
            if isinstance(key, tuple) and key[0] == "ipadapters" and key != wanted:
                self._residency.evict(key)
        if not adapters:
            return
        lease.get(
            wanted, lambda: _load(pipe, [adapter.model for adapter in adapters]),
            size=lambda _: _loaded_bytes(pipe),
            expected_size=sum(file_bytes(adapter.model.path) for adapter in adapters),
            parent=pipe_key, on_evict=lambda _: pipe.unload_ip_adapter(),
        )
        pipe.set_ip_adapter_scale([adapter.weight for adapter in adapters])

    def call_kwargs(self, lease: Lease, pipe: DiffusionPipeline, request: GenerationRequest) -> dict[str, Any]:
        """`ip_adapter_image_embeds` for `request` alone on `pipe` (its adapters active): per
        adapter, the embeddings of its guide images, [unconditional; conditional] with
        classifier-free guidance (see `kiln.engine.grouping` for how calls batch them)."""
        if not request.ip_adapters:
            return {}
        # diffusers repeats given embeddings for every prompt of a call (one guide for all);
        # these are per image already, batched by `kiln.engine.grouping`: passed through as they are
        pipe.prepare_ip_adapter_image_embeds = _as_given
        projections = pipe.unet.encoder_hid_proj.image_projection_layers
        embeds = []
        with torch.inference_mode():
            for adapter, projection in zip(request.ip_adapters, projections, strict=True):
                pipe.image_encoder, pipe.feature_extractor = self._encoder(lease, adapter.model)
                # Plain adapters project the encoder's image embedding; Plus and full-face ones
                # its penultimate hidden states (diffusers' own rule).
                hidden = not isinstance(projection, ImageProjection)
                cond, uncond = pipe.encode_image(list(adapter.guide_images), self._device, 1, hidden)
                cond, uncond = cond[None], uncond[None]  # (1, guides, ...): one image of the batch
                embeds.append(torch.cat([uncond, cond]) if request.cfg_scale > 1 else cond)
        return {"ip_adapter_image_embeds": embeds}

    def _encoder(self, lease: Lease, model: ModelSpec) -> ImageEncoder:
        folder = model.config_path
        if folder is None:
            raise ModelLoadError(f"IP-Adapter {model.air} has no image encoder registered: register it again "
                                 "with `kiln models add PATH --image-encoder FOLDER`",
                                 parameter="ipAdapters", air=model.air)

        def load() -> ImageEncoder:
            try:
                encoder = CLIPVisionModelWithProjection.from_pretrained(
                    folder, dtype=self._dtype, local_files_only=True).to(self._device).eval()
            except Exception as exc:  # missing or unreadable folder, not a CLIP vision model
                raise ModelLoadError(
                    f"the image encoder of IP-Adapter {model.air} could not be loaded from {folder}: "
                    f"{type(exc).__name__}: {exc}", parameter="ipAdapters", air=model.air,
                ) from exc
            return encoder, _processor(Path(folder), encoder.config.image_size)

        return lease.get(("image_encoder", folder), load, expected_size=file_bytes(folder))


def _as_given(ip_adapter_image: Any, ip_adapter_image_embeds: list[torch.Tensor], device: Any,
              num_images_per_prompt: int, do_classifier_free_guidance: bool) -> list[torch.Tensor]:
    """`prepare_ip_adapter_image_embeds` for embeddings already laid out for the whole call."""
    return [embeds.to(device) for embeds in ip_adapter_image_embeds]


def _processor(folder: Path, image_size: int) -> CLIPImageProcessor:
    """The encoder folder's own image processor, else CLIP's at the encoder's image size (what
    diffusers makes when a pipeline has none)."""
    if (folder / "preprocessor_config.json").is_file():
        return CLIPImageProcessor.from_pretrained(folder, local_files_only=True)
    return CLIPImageProcessor(size=image_size, crop_size=image_size)


def read_ip_adapter(path: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """An IP-Adapter `.safetensors` file as diffusers takes it: {"image_proj": ..., "ip_adapter": ...}."""
    from safetensors.torch import load_file

    state: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
    for key, tensor in load_file(path).items():
        part, _, name = key.partition(".")
        if part in state:
            state[part][name] = tensor
    return state


def _load(pipe: DiffusionPipeline, models: list[ModelSpec]) -> tuple[str, ...]:
    state_dicts = []
    for model in models:
        try:
            state = read_ip_adapter(model.path)
        except Exception as exc:
            raise ModelLoadError(f"IP-Adapter {model.air} could not be read from {model.path}: "
                                 f"{type(exc).__name__}: {exc}", parameter="ipAdapters", air=model.air) from exc
        if not (state.get("image_proj") and state.get("ip_adapter")):
            raise ModelLoadError(f"{model.path} is not an IP-Adapter (no image_proj.* and ip_adapter.* tensors)",
                                 parameter="ipAdapters", air=model.air)
        state_dicts.append(state)
    try:
        pipe.load_ip_adapter(state_dicts, subfolder=[None] * len(models), weight_name=[None] * len(models),
                             image_encoder_folder=None)
    except Exception as exc:  # shapes of another UNet
        if pipe.unet.encoder_hid_proj is not None:
            pipe.unload_ip_adapter()
        airs = ", ".join(model.air for model in models)
        raise ModelLoadError(
            f"IP-Adapter {airs} does not fit this model's UNet ({type(exc).__name__}: {exc}): it was made "
            "for another architecture", parameter="ipAdapters", air=models[0].air,
        ) from exc
    return tuple(model.air for model in models)


def _loaded_bytes(pipe: DiffusionPipeline) -> int:
    """Bytes of the adapters' own weights in the UNet: projections and attention processors."""
    unet = pipe.unet
    modules = [unet.encoder_hid_proj, *(p for p in unet.attn_processors.values() if isinstance(p, torch.nn.Module))]
    return sum(t.numel() * t.element_size() for module in modules for t in module.parameters())
