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
    "seg": "a transformers semantic-segmentation folder predicting ADE20K's 150 classes "
    "(UperNet such as openmmlab/upernet-convnext-small, SegFormer, BEiT, DPT, Mask2Former)",
    "openpose": "a transformers VitPose folder (COCO's 17 body keypoints, or 133 whole-body "
    "keypoints for includeHandsAndFaceOpenPose), or a folder holding that VitPose folder as "
    "pose/ and a transformers object detector with a 'person' label (e.g. RT-DETR) as detector/ "
    "for several people",
    "normalbae": "a diffusers Marigold normals folder (e.g. prs-eth/marigold-normals-v1-1)",
    "softedge": "a DexiNed checkpoint file (DexiNed_BIPED_10.pth, the state dict kornia loads)",
    "lineart_anime": "an exported program (.pt2) of the Anime2Sketch generator, made with "
    "controlnet_aux as kiln.engine.annotators.exported explains",
}
"""The preprocessors that run a registered annotator model → what the operator registers."""

__all__ = ["ANNOTATED", "BUILT_IN", "CannyThresholds", "run_preprocessor"]
