"""Loading annotator models once per (kind, path, device) into a model residency.

Each annotator module hands `load_once` a loader; the first call runs it (two first requests
at once load the files once; a slow load blocks only requests for the same model), later calls
return what it built while it stays resident. The engine passes its own residency, so annotators
share its byte budget with the pipelines; without one, a residency of this module's is used.
A loader that fails raises `ModelLoadError` naming the preprocessor and the path, so a client
sees `modelUnavailable` and the operator reads what was wrong with the registered files.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch

from kiln.engine.devices import default_memory_budget
from kiln.engine.residency import Residency, file_bytes
from kiln.errors import KilnError, ModelLoadError

T = TypeVar("T")

_shared: dict[str, Residency] = {}
_lock = threading.Lock()  # guards `_shared`


@dataclass(frozen=True)
class AnnotatorOptions:
    """Per-request options some annotators take."""

    hands_and_face: bool = False
    """openpose: draw hand and face keypoints too (needs a whole-body pose model)."""


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def shared_residency(device: str) -> Residency:
    """The residency of annotators run without an engine's, one per device."""
    with _lock:
        if device not in _shared:
            _shared[device] = Residency(default_memory_budget(device), device)
        return _shared[device]


def load_once(
    kind: str,
    path: str,
    device: str,
    loader: Callable[[str, str], T],
    residency: Residency | None = None,
) -> T:
    """`loader(path, device)`, run once per (kind, path, device) and kept in `residency` (by
    default `shared_residency(device)`) for later calls."""

    def load() -> T:
        try:
            return loader(path, device)
        except KilnError:
            raise
        except Exception as error:
            raise ModelLoadError(
                f"The '{kind}' annotator at {path} could not be loaded: {error}",
                parameter="preProcessorType",
            ) from error

    residency = residency or shared_residency(device)
    return residency.get(("annotator", kind, path, device), load, expected_size=file_bytes(path))
