"""The NSFW check: NudeNet's detector (its wheel ships the ONNX model) and Kiln's rule for
which of its detections make an image NSFW.

The detector finds body parts and returns, per part, a class name and a score (0-1). An image
is NSFW when any detection has a class of `classes` (configurable; `kiln.settings.NSFW_CLASSES`
by default) with a score of at least `threshold`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import numpy as np
from PIL import Image

Detection = Mapping[str, Any]
"""One NudeNet detection: `{"class": "FEMALE_BREAST_EXPOSED", "score": 0.83, "box": [...]}`."""


class Detector(Protocol):
    def detect(self, image: Any) -> list[dict[str, Any]]: ...


def is_nsfw(detections: Iterable[Detection], classes: Iterable[str], threshold: float) -> bool:
    """Whether any detection of a flagged class reaches `threshold`.

    >>> is_nsfw([{"class": "FACE_FEMALE", "score": 0.9}], ["FEMALE_BREAST_EXPOSED"], 0.5)
    False
    >>> is_nsfw([{"class": "FEMALE_BREAST_EXPOSED", "score": 0.5}], ["FEMALE_BREAST_EXPOSED"], 0.5)
    True
    """
    flagged = frozenset(classes)
    return any(d.get("class") in flagged and float(d.get("score", 0)) >= threshold for d in detections)


def _nudenet_detector() -> Detector:
    from nudenet import NudeDetector

    return NudeDetector()


class NSFWChecker:
    """Runs the detector on images; thread-safe, the model is loaded once on first use."""

    def __init__(
        self,
        classes: Iterable[str],
        threshold: float,
        detector_factory: Callable[[], Detector] = _nudenet_detector,
    ) -> None:
        self.classes = tuple(classes)
        self.threshold = threshold
        self._factory = detector_factory
        self._detector: Detector | None = None
        self._lock = threading.Lock()

    def detect(self, image: Image.Image) -> list[dict[str, Any]]:
        """NudeNet's detections for `image` (it takes a BGR array, not a PIL image)."""
        with self._lock:
            if self._detector is None:
                self._detector = self._factory()
        bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
        return self._detector.detect(bgr)

    def check(self, image: Image.Image) -> bool:
        """Whether `image` is NSFW under this checker's classes and threshold."""
        return is_nsfw(self.detect(image), self.classes, self.threshold)
