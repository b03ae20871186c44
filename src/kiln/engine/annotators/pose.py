"""openpose: a transformers VitPose keypoint model (COCO body or COCO-WholeBody keypoints) whose
keypoints are drawn as the OpenPose skeleton ControlNet's openpose models were trained on.

The registered path is a VitPose folder, estimated on the whole image as one person (the usual
ControlNet pose picture), or a folder holding `pose/` (the VitPose folder) and `detector/` (a
transformers object-detection model with a "person" label, e.g. RT-DETR), which finds the people
and has each one estimated.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForObjectDetection, VitPoseForPoseEstimation

from kiln.engine.annotators.loading import AnnotatorOptions, load_once
from kiln.engine.residency import Residency
from kiln.errors import ModelLoadError, UnsupportedError

CONFIDENCE_THRESHOLD = 0.3
"""Keypoints (and detected people) scoring below this are not drawn; DWPose's value."""

_BODY, _WHOLE_BODY = 17, 133
"""Keypoint counts of COCO (body) and COCO-WholeBody (body, feet, face, hands) models."""

_WHOLE_BODY_DATASET_INDEX = 5
"""ViTPose++'s expert for COCO-WholeBody (0 is COCO) in a mixture-of-experts backbone."""

# The 18 OpenPose body keypoints (nose, neck, right shoulder/elbow/wrist, left shoulder/elbow/
# wrist, right hip/knee/ankle, left hip/knee/ankle, right eye, left eye, right ear, left ear) as
# COCO keypoint indices; the neck (None) is the midpoint of the shoulders.
_OPENPOSE_FROM_COCO = (0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
_LEFT_SHOULDER, _RIGHT_SHOULDER = 5, 6

# OpenPose's 17 drawn limbs (pairs of the keypoints above) and its colour of limb/keypoint i (RGB).
LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)
COLOURS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)
_STICK_WIDTH = 4
_LIMB_DIMMING = 0.6
"""Limbs are drawn, then the whole canvas is dimmed to 60% before the joints go on top."""

# COCO-WholeBody: 68 face landmarks, then the left and right hands' 21 keypoints each, in the
# OpenPose hand order (wrist, then thumb to little finger, base to tip).
_FACE = slice(23, 91)
_HANDS = (slice(91, 112), slice(112, 133))
HAND_EDGES = tuple(
    pair for finger in range(5) for pair in
    [(0, 4 * finger + 1), (4 * finger + 1, 4 * finger + 2),
     (4 * finger + 2, 4 * finger + 3), (4 * finger + 3, 4 * finger + 4)]
)
HAND_EDGE_COLOURS = tuple(
    tuple(255 * channel for channel in colorsys.hsv_to_rgb(edge / len(HAND_EDGES), 1.0, 1.0))
    for edge in range(len(HAND_EDGES))
)
"""OpenPose's hue wheel over the hand's 20 edges, as (unrounded) RGB 0-255."""
_HAND_JOINT_COLOUR = (0, 0, 255)
_FACE_COLOUR = (255, 255, 255)


@dataclass(frozen=True)
class PersonKeypoints:
    """One person's keypoints in COCO (17) or COCO-WholeBody (133) order."""

    xy: np.ndarray
    """(keypoints, 2): x, y in image pixels."""
    scores: np.ndarray
    """(keypoints,): confidence; below `CONFIDENCE_THRESHOLD` a keypoint is absent."""


@dataclass(frozen=True)
class _PoseModel:
    processor: Any
    model: Any
    dataset_index: int | None
    """The expert a mixture-of-experts backbone is run with; None for a plain backbone."""
    detector: _PersonDetector | None


@dataclass(frozen=True)
class _PersonDetector:
    processor: Any
    model: Any
    person_label: int


