"""softedge: DexiNed, as kornia implements it, turning an image into the soft edge map a
soft-edge ControlNet (trained on HED / PiDiNet maps) expects: white edges on black, 0-255.

The registered file is DexiNed's checkpoint, the state dict kornia loads
(`DexiNed_BIPED_10.pth`); it is loaded strictly, so any other file fails to load.
"""

from __future__ import annotations

import numpy as np
import torch
from kornia.contrib.edge_detection import EdgeDetectorBuilder
from kornia.geometry.transform import resize
from kornia.image import image_to_tensor
from PIL import Image

from kiln.engine.annotators.loading import AnnotatorOptions, load_once
from kiln.engine.residency import Residency

DETECTION_SHORT_SIDE = 512
"""An image whose shorter side is longer than this is scaled down to it before detection: the
resolution soft-edge ControlNets' maps were detected at, and DexiNed's cost grows with area.
Smaller images are detected at their own size..."""

DETECTION_LONG_SIDE = 2048
"""...unless their longer side is longer than this: then the image is scaled down further, until
its longer side is this, so a long thin image is not detected at an enormous size."""


def load(path: str, device: str) -> torch.nn.Sequential:
    # kornia's detector network: RGB in [0, 1] → BGR in [0, 255] minus the mean DexiNed was
    # trained with → DexiNed (slot 1, whose state dict the checkpoint is) → sigmoid.
    network = EdgeDetectorBuilder.build("dexined", pretrained=False).model
    network[1].load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return network.to(device).eval()


def _detection_size(width: int, height: int) -> tuple[int, int]:
    """(height, width) of the image DexiNed sees for a `width` x `height` image: never larger,
    shorter side at most `DETECTION_SHORT_SIDE`, longer side at most `DETECTION_LONG_SIDE`, each
    side at least 1 pixel."""
    scale = min(1, DETECTION_SHORT_SIDE / min(width, height), DETECTION_LONG_SIDE / max(width, height))
    return max(1, round(height * scale)), max(1, round(width * scale))


def soft_edges(
    path: str, image: Image.Image, device: str, _: AnnotatorOptions,
    residency: Residency | None = None,
) -> Image.Image:
    """The soft edge map of `image` from the DexiNed checkpoint at `path`: a grayscale image of
    `image`'s size, each pixel the edge probability scaled to 0-255 (edges white). DexiNed sees at
    most `DETECTION_LONG_SIDE` pixels per side, whatever `image`'s size."""
    network = load_once("softedge", path, device, load, residency)
    rgb = image_to_tensor(np.array(image.convert("RGB")), keepdim=False).float() / 255
    detection_size = _detection_size(image.width, image.height)
    if detection_size != (image.height, image.width):
        rgb = resize(rgb, detection_size, antialias=True)
    with torch.inference_mode():
        probabilities = network(rgb.to(device))
        probabilities = resize(probabilities, (image.height, image.width), interpolation="bilinear")
        edges = (probabilities[0, 0].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return Image.fromarray(edges)
