"""openpose annotator: tiny VitPose models (and an RT-DETR person detector) saved as transformers
saves the real ones, run through `annotate`; OpenPose's drawing checked on known keypoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    RTDetrConfig,
    RTDetrForObjectDetection,
    RTDetrImageProcessor,
    RTDetrResNetConfig,
    VitPoseBackboneConfig,
    VitPoseConfig,
    VitPoseForPoseEstimation,
    VitPoseImageProcessor,
)

from kiln.engine.annotators import AnnotatorOptions, annotate
from kiln.engine.annotators.pose import PersonKeypoints, draw_openpose
from kiln.errors import ModelLoadError, UnsupportedError

_JOINT_17_COLOUR = (255, 0, 85)
"""OpenPose draws its 18 joints in order; the last (left ear) is this colour."""


def tiny_pose_model(directory: Path, *, keypoints: int = 17, centred: bool = False) -> str:
    """Write a tiny random-weight VitPose folder (config, safetensors weights and the
    VitPoseImageProcessor config, the layout of usyd-community/vitpose-base-simple) predicting
    `keypoints` keypoints (17: COCO body; 133: COCO-WholeBody, on a 6-expert ViTPose++ backbone)
    to `directory` and return its path. `centred`: instead of random weights, weights that put
    every keypoint at the centre of the person's box with confidence ~3."""
    torch.manual_seed(0)
    backbone = VitPoseBackboneConfig(
        image_size=[48, 48], patch_size=[16, 16], hidden_size=16, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=32, out_indices=[1],
        **({"num_experts": 6, "part_features": 4} if keypoints == 133 else {}),
    )
    model = VitPoseForPoseEstimation(VitPoseConfig(backbone_config=backbone, num_labels=keypoints))
    if centred:
        _peak_at_the_centre(model)
    model.save_pretrained(directory)
    VitPoseImageProcessor(size={"height": 48, "width": 48}).save_pretrained(directory)
    return str(directory)