def load(path: str, device: str) -> _PoseModel:
    folder = Path(path)
    with_detector = (folder / "pose").is_dir() and (folder / "detector").is_dir()
    pose_folder = folder / "pose" if with_detector else folder
    model = VitPoseForPoseEstimation.from_pretrained(pose_folder, local_files_only=True)
    keypoints = model.config.num_labels
    if keypoints not in (_BODY, _WHOLE_BODY):
        raise ModelLoadError(
            f"The VitPose model at {pose_folder} predicts {keypoints} keypoints; openpose needs "
            f"COCO body ({_BODY}) or COCO-WholeBody ({_WHOLE_BODY}) keypoints.",
            parameter="preProcessorType",
        )
    whole_body = keypoints == _WHOLE_BODY
    moe = getattr(model.config.backbone_config, "num_experts", 1) > 1
    return _PoseModel(
        processor=AutoImageProcessor.from_pretrained(pose_folder, local_files_only=True),
        model=model.to(device).eval(),
        dataset_index=(_WHOLE_BODY_DATASET_INDEX if whole_body else 0) if moe else None,
        detector=_load_detector(folder / "detector", device) if with_detector else None,
    )


def _load_detector(folder: Path, device: str) -> _PersonDetector:
    model = AutoModelForObjectDetection.from_pretrained(folder, local_files_only=True)
    person = [label for label, name in model.config.id2label.items() if name.lower() == "person"]
    if not person:
        raise ModelLoadError(
            f"The person detector at {folder} has no 'person' label "
            f"(its labels: {', '.join(sorted(model.config.id2label.values()))}).",
            parameter="preProcessorType",
        )
    return _PersonDetector(
        processor=AutoImageProcessor.from_pretrained(folder, local_files_only=True),
        model=model.to(device).eval(),
        person_label=int(person[0]),
    )


def draw_pose(
    path: str, image: Image.Image, device: str, options: AnnotatorOptions,
    residency: Residency | None = None,
) -> Image.Image:
    """The OpenPose skeleton of the people in `image`, from the VitPose model at `path`: an RGB
    image of `image`'s size, black where nobody is; hands and face too if `options` asks.

    Raises `UnsupportedError` (`unsupportedParameter`, `includeHandsAndFaceOpenPose`) when hands
    and face are asked of a model that predicts body keypoints only.
    """
    pose_model = load_once("openpose", path, device, load, residency)
    whole_body = pose_model.model.config.num_labels == _WHOLE_BODY
    if options.hands_and_face and not whole_body:
        raise UnsupportedError(
            f"includeHandsAndFaceOpenPose needs a whole-body (COCO-WholeBody, {_WHOLE_BODY} "
            f"keypoints) pose model, but the openpose annotator registered at {path} predicts "
            f"the {_BODY} body keypoints only. Send includeHandsAndFaceOpenPose false, or "
            "register a whole-body VitPose model.",
            code="unsupportedParameter",
            parameter="includeHandsAndFaceOpenPose",
        )
    rgb = image.convert("RGB")
    with torch.inference_mode():
        boxes = _person_boxes(pose_model.detector, rgb) if pose_model.detector else [
            [0.0, 0.0, float(rgb.width), float(rgb.height)]
        ]
        people = _estimate(pose_model, rgb, boxes) if boxes else []
    return draw_openpose(people, rgb.width, rgb.height, hands_and_face=options.hands_and_face)


def _person_boxes(detector: _PersonDetector, image: Image.Image) -> list[list[float]]:
    """The people `detector` finds in `image`, as (x, y, width, height) boxes in pixels."""
    inputs = detector.processor(images=image, return_tensors="pt").to(detector.model.device)
    detections = detector.processor.post_process_object_detection(
        detector.model(**inputs), threshold=CONFIDENCE_THRESHOLD,
        target_sizes=[(image.height, image.width)],
    )[0]
    people = detections["boxes"][detections["labels"] == detector.person_label].cpu()
    people[:, 0::2] = people[:, 0::2].clamp(0, image.width)
    people[:, 1::2] = people[:, 1::2].clamp(0, image.height)
    return [[x0, y0, x1 - x0, y1 - y0] for x0, y0, x1, y1 in people.tolist() if x1 > x0 and y1 > y0]


