"""The boundary between the executor and the engine: what an engine offers, and the real one.

Nothing here imports torch: `default_engine_factory` imports `kiln.engine` only when its factory
is called, on the executor's worker thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from kiln.errors import KilnError
from kiln.generation import GenerationRequest, ModelSpec
from kiln.progress import StepListener
from kiln.settings import Settings

if TYPE_CHECKING:
    from PIL import Image


class EngineLike(Protocol):
    """What the executor needs of an engine. Every method is called on the executor's one worker
    thread, never two at a time."""

    def load(self, model: ModelSpec) -> None:
        """Load `model` into residency now (`ModelLoadError` if it cannot)."""

    def generate_batch(
        self, requests: Sequence[GenerationRequest], on_step: StepListener | None = None
    ) -> list[Image.Image | KilnError]:
        """One result per request, in order: an RGB image of its width x height, or the
        `KilnError` that failed that request only.

        Every request has exactly one seed and all share one `batch_key`. Must not raise for
        one request's fault; if it raises, the executor fails every request of the call.
        `on_step` (passed only when some request of the batch wants it) receives each image's
        `StepProgress`, `index` its position in `requests`, before its result is returned.
        """
        ...

    def max_batch(self, request: GenerationRequest) -> int:
        """At least 1: how many images of this request's model and size fit in the device
        memory left (the executor batches at most min(its own limit, this))."""
        ...

    def annotate(self, kind: str, path: str, image: Image.Image, options: Any) -> Image.Image:
        """Run the registered annotator model of `kind` at `path` (preprocessing)."""
        ...

    @property
    def resident_bytes(self) -> int:
        """Bytes of the models held now."""
        ...

    @property
    def evictions(self) -> int:
        """Models evicted since the engine was built."""
        ...


def default_engine_factory(settings: Settings) -> Callable[[], EngineLike]:
    """A factory of the real `kiln.engine.Engine` for `settings` (device, torch threads, dtype,
    model memory, channels-last, compile, VAE tiling: README, Throughput), which imports torch
    only when called: the executor calls it on its worker thread, on first use.

    `settings.torch_threads` caps torch's intra-op threads: on a CPU shared with other busy
    processes, fewer threads avoid OpenMP barriers waiting on descheduled threads (measured 200x
    slower per UNet call with 2 threads on 2 contended cores).
    """

    def build() -> EngineLike:
        if settings.torch_threads:
            import torch

            torch.set_num_threads(settings.torch_threads)
        from kiln.engine import Engine

        engine: EngineLike = Engine(
            device=settings.device,
            dtype=settings.dtype,
            memory_budget=settings.model_memory_bytes,
            channels_last=settings.channels_last,
            compile=settings.compile,
            vae_tiling_pixels=settings.vae_tiling_pixels,
            cpu_offload=settings.cpu_offload,
        )
        return engine

    return build
