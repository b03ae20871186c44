"""Shutdown drains: tasks in flight finish (for up to `KILN_DRAIN_S`), new ones are refused
with `serverShuttingDown`, and what cannot finish is recorded `taskCancelled`: none is lost."""

from __future__ import annotations

import threading
import time

from tests.conftest import inference, post
from tests.service.fakes import fake_kiln, get_response, start_held_tasks


def test_shutdown_lets_the_tasks_in_flight_finish(settings):
    with fake_kiln(settings, drain_s=30) as (client, engine, services):
        held = start_held_tasks(client, engine)
        refused: list[dict] = []

        def during_the_drain() -> None:
            time.sleep(0.3)  # the app is draining by now
            refused.append(post(client, [inference()]).json())
            engine.gate.set()

        threading.Thread(target=during_the_drain).start()
        client.__exit__(None, None, None)  # the lifespan's shutdown: drain, then close
    with fake_kiln(settings) as (restarted, _, _):
        for task_uuid in held:
            [item] = get_response(restarted, task_uuid)["data"]
            assert item["status"] == "success"
    [error] = refused[0]["errors"]
    assert error["code"] == "serverShuttingDown"


def test_what_cannot_finish_in_time_is_recorded_cancelled(settings):
    with fake_kiln(settings, drain_s=0.2) as (client, engine, _):
        held = start_held_tasks(client, engine)
        client.__exit__(None, None, None)
    with fake_kiln(settings) as (restarted, _, _):
        for task_uuid in held:
            [error] = get_response(restarted, task_uuid)["errors"]
            assert (error["code"], error["status"]) == ("taskCancelled", "error")
