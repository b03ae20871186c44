"""A single-file `.safetensors` checkpoint, registered in the catalog, serves through the API."""

from __future__ import annotations

import numpy as np

from kiln.engine.single_file import write_single_file_checkpoint
from kiln.models import CatalogEntry
from tests.conftest import SD, decode_image, inference, post


def test_single_file_checkpoint_generates_the_same_image_as_its_folder(client, services, tmp_path):
    folder = services.catalog.get(SD).path
    checkpoint = tmp_path / "tiny-sd.safetensors"
    write_single_file_checkpoint(folder, checkpoint, "sd1x")
    services.catalog.add(CatalogEntry(
        air="test:tiny-sd-single@1", name="tiny-sd-single", version="1", category="checkpoint",
        architecture="sd1x", path=str(checkpoint), config_path=folder,
    ))
    from_folder = post(client, [inference(model=SD)]).json()["data"][0]
    from_file = post(client, [inference(model="test:tiny-sd-single@1")]).json()["data"][0]
    a = np.asarray(decode_image(from_folder), dtype=np.int16)
    b = np.asarray(decode_image(from_file), dtype=np.int16)
    assert np.abs(a - b).max() <= 1


def test_a_catalogued_model_whose_files_are_gone_is_a_typed_error(client, services, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    services.catalog.add(CatalogEntry(
        air="test:broken@1", name="broken", version="1", category="checkpoint",
        architecture="sd1x", path=str(broken),
    ))
    task = inference(model="test:broken@1")
    response = post(client, [task])
    assert response.status_code == 500
    (error,) = response.json()["errors"]
    assert error["code"] == "modelUnavailable"
    assert error["taskUUID"] == task["taskUUID"]
