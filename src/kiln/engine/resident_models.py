"""The models the engine loads into its residency on first use, prepared for its device:
pipelines, SDXL refiners, ControlNets and replacement VAEs, each under its own key and with the
size it will take, so that room is made before it loads."""

from __future__ import annotations

from collections.abc import Hashable

import torch
from diffusers import AutoencoderKL, DiffusionPipeline

from kiln.errors import ModelLoadError
from kiln.generation import ModelSpec

from .devices import DeviceOptions, prepare_module, prepare_pipeline
from .families import family
from .pipelines import load_pipeline, load_refiner, load_vae
from .residency import Lease, Residency, file_bytes


def pipeline_key(model: ModelSpec) -> Hashable:
    """The residency key of `model`'s pipeline (its LoRAs, embeddings and IP-Adapters are its
    children)."""
    return ("pipeline", model.air, model.path)


def refiner_key(model: ModelSpec) -> Hashable:
    return ("refiner", model.air, model.path)


class ResidentModels:
    """Gets models through a `Residency` or a `Lease` of it (which pins what it gets), loading
    each on first use; ModelLoadError naming the model when one cannot be loaded."""

    def __init__(self, options: DeviceOptions) -> None:
        self._options = options

    def pipeline(self, holder: Residency | Lease, model: ModelSpec) -> DiffusionPipeline:
        def load() -> DiffusionPipeline:
            options, architecture = self._options, model.architecture
            pipe = load_pipeline(model, options.device, options.dtype_for(architecture),
                                 options.offload_for(architecture))
            prepare_pipeline(pipe, options)
            return pipe

        return holder.get(pipeline_key(model), load, expected_size=self.expected_size(model))

    def refiner(self, lease: Lease, model: ModelSpec) -> DiffusionPipeline:
        def load() -> DiffusionPipeline:
            pipe = load_refiner(model, self._options.device, self._options.dtype)
            prepare_pipeline(pipe, self._options)
            return pipe

        return lease.get(refiner_key(model), load, expected_size=self.expected_size(model))

    def controlnet(self, lease: Lease, model: ModelSpec) -> torch.nn.Module:
        def load() -> torch.nn.Module:
            net = family(model.architecture).load_controlnet(
                model, self._options.device, self._options.dtype_for(model.architecture))
            prepare_module(net, self._options)
            return net

        return lease.get(("controlnet", model.air, model.path), load, expected_size=self.expected_size(model))

    def vae(self, lease: Lease, cached: DiffusionPipeline, model: ModelSpec) -> AutoencoderKL:
        """The VAE of `model`, checked to fit `cached`'s latents (ModelLoadError naming `vae`)."""
        def load() -> AutoencoderKL:
            vae = load_vae(model, self._options.device, self._options.dtype)
            prepare_module(vae, self._options)
            vae.enable_slicing()
            return vae

        vae = lease.get(("vae", model.air, model.path), load, expected_size=self.expected_size(model))
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

    def expected_size(self, model: ModelSpec) -> int:
        """Bytes `model` will take once loaded in the engine's dtype."""
        return file_bytes(model.path, self._options.element_bytes)
