"""ControlNet preprocessors: from an input image to the guide image a ControlNet expects.

The ones that need no model weights are built in (`BUILT_IN`). Those of `ANNOTATED` run an
annotator model the operator registered (catalog category `annotator`, `conditioning` naming
the preprocessor); the engine runs it (`kiln.engine.annotators`). The rest (openpose, ...) are
not available, and asking for one is a typed error that says so.
"""

from __future__ import annotations

from kiln.preprocess.builtin import BUILT_IN, CannyThresholds, run_preprocessor

ANNOTATED = ("depth",)
"""The preprocessors that run a registered annotator model."""

__all__ = ["ANNOTATED", "BUILT_IN", "CannyThresholds", "run_preprocessor"]
