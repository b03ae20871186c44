"""Preprocessors that run a registered annotator model, through the REST API: each of them
registered with a tiny random-weight model of the real architecture, saved as the real ones are
distributed, and unregistered (the typed error that says what to register)."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kiln.engine.annotators.segmentation import ADE20K_PALETTE
from kiln.models import CatalogEntry
from kiln.preprocess import ANNOTATED
from tests.conftest import new_uuid, post
from tests.engine.annotators.test_depth import tiny_depth_model
from tests.engine.annotators.test_edges import tiny_softedge_model
from tests.engine.annotators.test_exported import tiny_anime_line_art_model
from tests.engine.annotators.test_normals import tiny_normals_model
from tests.engine.annotators.test_pose import tiny_pose_model
from tests.engine.annotators.test_segmentation import tiny_segmentation_model
from tests.service.test_lora import pixels
from tests.service.test_preprocess import preprocess, run, scene_png


def is_grey(guide: np.ndarray) -> bool:
    return guide.ndim == 2 or bool((guide == guide[..., :1]).all())


def palette_colours_only(guide: np.ndarray) -> bool:
    palette = {tuple(colour) for colour in ADE20K_PALETTE.tolist()}
    return {tuple(colour) for colour in guide.reshape(-1, 3).tolist()} <= palette


def unit_normals(guide: np.ndarray) -> bool:
    normals = guide.astype(np.float32) / 255 * 2 - 1
    return bool(np.abs(np.linalg.norm(normals, axis=-1) - 1).max() < 0.05)


def joint_at_the_centre_only(guide: np.ndarray) -> bool:
    height, width = guide.shape[:2]
    drawn = guide.any(axis=-1)
    ys, xs = np.nonzero(drawn)
    return bool(drawn[height // 2, width // 2]) and np.hypot(ys - height / 2, xs - width / 2).max() < 8


KINDS: dict[str, tuple[Callable[[Path], str], Callable[[np.ndarray], bool]]] = {
    "depth": (tiny_depth_model, is_grey),
    "seg": (tiny_segmentation_model, palette_colours_only),
    "openpose": (partial(tiny_pose_model, centred=True), joint_at_the_centre_only),
    "normalbae": (tiny_normals_model, unit_normals),
    "softedge": (tiny_softedge_model, is_grey),
    "lineart_anime": (tiny_anime_line_art_model, is_grey),
}
"""Preprocessor → (builder of its tiny model, what its guide image must look like)."""


@contextmanager
def registered(services, kind: str, path: str) -> Iterator[str]:
    """`path` registered as the `kind` annotator for the block (the session's catalog is shared
    and modelSearch tests count its entries)."""
    air = f"kiln:test-{kind.replace('_', '-')}-annotator@1"
    services.catalog.add(CatalogEntry(
        air=air, name=f"test-{kind}", version="1", category="annotator", architecture="sd1x",
        path=path, conditioning=kind,
    ))
    try:
        yield air
    finally:
        services.catalog.remove(air)


def decoded(item: dict) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(item["guideImageBase64Data"]))))


def test_every_annotated_preprocessor_is_tested_here():
    assert set(KINDS) == set(ANNOTATED)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_registered_annotator_serves_its_preprocessor(client, services, tmp_path, kind):
    build, looks_right = KINDS[kind]
    wide = base64.b64encode(scene_png((192, 96))).decode()
    with registered(services, kind, build(tmp_path)):
        item = run(client, preProcessorType=kind, inputImage=wide, width=160)
        guide = decoded(item)
        assert guide.shape[:2] == (80, 160)  # downscaled to width 160, keeping the aspect
        assert looks_right(guide)
        again = decoded(run(client, preProcessorType=kind, inputImage=wide, width=160))
        assert np.array_equal(guide, again)  # loaded once, deterministic


def test_a_guide_from_an_annotator_steers_a_controlnet(client, services, tmp_path):
    with registered(services, "seg", tiny_segmentation_model(tmp_path)):
        item = run(client, preProcessorType="seg_ofade20k")
    control = {"model": "kiln:tiny-controlnet@1"}
    by_uuid = pixels(client, controlNet=[{**control, "guideImage": item["guideImageUUID"]}])
    by_data = pixels(client, controlNet=[{**control, "guideImage": item["guideImageBase64Data"]}])
    assert np.array_equal(by_uuid, by_data)
    assert not np.array_equal(by_uuid, pixels(client))


def test_model_search_lists_annotators_with_their_conditioning(client, services, tmp_path):
    with registered(services, "depth", tiny_depth_model(tmp_path)) as air:
        search = {"taskType": "modelSearch", "taskUUID": new_uuid(), "category": "annotator"}
        (item,) = post(client, [search]).json()["data"]
    (result,) = item["results"]
    assert (result["air"], result["category"], result["conditioning"]) == (air, "annotator", "depth")


@pytest.mark.parametrize("kind", sorted(ANNOTATED))
def test_an_unregistered_annotator_says_what_to_register(client, kind):
    response = post(client, [preprocess(preProcessorType=kind)])
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert (error["code"], error["parameter"]) == ("unsupportedPreProcessorType", "preProcessorType")
    assert f"kiln models add PATH --category annotator --conditioning {kind}" in error["message"]
    assert ANNOTATED[kind] in error["message"] and "canny" in error["message"]


def test_files_that_do_not_load_are_model_unavailable_and_the_next_task_runs(client, services, tmp_path):
    broken = tmp_path / "dexined.pth"
    broken.write_bytes(b"not a checkpoint")
    with registered(services, "softedge", str(broken)):
        response = post(client, [preprocess(preProcessorType="softedge_pidinet"), preprocess()])
    (error,) = response.json()["errors"]
    assert (error["code"], error["parameter"]) == ("modelUnavailable", "preProcessorType")
    assert str(broken) in error["message"]
    assert len(response.json()["data"]) == 1  # the canny task beside it still ran


def test_hands_and_face_need_a_whole_body_pose_model(client, services, tmp_path):
    with registered(services, "openpose", tiny_pose_model(tmp_path)):
        response = post(client, [preprocess(preProcessorType="openpose_full", includeHandsAndFaceOpenPose=True)])
    error = response.json()["errors"][0]
    assert (error["code"], error["parameter"]) == ("unsupportedParameter", "includeHandsAndFaceOpenPose")
