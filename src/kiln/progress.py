"""Step progress: what the engine reports while a pipeline call denoises, passed on by the
executor to the service. Nothing here imports torch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image


def _no_preview() -> None:
    return None


@dataclass(frozen=True)
class StepProgress:
    """One image's progress: `step` of `steps` denoising steps done.

    `steps` is the request's `steps` (in the image and inpaint modes, the share of them that
    `strength` runs); `step` rises by one from 1 to `steps`, each reported once (a sampler that
    runs more iterations than steps reports on those that complete a step). `index` is the
    image's position in the engine's batch, and, once the executor passed it on, in its
    request's `seeds`.

    `preview()` renders a small RGB image of the latents so far (at most 64 px on the longer
    side; a linear approximation, no VAE decode), or None where none can be made. It reads the
    device, so call it only for a preview you will send, and only during the callback that
    received this record.
    """

    index: int
    step: int
    steps: int
    preview: Callable[[], Image.Image | None] = _no_preview


StepListener = Callable[[StepProgress], None]
"""Receives each `StepProgress` on the executor's worker thread, inside the pipeline call: it
must return quickly."""
