"""The NSFW check: the classification rule on detector outputs, the detector's input, and
`NSFWContent` through the API (present and boolean only when asked)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from kiln.safety import NSFWChecker, is_nsfw
from kiln.settings import NSFW_CLASSES
from tests.conftest import inference, post
from tests.service.fakes import fake_kiln


def det(cls: str, score: float) -> dict:
    return {"class": cls, "score": score, "box": [0, 0, 10, 10]}


@pytest.mark.parametrize(
    ("detections", "expected"),
    [
        ([], False),
        ([det("FACE_FEMALE", 0.99), det("FEET_EXPOSED", 0.9), det("BELLY_EXPOSED", 0.9)], False),
        ([det("FEMALE_BREAST_COVERED", 0.95), det("MALE_BREAST_EXPOSED", 0.9)], False),
        ([det("FEMALE_BREAST_EXPOSED", 0.49)], False),
        ([det("FEMALE_BREAST_EXPOSED", 0.5)], True),
        ([det("FACE_MALE", 0.9), det("MALE_GENITALIA_EXPOSED", 0.7)], True),
        ([det("BUTTOCKS_EXPOSED", 0.8)], True),
        ([det("ANUS_EXPOSED", 0.6)], True),
        ([det("FEMALE_GENITALIA_EXPOSED", 0.31), det("FEMALE_GENITALIA_EXPOSED", 0.55)], True),
    ],
)
def test_default_rule(detections, expected):
    assert is_nsfw(detections, NSFW_CLASSES, 0.5) is expected


def test_classes_and_threshold_are_configurable():
    detections = [det("BELLY_EXPOSED", 0.4)]
    assert not is_nsfw(detections, NSFW_CLASSES, 0.5)
    assert is_nsfw(detections, ("BELLY_EXPOSED",), 0.3)
    assert not is_nsfw(detections, ("BELLY_EXPOSED",), 0.45)


class RecordingDetector:
    def __init__(self, detections):
        self.detections = detections
        self.seen: list[np.ndarray] = []

    def detect(self, image):
        self.seen.append(image)
        return self.detections


def test_the_detector_gets_a_bgr_array_and_is_loaded_once():
    detector = RecordingDetector([det("BUTTOCKS_EXPOSED", 0.9)])
    loads = []
    checker = NSFWChecker(NSFW_CLASSES, 0.5, lambda: loads.append(1) or detector)
    red = Image.new("RGBA", (32, 16), (255, 0, 0, 255))
    assert checker.check(red) is True
    assert checker.check(red) is True
    (array, _) = detector.seen
    assert array.shape == (16, 32, 3) and array.dtype == np.uint8
    assert tuple(array[0, 0]) == (0, 0, 255)  # blue, green, red
    assert loads == [1]


def test_the_real_detector_runs_on_an_image():
    checker = NSFWChecker(NSFW_CLASSES, 0.5)
    detections = checker.detect(Image.new("RGB", (128, 128), (200, 180, 160)))
    assert isinstance(detections, list)
    assert all({"class", "score", "box"} <= set(d) for d in detections)


@pytest.mark.parametrize(
    "fields",
    [{"checkNSFW": True}, {"safety": {"checkContent": True}}, {"safety": {"mode": "fast"}},
     {"safety": {"mode": "full", "checkContent": None, "tolerance": None}}],
)
def test_asking_for_the_check_gives_a_boolean(client, fields):
    (item,) = post(client, [inference(**fields)]).json()["data"]
    assert item["NSFWContent"] is False  # the demo model draws noise


@pytest.mark.parametrize(
    "fields",
    [{}, {"checkNSFW": False}, {"safety": {"checkContent": False}},
     {"safety": {"mode": "none", "checkContent": True}}],
)
def test_not_asking_gives_no_field(client, fields):
    (item,) = post(client, [inference(**fields)]).json()["data"]
    assert "NSFWContent" not in item and "imageUUID" in item


def test_a_flagged_image_is_reported_true(settings):
    with fake_kiln(settings) as (client, _, services):
        services.nsfw = NSFWChecker(
            services.settings.nsfw_classes, 0.5,
            lambda: RecordingDetector([det("FEMALE_BREAST_EXPOSED", 0.8)]),
        )
        (item,) = post(client, [inference(checkNSFW=True)]).json()["data"]
    assert item["NSFWContent"] is True


def test_checking_input_images_is_refused_not_ignored(client):
    (error,) = post(client, [inference(safety={"checkInputs": True})]).json()["errors"]
    assert (error["code"], error["parameter"]) == ("unsupportedParameter", "safety.checkInputs")
