"""ControlNet preprocessors: from an input image to the guide image a ControlNet expects.

The ones that need no model weights are built in (`BUILT_IN`); the others (depth, openpose,
...) need annotator weights that Kiln does not ship, and asking for one is a typed error that
says so.
"""

from __future__ import annotations

from kiln.preprocess.builtin import BUILT_IN, CannyThresholds, run_preprocessor

__all__ = ["BUILT_IN", "CannyThresholds", "run_preprocessor"]
