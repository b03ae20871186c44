"""A database that goes away: tasks are answered `serviceUnavailable` (503) at once and `/ready`
fails, instead of hanging; when it comes back, so does the server, with no restart."""

from __future__ import annotations

import time

from kiln.models import Catalog
from kiln.models.demo import init_demo_models
from kiln.settings import Settings
from kiln.storage import Database
from tests.conftest import API_KEY, inference, post
from tests.postgres import postgres_server, require_postgres
from tests.service.fakes import fake_kiln, get_response


def wait_ready(client, ready: bool, timeout_s: float = 20) -> dict:
    deadline = time.monotonic() + timeout_s
    while (response := client.get("/ready")).status_code != (200 if ready else 503):
        assert time.monotonic() < deadline, response.json()
        time.sleep(0.05)
    return response.json()


def test_a_stopped_postgresql_is_a_typed_error_and_the_server_recovers(data_dir, tmp_path):
    require_postgres()
    with postgres_server() as server:  # its own: stopping it disturbs no other test
        url = server.create_database()
        db = Database(url)
        init_demo_models(Catalog(db), data_dir / "models", log=lambda _: None)
        db.close()
        settings = Settings(data_dir=tmp_path, database_url=url, api_keys=(API_KEY,),
                            public_url="http://testserver", torch_threads=1)
        with fake_kiln(settings) as (client, _, _):
            wait_ready(client, True)
            done = inference()
            assert post(client, [done]).status_code == 200
            server.stop()
            started = time.monotonic()
            response = post(client, [inference()])
            assert response.status_code == 503
            (error,) = response.json()["errors"]
            assert (error["code"], error["taskType"]) == ("serviceUnavailable", "imageInference")
            polled = post(client, [{"taskType": "getResponse", "taskUUID": done["taskUUID"]}])
            assert polled.status_code == 503
            assert polled.json()["errors"][0]["code"] == "serviceUnavailable"
            assert time.monotonic() - started < 5  # no hang
            assert wait_ready(client, False)["checks"]["database"].startswith("unreachable")
            server.start()
            wait_ready(client, True)
            assert get_response(client, done["taskUUID"])["data"][0]["status"] == "success"
            assert post(client, [inference()]).status_code == 200
