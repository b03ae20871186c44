"""The seg annotator: tiny random-weight UperNet, SegFormer and Mask2Former models saved as the
real ones are, run through the same loading code as a registered ADE20K checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    ConvNextConfig,
    ConvNextForImageClassification,
    Mask2FormerConfig,
    Mask2FormerForUniversalSegmentation,
    Mask2FormerImageProcessor,
    SegformerConfig,
    SegformerForSemanticSegmentation,
    SegformerImageProcessor,
    SwinConfig,
    UperNetConfig,
    UperNetForSemanticSegmentation,
)

from kiln.engine.annotators import annotate, segmentation
from kiln.engine.annotators.loading import AnnotatorOptions
from kiln.engine.annotators.segmentation import ADE20K_PALETTE, color_by_class, segment
from kiln.errors import ModelLoadError

ADE20K_CLASSES = 150


def _labels(count: int) -> dict:
    id2label = {index: f"class {index}" for index in range(count)}
    return {"id2label": id2label, "label2id": {name: index for index, name in id2label.items()}}


def _upernet(num_labels: int) -> tuple[torch.nn.Module, object, str]:
    # openmmlab/upernet-convnext-*: a ConvNext backbone, a SegformerImageProcessor beside it.
    backbone = ConvNextConfig(
        hidden_sizes=[8, 8, 16, 16], depths=[1, 1, 1, 1],
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = UperNetConfig(
        backbone_config=backbone, hidden_size=16, auxiliary_in_channels=16,
        auxiliary_channels=8, **_labels(num_labels),
    )
    model = UperNetForSemanticSegmentation(config)
    return model, SegformerImageProcessor(size={"height": 64, "width": 64}), "decode_head.classifier"


def _segformer(num_labels: int) -> tuple[torch.nn.Module, object, str]:
    config = SegformerConfig(
        num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
        patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 1], mlp_ratios=[2, 2],
        decoder_hidden_size=16, **_labels(num_labels),
    )
    model = SegformerForSemanticSegmentation(config)
    return model, SegformerImageProcessor(size={"height": 64, "width": 64}), "decode_head.classifier"


def _mask2former(num_labels: int) -> tuple[torch.nn.Module, object, str]:
    backbone = SwinConfig(
        embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=2, image_size=64,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = Mask2FormerConfig(
        backbone_config=backbone, hidden_dim=32, num_queries=4, encoder_layers=1,
        decoder_layers=2, encoder_feedforward_dim=32, dim_feedforward=32, num_attention_heads=1,
        feature_size=32, mask_feature_size=32, **_labels(num_labels),
    )
    model = Mask2FormerForUniversalSegmentation(config)
    processor = Mask2FormerImageProcessor(size={"height": 64, "width": 64}, size_divisor=32)
    return model, processor, "class_predictor"


_ARCHITECTURES = {"upernet": _upernet, "segformer": _segformer, "mask2former": _mask2former}


def _save_model(
    directory: Path,
    architecture: str,
    *,
    num_labels: int = ADE20K_CLASSES,
    predicted_class: int | None = None,
) -> str:
    """A tiny random `architecture` model and its image processor saved in `directory`; with
    `predicted_class`, its class scores are rigged so it predicts that class for every pixel."""
    torch.manual_seed(0)
    model, processor, classifier_name = _ARCHITECTURES[architecture](num_labels)
    if predicted_class is not None:
        classifier = model.get_submodule(classifier_name)
        with torch.no_grad():
            classifier.weight.zero_()
            classifier.bias.zero_()
            classifier.bias[predicted_class] = 10.0
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return str(directory)


def tiny_segmentation_model(directory: Path) -> str:
    """A tiny random UperNet (ConvNext backbone, ADE20K's 150 classes) saved in `directory` as
    openmmlab/upernet-convnext-small is: the folder to register for `seg`."""
    return _save_model(directory, "upernet")


def _photo(width: int = 80, height: int = 48) -> Image.Image:
    pixels = np.random.default_rng(7).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _colours(image: Image.Image) -> set[tuple[int, int, int]]:
    return {tuple(colour) for colour in np.asarray(image).reshape(-1, 3).tolist()}


@pytest.mark.parametrize("architecture", sorted(_ARCHITECTURES))
def test_class_map_has_the_input_size_and_only_palette_colours(
    tmp_path: Path, architecture: str
) -> None:
    path = _save_model(tmp_path, architecture)

    class_map = annotate("seg", path, _photo(), device="cpu")

    assert class_map.size == (80, 48)
    assert class_map.mode == "RGB"
    assert _colours(class_map) <= {tuple(colour) for colour in ADE20K_PALETTE.tolist()}


def test_same_image_gives_the_same_bytes(tmp_path: Path) -> None:
    path = tiny_segmentation_model(tmp_path)

    first = segment(path, _photo(), "cpu", AnnotatorOptions())
    second = segment(path, _photo(), "cpu", AnnotatorOptions())

    assert first.tobytes() == second.tobytes()
    assert len(_colours(first)) > 1  # random weights: the map is not one flat class


@pytest.mark.parametrize("architecture", sorted(_ARCHITECTURES))
@pytest.mark.parametrize(
    ("predicted_class", "colour"),
    [(2, (6, 230, 230)), (4, (4, 200, 3))],  # sky, tree
)
def test_every_pixel_has_the_colour_of_its_predicted_class(
    tmp_path: Path, architecture: str, predicted_class: int, colour: tuple[int, int, int]
) -> None:
    path = _save_model(tmp_path, architecture, predicted_class=predicted_class)

    class_map = segment(path, _photo(64, 40), "cpu", AnnotatorOptions())

    assert _colours(class_map) == {colour}


def test_color_by_class_paints_ade20k_colours() -> None:
    class_ids = np.array([[0, 1, 2], [3, 4, 149]])

    painted = np.asarray(color_by_class(class_ids))

    assert painted.tolist() == [
        [[120, 120, 120], [180, 120, 120], [6, 230, 230]],  # wall, building, sky
        [[80, 50, 50], [4, 200, 3], [92, 0, 255]],  # floor, tree, flag
    ]


def test_palette_has_one_colour_per_ade20k_class() -> None:
    assert ADE20K_PALETTE.shape == (ADE20K_CLASSES, 3)
    assert ADE20K_PALETTE.dtype == np.uint8
    # mmseg's palette gives road (6) and skyscraper (48) the same grey; every other is unique.
    assert len({tuple(colour) for colour in ADE20K_PALETTE.tolist()}) == ADE20K_CLASSES - 1


def test_a_model_without_ade20k_classes_is_refused(tmp_path: Path) -> None:
    path = _save_model(tmp_path, "segformer", num_labels=19)  # a Cityscapes-sized head

    with pytest.raises(ModelLoadError, match="19 classes.*150"):
        segment(path, _photo(), "cpu", AnnotatorOptions())


def test_a_folder_without_a_segmentation_model_is_refused(tmp_path: Path) -> None:
    ConvNextForImageClassification(ConvNextConfig(hidden_sizes=[8, 8, 8, 8])).save_pretrained(
        tmp_path
    )

    with pytest.raises(ModelLoadError, match="'convnext' model, not a semantic-segmentation"):
        segment(str(tmp_path), _photo(), "cpu", AnnotatorOptions())


def test_an_empty_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="seg"):
        segment(str(tmp_path), _photo(), "cpu", AnnotatorOptions())


def test_a_large_image_is_scored_at_a_capped_size_and_enlarged(tmp_path: Path, monkeypatch) -> None:
    path = tiny_segmentation_model(tmp_path)
    photo = _photo(80, 48)
    full = np.asarray(segment(path, photo, "cpu", AnnotatorOptions()))
    monkeypatch.setattr(segmentation, "DETECTION_LONG_SIDE", 40)  # scored at 40 x 24
    capped = np.asarray(segment(path, photo, "cpu", AnnotatorOptions()))
    assert capped.shape == full.shape == (48, 80, 3)
    assert not np.array_equal(capped, full)
    assert _colours(Image.fromarray(capped)) <= {tuple(c) for c in ADE20K_PALETTE.tolist()}
    # nearest-neighbour enlargement: each scored pixel becomes a 2 x 2 block
    assert np.array_equal(capped[0::2, 0::2], capped[1::2, 1::2])
