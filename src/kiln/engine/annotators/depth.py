"""depth: a transformers depth-estimation model (DPT, Depth Anything, GLPN, ZoeDepth) in a
local folder, turned into the grayscale map a depth ControlNet expects (nearer = brighter)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForDepthEstimation

from kiln.engine.annotators.loading import AnnotatorOptions, load_once
from kiln.engine.residency import Residency

# These predict distance (larger = farther); DPT and Depth Anything's relative models predict
# inverse depth (larger = nearer), which is what a depth ControlNet was trained on.
_METRIC_MODEL_TYPES = ("glpn", "zoedepth")


@dataclass(frozen=True)
class _DepthModel:
    processor: Any
    model: Any
    metric: bool


def load(path: str, device: str) -> _DepthModel:
    model = AutoModelForDepthEstimation.from_pretrained(path, local_files_only=True)
    config = model.config
    return _DepthModel(
        processor=AutoImageProcessor.from_pretrained(path, local_files_only=True),
        model=model.to(device).eval(),
        metric=config.model_type in _METRIC_MODEL_TYPES
        or getattr(config, "depth_estimation_type", None) == "metric",
    )


def estimate_depth(
    path: str, image: Image.Image, device: str, _: AnnotatorOptions,
    residency: Residency | None = None,
) -> Image.Image:
    """The depth map of `image` from the depth-estimation model in folder `path`: a grayscale
    image of `image`'s size, stretched to 0-255, nearer surfaces brighter."""
    depth_model = load_once("depth", path, device, load, residency)
    inputs = depth_model.processor(images=image.convert("RGB"), return_tensors="pt")
    with torch.inference_mode():
        inputs = {name: value.to(depth_model.model.device) for name, value in inputs.items()}
        predicted = depth_model.model(**inputs).predicted_depth
        depth = torch.nn.functional.interpolate(
            predicted.float().reshape(1, 1, *predicted.shape[-2:]),
            size=(image.height, image.width), mode="bicubic", align_corners=False,
        )[0, 0].cpu().numpy()
    if depth_model.metric:
        depth = -depth
    low, high = float(depth.min()), float(depth.max())
    scaled = (depth - low) / (high - low) if high > low else np.zeros_like(depth)
    return Image.fromarray(np.round(scaled * 255).astype(np.uint8))
