"""Annotator models: the networks some ControlNet preprocessors run to turn an input image into
a guide image (depth maps, segmentation maps, poses, normals, soft edges, anime line art).

Each lives in a file or folder the operator registered in the catalog (category `annotator`,
`conditioning` naming the preprocessor); `kiln.preprocess.ANNOTATED` says which format each
preprocessor takes. `annotate` runs the one for a preprocessor: the model is loaded on first use
and kept (`loading.load_once`); a module is imported only when its preprocessor is first asked
for, so a server that never segments never imports the segmentation code.
"""

from __future__ import annotations

import importlib

from PIL import Image

from kiln.engine.annotators.loading import AnnotatorOptions, default_device

_RUNNERS = {
    "depth": ("depth", "estimate_depth"),
    "seg": ("segmentation", "segment"),
    "openpose": ("pose", "draw_pose"),
    "normalbae": ("normals", "estimate_normals"),
    "softedge": ("edges", "soft_edges"),
    "lineart_anime": ("exported", "anime_line_art"),
}
"""Preprocessor → (module of this package, function(path, image, device, options) -> Image)."""


def annotate(
    kind: str,
    path: str,
    image: Image.Image,
    *,
    device: str | None = None,
    options: AnnotatorOptions | None = None,
) -> Image.Image:
    """The guide image of preprocessor `kind` for `image`, from the annotator at `path`.

    The result has `image`'s size. A model that cannot be loaded raises `ModelLoadError`
    (`modelUnavailable`) naming the path and the cause.
    """
    module_name, function_name = _RUNNERS[kind]
    module = importlib.import_module(f"{__name__}.{module_name}")
    run = getattr(module, function_name)
    return run(path, image, device or default_device(), options or AnnotatorOptions())


__all__ = ["AnnotatorOptions", "annotate"]
