"""ControlNet preprocessors: from an input image to the guide image a ControlNet expects.

The ones that need no model weights are built in (`BUILT_IN`). Those of `ANNOTATED` run an
annotator model the operator registered (catalog category `annotator`, `conditioning` naming
the preprocessor); the engine runs it (`kiln.engine.annotators`). Together they cover every
`preProcessorType` of the protocol.
"""

from __future__ import annotations

from kiln.preprocess.builtin import BUILT_IN, CannyThresholds, run_preprocessor

ANNOTATED: dict[str, str] = {
    "depth": "a transformers depth-estimation folder (DPT, Depth Anything, GLPN, ZoeDepth)",
    "seg": "a transformers semantic-segmentation folder trained on ADE20K's 150 classes "
    "(UperNet, SegFormer)",
    "openpose": "a transformers VitPose folder (COCO body keypoints)",
    "normalbae": "a diffusers Marigold normals folder (MarigoldNormalsPipeline)",
    "softedge": "a DexiNed checkpoint file (kornia's DexiNed_BIPED_10.pth state dict)",
    "lineart_anime": "a TorchScript file of the Anime2Sketch generator (exported with "
    "controlnet_aux: see kiln.engine.annotators.scripted)",
}
"""The preprocessors that run a registered annotator model → what the operator registers."""

__all__ = ["ANNOTATED", "BUILT_IN", "CannyThresholds", "run_preprocessor"]