def _estimate(pose_model: _PoseModel, image: Image.Image, boxes: list[list[float]]) -> list[PersonKeypoints]:
    inputs = pose_model.processor(image, boxes=[boxes], return_tensors="pt").to(pose_model.model.device)
    if pose_model.dataset_index is not None:
        inputs["dataset_index"] = torch.full(
            (len(boxes),), pose_model.dataset_index, device=pose_model.model.device
        )
    outputs = pose_model.model(**inputs)
    poses = pose_model.processor.post_process_pose_estimation(outputs, boxes=[boxes])[0]
    return [PersonKeypoints(xy=pose["keypoints"].numpy(), scores=pose["scores"].numpy()) for pose in poses]


def draw_openpose(
    people: list[PersonKeypoints], width: int, height: int, *, hands_and_face: bool = False
) -> Image.Image:
    """`people` drawn as OpenPose draws them (ControlNet 1.1's `draw_bodypose`, `draw_handpose`,
    `draw_facepose`) on a black `width`×`height` RGB image: each limb a filled ellipse 8 px thick
    in its colour at 60%, each keypoint a disc of radius 4 in its full colour; with
    `hands_and_face` (whole-body keypoints only) hand edges 2 px thick on a hue wheel with blue
    joints, and face landmarks as white discs of radius 3. Keypoints scoring below
    `CONFIDENCE_THRESHOLD`, and the limbs and edges that touch them, are left out."""
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    bodies = [_openpose_body(person) for person in people]
    for (start, end), colour in zip(LIMBS, COLOURS[: len(LIMBS)], strict=True):
        for xy, present in bodies:
            if present[start] and present[end]:
                _draw_limb(canvas, xy[start], xy[end], colour)
    canvas = (canvas * _LIMB_DIMMING).astype(np.uint8)
    for joint, colour in enumerate(COLOURS):
        for xy, present in bodies:
            if present[joint]:
                cv2.circle(canvas, _pixel(xy[joint]), 4, colour, thickness=-1)
    if hands_and_face:
        for person in people:
            present = person.scores >= CONFIDENCE_THRESHOLD
            for hand in _HANDS:
                _draw_hand(canvas, person.xy[hand], present[hand])
        for person in people:
            present = person.scores >= CONFIDENCE_THRESHOLD
            for point in person.xy[_FACE][present[_FACE]]:
                cv2.circle(canvas, _pixel(point), 3, _FACE_COLOUR, thickness=-1)
    return Image.fromarray(canvas)


def _openpose_body(person: PersonKeypoints) -> tuple[np.ndarray, np.ndarray]:
    """The 18 OpenPose body keypoints of `person` (x, y) and which of them are present."""
    present = person.scores >= CONFIDENCE_THRESHOLD
    neck = person.xy[[_LEFT_SHOULDER, _RIGHT_SHOULDER]].mean(axis=0)
    xy = np.stack([neck if coco is None else person.xy[coco] for coco in _OPENPOSE_FROM_COCO])
    shoulders = bool(present[_LEFT_SHOULDER] and present[_RIGHT_SHOULDER])
    return xy, np.array([shoulders if coco is None else present[coco] for coco in _OPENPOSE_FROM_COCO])


def _draw_limb(canvas: np.ndarray, start: np.ndarray, end: np.ndarray, colour: tuple[int, ...]) -> None:
    (x0, y0), (x1, y1) = start, end
    length = math.hypot(x1 - x0, y1 - y0)
    angle = math.degrees(math.atan2(y0 - y1, x0 - x1))
    polygon = cv2.ellipse2Poly(
        (int((x0 + x1) / 2), int((y0 + y1) / 2)), (int(length / 2), _STICK_WIDTH), int(angle), 0, 360, 1
    )
    cv2.fillConvexPoly(canvas, polygon, colour)


def _draw_hand(canvas: np.ndarray, xy: np.ndarray, present: np.ndarray) -> None:
    for (start, end), colour in zip(HAND_EDGES, HAND_EDGE_COLOURS, strict=True):
        if present[start] and present[end]:
            cv2.line(canvas, _pixel(xy[start]), _pixel(xy[end]), colour, thickness=2)
    for point in xy[present]:
        cv2.circle(canvas, _pixel(point), 4, _HAND_JOINT_COLOUR, thickness=-1)


def _pixel(point: np.ndarray) -> tuple[int, int]:
    return int(point[0]), int(point[1])
