"""Annotator models: the networks some ControlNet preprocessors run to turn an input image into
a guide image (depth maps, segmentation maps, poses, normals, soft edges, anime line art).

Each lives in a file or folder the operator registered in the catalog (category `annotator`,
`conditioning` naming the preprocessor); `kiln.preprocess.ANNOTATED` says which format each
preprocessor takes. `annotate` runs the one for a preprocessor: the model is loaded on first use
and kept in a model residency (`loading.load_once`; the engine's when it runs them through
`Engine.annotate`); a module is imported only when its preprocessor is first asked for, so a
server that never segments never imports the segmentation code.
"""

from __future__ import annotations

import importlib

from PIL import Image

from kiln.engine.annotators.loading import AnnotatorOptions, default_device, load_once
from kiln.engine.residency import Residency

_RUNNERS = {
    "depth": ("depth", "estimate_depth"),
    "seg": ("segmentation", "segment"),
    "openpose": ("pose", "draw_pose"),
    "normalbae": ("normals", "estimate_normals"),
    "softedge": ("edges", "soft_edges"),
    "lineart_anime": ("exported", "anime_line_art"),
}
"""Preprocessor → (module of this package, its function(path, image, device, options,
residency) -> Image). Each module also has `load(path, device)`, which builds the model from
its files."""


def _module(kind: str):
    return importlib.import_module(f"{__name__}.{_RUNNERS[kind][0]}")


def check_annotator(kind: str, path: str, device: str = "cpu") -> None:
    """Load the annotator at `path` for preprocessor `kind`, as a request would: raises
    `ModelLoadError` saying what is wrong with the files (how `kiln models add` refuses them)."""
    load_once(kind, path, device, _module(kind).load)


def annotate(
    kind: str,
    path: str,
    image: Image.Image,
    *,
    device: str | None = None,
    options: AnnotatorOptions | None = None,
    residency: Residency | None = None,
) -> Image.Image:
    """The guide image of preprocessor `kind` for `image`, from the annotator at `path`, whose
    model is kept in `residency` (None: `loading.shared_residency`).

    The result has `image`'s size. A model that cannot be loaded raises `ModelLoadError`
    (`modelUnavailable`) naming the path and the cause.
    """
    run = getattr(_module(kind), _RUNNERS[kind][1])
    return run(path, image, device or default_device(), options or AnnotatorOptions(), residency)


__all__ = ["AnnotatorOptions", "annotate", "check_annotator"]
