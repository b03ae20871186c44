"""Kiln's inference engine: the only package that imports torch and diffusers.

The service layer hands it a `kiln.generation.GenerationRequest` and receives PIL images.
"""

from __future__ import annotations

import os

# Kiln never reaches a model hub: set before huggingface_hub reads it at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from .engine import Engine  # noqa: E402

__all__ = ["Engine"]
