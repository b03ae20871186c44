"""seg: a transformers semantic-segmentation model trained on ADE20K's 150 classes (UperNet,
SegFormer, BEiT, DPT; Mask2Former and MaskFormer) in a local folder, turned into the class map a
segmentation ControlNet expects: every pixel painted with its class's ADE20K palette colour."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForSemanticSegmentation,
    AutoModelForUniversalSegmentation,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES

from kiln.engine.annotators.loading import AnnotatorOptions, load_once
from kiln.engine.residency import Residency

# fmt: off
ADE20K_PALETTE = np.array([
    [120, 120, 120], [180, 120, 120], [6, 230, 230], [80, 50, 50], [4, 200, 3],
    [120, 120, 80], [140, 140, 140], [204, 5, 255], [230, 230, 230], [4, 250, 7],
    [224, 5, 255], [235, 255, 7], [150, 5, 61], [120, 120, 70], [8, 255, 51],
    [255, 6, 82], [143, 255, 140], [204, 255, 4], [255, 51, 7], [204, 70, 3],
    [0, 102, 200], [61, 230, 250], [255, 6, 51], [11, 102, 255], [255, 7, 71],
    [255, 9, 224], [9, 7, 230], [220, 220, 220], [255, 9, 92], [112, 9, 255],
    [8, 255, 214], [7, 255, 224], [255, 184, 6], [10, 255, 71], [255, 41, 10],
    [7, 255, 255], [224, 255, 8], [102, 8, 255], [255, 61, 6], [255, 194, 7],
    [255, 122, 8], [0, 255, 20], [255, 8, 41], [255, 5, 153], [6, 51, 255],
    [235, 12, 255], [160, 150, 20], [0, 163, 255], [140, 140, 140], [250, 10, 15],
    [20, 255, 0], [31, 255, 0], [255, 31, 0], [255, 224, 0], [153, 255, 0],
    [0, 0, 255], [255, 71, 0], [0, 235, 255], [0, 173, 255], [31, 0, 255],
    [11, 200, 200], [255, 82, 0], [0, 255, 245], [0, 61, 255], [0, 255, 112],
    [0, 255, 133], [255, 0, 0], [255, 163, 0], [255, 102, 0], [194, 255, 0],
    [0, 143, 255], [51, 255, 0], [0, 82, 255], [0, 255, 41], [0, 255, 173],
    [10, 0, 255], [173, 255, 0], [0, 255, 153], [255, 92, 0], [255, 0, 255],
    [255, 0, 245], [255, 0, 102], [255, 173, 0], [255, 0, 20], [255, 184, 184],
    [0, 31, 255], [0, 255, 61], [0, 71, 255], [255, 0, 204], [0, 255, 194],
    [0, 255, 82], [0, 10, 255], [0, 112, 255], [51, 0, 255], [0, 194, 255],
    [0, 122, 255], [0, 255, 163], [255, 153, 0], [0, 255, 10], [255, 112, 0],
    [143, 255, 0], [82, 0, 255], [163, 255, 0], [255, 235, 0], [8, 184, 170],
    [133, 0, 255], [0, 255, 92], [184, 0, 255], [255, 0, 31], [0, 184, 255],
    [0, 214, 255], [255, 0, 112], [92, 255, 0], [0, 224, 255], [112, 224, 255],
    [70, 184, 160], [163, 0, 255], [153, 0, 255], [71, 255, 0], [255, 0, 163],
    [255, 204, 0], [255, 0, 143], [0, 255, 235], [133, 255, 0], [255, 0, 235],
    [245, 0, 255], [255, 0, 122], [255, 245, 0], [10, 190, 212], [214, 255, 0],
    [0, 204, 255], [20, 0, 255], [255, 255, 0], [0, 153, 255], [0, 41, 255],
    [0, 255, 204], [41, 0, 255], [41, 255, 0], [173, 0, 255], [0, 245, 255],
    [71, 0, 255], [122, 0, 255], [0, 255, 184], [0, 92, 255], [184, 255, 0],
    [0, 133, 255], [255, 214, 0], [25, 194, 194], [102, 255, 0], [92, 0, 255],
], dtype=np.uint8)
# fmt: on
"""RGB colour of each of ADE20K's 150 classes, indexed by class id (0 wall, 1 building, 2 sky,
...): mmsegmentation's `ADE20KDataset` palette, which ControlNet 1.1's seg annotators drew with
and its seg models were trained on. Two classes share a colour there (6 road and 48 skyscraper,
both (140, 140, 140)); kept as is, since that is what the models learned."""

DETECTION_LONG_SIDE = 1024
"""Class scores are upsampled to at most this many pixels on the long side (150 scores per
pixel: 600 MB at 1024², 2.5 GB at 2048²); a larger image's class map is enlarged from there,
nearest neighbour, so it stays a map of palette colours."""

# Mask-classification models whose image processor's `post_process_semantic_segmentation` turns
# their outputs into a class map from pixel values alone (OneFormer also needs a task prompt).
_MASK_CLASSIFICATION_MODEL_TYPES = ("mask2former", "maskformer")


@dataclass(frozen=True)
class _SegmentationModel:
    processor: Any
    model: Any


def load(path: str, device: str) -> _SegmentationModel:
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    if config.model_type in MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES:
        model_class = AutoModelForSemanticSegmentation
    elif config.model_type in _MASK_CLASSIFICATION_MODEL_TYPES:
        model_class = AutoModelForUniversalSegmentation
    else:
        raise ValueError(
            f"it holds a '{config.model_type}' model, not a semantic-segmentation model "
            "(UperNet, SegFormer, BEiT, DPT, Mask2Former or MaskFormer)"
        )
    if config.num_labels != len(ADE20K_PALETTE):
        raise ValueError(
            f"the model predicts {config.num_labels} classes; a seg ControlNet needs ADE20K's "
            f"{len(ADE20K_PALETTE)}"
        )
    model = model_class.from_pretrained(path, local_files_only=True)
    return _SegmentationModel(
        processor=AutoImageProcessor.from_pretrained(path, local_files_only=True),
        model=model.to(device).eval(),
    )


def color_by_class(class_map: np.ndarray) -> Image.Image:
    """The RGB image that paints each pixel of `class_map` (ADE20K class ids 0-149, shape
    height × width) with its class's colour in `ADE20K_PALETTE`."""
    return Image.fromarray(ADE20K_PALETTE[class_map])


