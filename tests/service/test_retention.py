"""Retention: images and task records are deleted when their time is up (`KILN_MEDIA_TTL`,
`KILN_TASK_TTL`), by the server and by `kiln media prune`; task records keep no copy of inline
images."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time

import pytest

from kiln.keys import key_id
from kiln.models import Catalog
from kiln.settings import Settings
from kiln.storage import Database, TaskRepository
from tests.conftest import API_KEY, SD, cli_env, inference, new_uuid, post
from tests.images import b64, gradient
from tests.service.fakes import fake_kiln, get_response, kill_front, start_held_tasks


@pytest.fixture
def own_settings(settings, services, tmp_path, own_database_url) -> Settings:
    """The session's settings on a data directory and a database of this test's own (purging
    them cannot touch other tests' images), with the tiny SD model registered."""
    own = dataclasses.replace(settings, data_dir=tmp_path, database_url=own_database_url)
    db = Database.open(own)
    Catalog(db).add(services.catalog.get(SD))
    db.close()
    return own


def upload(client) -> str:
    response = post(client, [{"taskType": "imageUpload", "taskUUID": new_uuid(),
                              "image": b64(gradient(64, 64))}])
    assert response.status_code == 200, response.text
    return response.json()["data"][0]["imageUUID"]


def test_images_older_than_the_media_ttl_are_deleted(own_settings):
    with fake_kiln(own_settings, task_ttl_s=0.2, media_ttl_s=0.5) as (client, _, services):
        old = upload(client)
        assert client.get(f"/media/{old}.png").status_code == 200
        time.sleep(0.6)
        new = upload(client)
        assert services.retention.purge().images == 1
        assert client.get(f"/media/{old}.png").status_code == 404
        assert not (own_settings.media_dir / f"{old}.png").exists()
        assert client.get(f"/media/{new}.png").status_code == 200
        [error] = post(client, [inference(seedImage=old)]).json()["errors"]
        assert (error["code"], error["parameter"]) == ("invalidSeedImage", "seedImage")


def test_a_task_a_stopped_kiln_never_finished_is_purged_after_the_task_ttl(own_settings):
    with fake_kiln(own_settings) as (client, engine, first):
        [task_uuid] = start_held_tasks(client, engine)
        kill_front(first)  # to a second Kiln on the same data, its unfinished task is a crash's
        with fake_kiln(own_settings, task_ttl_s=0.3) as (restarted, _, services):
            assert get_response(restarted, task_uuid)["errors"][0]["code"] == "taskFailed"
            time.sleep(0.4)
            assert services.retention.purge().tasks == 1
            assert get_response(restarted, task_uuid)["errors"][0]["code"] == "taskNotFound"


@pytest.mark.parametrize(("output_type", "field"), [("base64Data", "imageBase64Data"),
                                                     ("dataURI", "imageDataURI")])
def test_task_records_keep_no_copy_of_inline_images(own_settings, output_type, field):
    with fake_kiln(own_settings) as (client, _, services):
        task = inference(outputType=output_type, numberResults=2)
        sent = post(client, [task]).json()["data"]
        stored = TaskRepository(services.db).get(
            key_id(API_KEY), task["taskUUID"], front_id=services.front.front_id, now=time.time())
        bodies = [body for _kind, body in stored.replies]
        assert len(bodies) == 2 and all(json.loads(body)[field] is None for body in bodies)
        polled = get_response(client, task["taskUUID"])["data"]
    assert [{**item, "status": "success"} for item in sent] == polled
    assert all(len(item[field]) > 100 for item in polled)


def test_half_written_images_are_deleted_at_start(own_settings):
    own_settings.media_dir.mkdir(parents=True)
    partial = own_settings.media_dir / f"{new_uuid()}.part"
    partial.write_bytes(b"\x89PNG half")
    with fake_kiln(own_settings):
        assert not partial.exists()


def test_kiln_media_prune_deletes_expired_images(own_settings):
    with fake_kiln(own_settings) as (client, _, _):
        image_uuid = upload(client)
    assert (own_settings.media_dir / f"{image_uuid}.png").exists()
    result = subprocess.run(
        [sys.executable, "-m", "kiln.cli", "--data-dir", str(own_settings.data_dir),
         "media", "prune", "--older-than", "0"], capture_output=True, text=True, timeout=120,
        env=cli_env(own_settings))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("deleted 1 images")
    assert not (own_settings.media_dir / f"{image_uuid}.png").exists()


def test_media_may_not_expire_before_the_task_records_that_show_them():
    with pytest.raises(ValueError, match="KILN_MEDIA_TTL .* must be at least KILN_TASK_TTL"):
        Settings.from_env({"KILN_MEDIA_TTL": "60", "KILN_TASK_TTL": "120"})
