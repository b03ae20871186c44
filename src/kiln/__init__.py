"""Kiln: a self-hosted image inference server that speaks Runware's task protocol."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
