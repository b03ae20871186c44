"""Loading annotator models once per (kind, path, device) and keeping them.

Each annotator module hands `load_once` a loader; the first call runs it (two first requests
at once load the files once; a slow load blocks only requests for the same model), later calls
return what it built. A loader that fails raises
`ModelLoadError` naming the preprocessor and the path, so a client sees `modelUnavailable`
and the operator reads what was wrong with the registered files.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from kiln.errors import KilnError, ModelLoadError

T = TypeVar("T")

_cache: dict[tuple[str, str, str], Any] = {}
_loading: dict[tuple[str, str, str], threading.Lock] = {}
_lock = threading.Lock()  # guards `_loading`


@dataclass(frozen=True)
class AnnotatorOptions:
    """Per-request options some annotators take."""

    hands_and_face: bool = False
    """openpose: draw hand and face keypoints too (needs a whole-body pose model)."""


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_once(kind: str, path: str, device: str, loader: Callable[[str, str], T]) -> T:
    """`loader(path, device)`, run once per (kind, path, device) and kept for later calls."""
    key = (kind, path, device)
    with _lock:
        model_lock = _loading.setdefault(key, threading.Lock())
    with model_lock:
        if key not in _cache:
            try:
                _cache[key] = loader(path, device)
            except KilnError:
                raise
            except Exception as error:
                raise ModelLoadError(
                    f"The '{kind}' annotator at {path} could not be loaded: {error}",
                    parameter="preProcessorType",
                ) from error
        return _cache[key]