def _peak_at_the_centre(model: VitPoseForPoseEstimation) -> None:
    """Make every layer pass its input through unchanged and the image count for nothing, so the
    features are the position embeddings; give only the centre patch of the 3×3 grid a feature,
    which the head turns into every keypoint's heatmap peak."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.backbone.layernorm.weight.fill_(1.0)
        model.backbone.embeddings.position_embeddings[0, 1 + 4, 0] = 1.0
        model.head.conv.weight[:, 0, 1, 1] = 1.0


def tiny_person_detector_model(directory: Path, *, finds_people: bool = True) -> str:
    """Write `directory`/pose (a centred `tiny_pose_model`) and `directory`/detector (a tiny
    RT-DETR with labels person and car, the layout of PekingU/rtdetr_r50vd_coco_o365) and return
    `directory`. Its detections are all people when `finds_people`, else nobody scores at all."""
    tiny_pose_model(directory / "pose", centred=True)
    torch.manual_seed(0)
    config = RTDetrConfig(
        backbone_config=RTDetrResNetConfig(
            embedding_size=8, hidden_sizes=[8, 8, 16, 16], depths=[1, 1, 1, 1],
            out_features=["stage2", "stage3", "stage4"],
        ),
        d_model=16, encoder_hidden_dim=16, encoder_in_channels=[8, 16, 16], encoder_ffn_dim=32,
        encoder_attention_heads=2, decoder_in_channels=[16, 16, 16], decoder_layers=1,
        decoder_attention_heads=2, decoder_ffn_dim=32, num_queries=4, num_denoising=0,
        id2label={0: "person", 1: "car"}, use_pretrained_backbone=False,
    )
    detector = RTDetrForObjectDetection(config)
    with torch.no_grad():
        for layer in detector.model.decoder.class_embed:
            layer.weight.zero_()
            layer.bias.copy_(torch.tensor([10.0 if finds_people else -10.0, -10.0]))
    detector.save_pretrained(directory / "detector")
    RTDetrImageProcessor(size={"height": 64, "width": 64}).save_pretrained(directory / "detector")
    return str(directory)


@pytest.fixture(scope="module")
def body_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tiny_pose_model(tmp_path_factory.mktemp("vitpose"))


@pytest.fixture(scope="module")
def whole_body_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tiny_pose_model(tmp_path_factory.mktemp("vitpose-wholebody"), keypoints=133)


@pytest.fixture(scope="module")
def centred_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tiny_pose_model(tmp_path_factory.mktemp("vitpose-centred"), centred=True)


def _photo(width: int = 96, height: int = 64) -> Image.Image:
    rng = np.random.default_rng(5)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_guide_image_is_rgb_at_the_input_size(body_model: str) -> None:
    guide = annotate("openpose", body_model, _photo(96, 64).convert("RGBA"), device="cpu")
    assert (guide.mode, guide.size) == ("RGB", (96, 64))


def test_same_image_gives_same_bytes(body_model: str) -> None:
    first = annotate("openpose", body_model, _photo(), device="cpu")
    second = annotate("openpose", body_model, _photo(), device="cpu")
    assert first.tobytes() == second.tobytes()


def test_a_single_person_is_estimated_over_the_whole_image(centred_model: str) -> None:
    guide = np.asarray(annotate("openpose", centred_model, _photo(96, 64), device="cpu"))
    assert tuple(guide[32, 48]) == _JOINT_17_COLOUR
    drawn_rows, drawn_columns = np.nonzero(guide.any(axis=-1))
    assert abs(drawn_rows.mean() - 32) < 2 and abs(drawn_columns.mean() - 48) < 2
    assert np.ptp(drawn_rows) <= 10 and np.ptp(drawn_columns) <= 10


def test_hands_and_face_of_a_body_model_is_refused(body_model: str) -> None:
    with pytest.raises(UnsupportedError) as raised:
        annotate("openpose", body_model, _photo(), device="cpu",
                 options=AnnotatorOptions(hands_and_face=True))
    assert raised.value.code == "unsupportedParameter"
    assert raised.value.parameter == "includeHandsAndFaceOpenPose"
    assert "whole-body" in raised.value.message


def test_a_whole_body_model_draws_hands_and_face_only_when_asked(whole_body_model: str) -> None:
    body = annotate("openpose", whole_body_model, _photo(), device="cpu")
    full = annotate("openpose", whole_body_model, _photo(), device="cpu",
                    options=AnnotatorOptions(hands_and_face=True))
    assert (body.mode, body.size) == (full.mode, full.size) == ("RGB", (96, 64))
    assert np.asarray(full).any(axis=-1).sum() > np.asarray(body).any(axis=-1).sum()


def test_people_are_drawn_where_the_detector_finds_them(tmp_path: Path) -> None:
    path = tiny_person_detector_model(tmp_path)
    guide = np.asarray(annotate("openpose", path, _photo(), device="cpu"))
    assert (guide == _JOINT_17_COLOUR).all(axis=-1).any()
    # the same pose model estimated over the whole image draws only at its centre
    assert not guide[28:37, 44:53].any()


def test_nobody_found_gives_a_black_image(tmp_path: Path) -> None:
    path = tiny_person_detector_model(tmp_path, finds_people=False)
    guide = annotate("openpose", path, _photo(), device="cpu")
    assert guide.size == (96, 64) and not np.asarray(guide).any()


def test_a_detector_without_a_person_label_is_a_load_error(tmp_path: Path) -> None:
    path = tiny_person_detector_model(tmp_path)
    config = tmp_path / "detector" / "config.json"
    config.write_text(config.read_text().replace('"person"', '"bicycle"'))
    with pytest.raises(ModelLoadError, match="no 'person' label"):
        annotate("openpose", path, _photo(), device="cpu")


def test_a_folder_without_a_vitpose_model_is_a_load_error(tmp_path: Path) -> None:
    path = tiny_person_detector_model(tmp_path)
    with pytest.raises(ModelLoadError) as raised:
        annotate("openpose", str(tmp_path / "detector"), _photo(), device="cpu")
    assert raised.value.code == "modelUnavailable"
    with pytest.raises(ModelLoadError):
        annotate("openpose", str(Path(path) / "missing"), _photo(), device="cpu")


def test_a_vitpose_model_without_coco_keypoints_is_a_load_error(tmp_path: Path) -> None:
    path = tiny_pose_model(tmp_path, keypoints=16)
    with pytest.raises(ModelLoadError, match="16 keypoints"):
        annotate("openpose", path, _photo(), device="cpu")


def _person(points: dict[int, tuple[float, float]], keypoints: int = 17,
            low: tuple[int, ...] = ()) -> PersonKeypoints:
    """A person with `points` (COCO index → x, y) confident, `low` ones at 0.1, the rest absent."""
    xy = np.zeros((keypoints, 2), dtype=np.float32)
    scores = np.zeros(keypoints, dtype=np.float32)
    for index, point in points.items():
        xy[index] = point
        scores[index] = 0.1 if index in low else 0.9
    return PersonKeypoints(xy=xy, scores=scores)


_SHOULDERS = {6: (20.0, 40.0), 5: (60.0, 40.0)}
"""Right shoulder (COCO 6) and left shoulder (COCO 5); the neck is midway, at (40, 40)."""


def test_shoulders_draw_the_neck_and_its_limbs_in_openpose_colours() -> None:
    guide = np.asarray(draw_openpose([_person(_SHOULDERS)], 80, 64))
    assert tuple(guide[40, 30]) == (153, 0, 0)  # neck–right shoulder limb: red at 60%
    assert tuple(guide[40, 50]) == (153, 51, 0)  # neck–left shoulder limb: (255, 85, 0) at 60%
    assert tuple(guide[40, 40]) == (255, 85, 0)  # neck joint
    assert tuple(guide[40, 20]) == (255, 170, 0)  # right shoulder joint
    assert tuple(guide[40, 60]) == (85, 255, 0)  # left shoulder joint
    assert not guide[:30].any() and not guide[50:].any()  # limbs 8 px thick, nothing else


def test_low_confidence_keypoints_and_their_limbs_are_not_drawn() -> None:
    guide = np.asarray(draw_openpose([_person(_SHOULDERS, low=(6,))], 80, 64))
    assert not guide[40, 20].any()  # right shoulder
    assert not guide[40, 30].any() and not guide[40, 40].any()  # no neck without both shoulders
    assert tuple(guide[40, 60]) == (85, 255, 0)  # left shoulder still there


_HAND_AND_FACE = {91: (10.0, 10.0), 92: (30.0, 10.0), 96: (10.0, 40.0), 23: (60.0, 50.0)}
"""Left-hand wrist, thumb base and index-finger base (COCO-WholeBody 91, 92, 96), one face point."""


def test_hands_and_face_are_drawn_as_openpose_draws_them() -> None:
    person = _person(_HAND_AND_FACE, keypoints=133)
    guide = np.asarray(draw_openpose([person], 80, 64, hands_and_face=True))
    assert tuple(guide[10, 20]) == (255, 0, 0)  # edge 0 (wrist–thumb): hue 0
    assert tuple(guide[25, 10]) == (204, 255, 0)  # edge 4 (wrist–index finger): hue 4/20
    assert tuple(guide[10, 10]) == (0, 0, 255)  # hand joints are blue
    assert tuple(guide[50, 60]) == (255, 255, 255)  # face landmarks are white
    assert not np.asarray(draw_openpose([person], 80, 64)).any()
