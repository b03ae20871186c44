"""ControlNet preprocessors: from an input image to the guide image a ControlNet expects.

The ones that need no model weights are built in (`BUILT_IN`); the others (depth, openpose,
...) need annotator weights that Kiln does not ship, and asking for one is a typed error that
says so.
"""

from __future__ import annotations

from kiln.preprocess.builtin import BUILT_IN, CannyThresholds, run_preprocessor

GROUPS = (
    "canny", "depth", "mlsd", "normalbae", "openpose", "tile", "seg", "lineart",
    "lineart_anime", "shuffle", "scribble", "softedge",
)
"""The `preProcessorType` values of the protocol (PROTOCOL.md 7.3)."""

ALIASES = {
    "depth_leres": "depth", "depth_midas": "depth", "depth_zoe": "depth",
    "inpaint_global_harmonious": "depth", "lineart_coarse": "lineart",
    "lineart_realistic": "lineart", "lineart_standard": "lineart", "normal_bae": "normalbae",
    "openpose_face": "openpose", "openpose_faceonly": "openpose", "openpose_full": "openpose",
    "openpose_hand": "openpose", "scribble_hed": "scribble", "scribble_pidinet": "scribble",
    "seg_ofade20k": "seg", "seg_ofcoco": "seg", "seg_ufade20k": "seg", "softedge_hed": "softedge",
    "softedge_hedsafe": "softedge", "softedge_pidinet": "softedge",
    "softedge_pidisafe": "softedge", "tile_gaussian": "tile",
}
"""The SDKs' fine-grained preprocessor names (`EPreProcessor`) → their protocol group."""

__all__ = ["ALIASES", "BUILT_IN", "GROUPS", "CannyThresholds", "run_preprocessor"]