def segment(
    path: str, image: Image.Image, device: str, _: AnnotatorOptions,
    residency: Residency | None = None,
) -> Image.Image:
    """The ADE20K class map of `image` from the segmentation model in folder `path`: an RGB
    image of `image`'s size whose every pixel has the palette colour of its predicted class
    (scored at most `DETECTION_LONG_SIDE` pixels wide or high).

    The model must predict exactly ADE20K's 150 classes; any other count (a Cityscapes or COCO
    model, whose class ids mean other things) fails at load time with `ModelLoadError`, as does
    a folder that holds no semantic-segmentation model.
    """
    segmentation = load_once("seg", path, device, load, residency)
    inputs = segmentation.processor(images=image.convert("RGB"), return_tensors="pt")
    scale = min(1.0, DETECTION_LONG_SIDE / max(image.size))
    scored_size = (max(1, round(image.height * scale)), max(1, round(image.width * scale)))
    with torch.inference_mode():
        inputs = {name: value.to(segmentation.model.device) for name, value in inputs.items()}
        outputs = segmentation.model(**inputs)
        class_map = segmentation.processor.post_process_semantic_segmentation(
            outputs, target_sizes=[scored_size]
        )[0]
    colours = color_by_class(class_map.cpu().numpy())
    return colours if colours.size == image.size else colours.resize(image.size, Image.Resampling.NEAREST)
