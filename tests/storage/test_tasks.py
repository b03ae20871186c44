"""Task records: claimed once per key, replies in order, and the liveness of the front that runs
each unfinished task, as any front of the database sees it."""

from __future__ import annotations

import time

from kiln.storage import STALE_AFTER_S, FrontRepository, TaskRepository


def test_a_task_is_claimed_once_per_key_and_reclaimed_after_it_expired(db):
    tasks = TaskRepository(db)
    assert tasks.claim("key", "t", "imageInference", front_id="f", now=10.0, expired_before=0.0)
    assert not tasks.claim("key", "t", "imageInference", front_id="f", now=11.0, expired_before=0.0)
    assert tasks.claim("other", "t", "imageUpload", front_id="f", now=11.0, expired_before=0.0)
    tasks.add_reply("key", "t", "data", '{"old": true}')
    tasks.finish("key", "t", 12.0)
    # finished at 12: expired for a claim that counts records finished before 13 as expired
    assert not tasks.claim("key", "t", "imageInference", front_id="f", now=13.0, expired_before=12.0)
    assert tasks.claim("key", "t", "modelSearch", front_id="f", now=13.0, expired_before=13.0)
    stored = tasks.get("key", "t", front_id="f", now=13.0)
    assert stored is not None and (stored.task_type, stored.finished_at, stored.replies) == (
        "modelSearch", None, ())


def test_replies_come_back_in_order(db):
    tasks = TaskRepository(db)
    tasks.claim("key", "t", "imageInference", front_id="f", now=1.0, expired_before=0.0)
    for number in range(5):
        tasks.add_reply("key", "t", "error" if number == 3 else "data", f'{{"n": {number}}}')
    stored = tasks.get("key", "t", front_id="f", now=1.0)
    assert stored is not None
    assert [body for _kind, body in stored.replies] == [f'{{"n": {n}}}' for n in range(5)]
    assert [kind for kind, _body in stored.replies] == ["data", "data", "data", "error", "data"]
    assert tasks.get("other-key", "t", front_id="f", now=1.0) is None


def test_a_task_is_alive_while_its_front_beats(db, second_db):
    now = time.time()
    tasks, fronts = TaskRepository(db), FrontRepository(db)
    fronts.beat("running", now)
    tasks.claim("key", "t", "imageInference", front_id="running", now=now, expired_before=0.0)
    seen_by_other = TaskRepository(second_db).get
    assert seen_by_other("key", "t", front_id="other", now=now).front_alive  # type: ignore[union-attr]
    later = now + STALE_AFTER_S + 1  # no heartbeat since: killed
    assert not seen_by_other("key", "t", front_id="other", now=later).front_alive  # type: ignore[union-attr]
    assert seen_by_other("key", "t", front_id="running", now=later).front_alive  # type: ignore[union-attr]
    fronts.deregister("running")  # a clean shutdown: dead at once
    assert not seen_by_other("key", "t", front_id="other", now=now).front_alive  # type: ignore[union-attr]


def test_purge_deletes_expired_records_and_those_of_dead_fronts(db):
    now = time.time()
    tasks = TaskRepository(db)
    FrontRepository(db).beat("alive", now)
    for task_uuid, front in (("done", "alive"), ("running", "alive"), ("orphan", "dead"),
                             ("recent-orphan", "dead"), ("own", "me")):
        tasks.claim("key", task_uuid, "imageInference", front_id=front,
                    now=now if task_uuid == "recent-orphan" else now - 100, expired_before=0.0)
        tasks.add_reply("key", task_uuid, "data", "{}")
    tasks.finish("key", "done", now - 50)
    assert tasks.purge(now - 10, front_id="me", now=now) == 2  # done, orphan
    left = {task_uuid for task_uuid in ("done", "running", "orphan", "recent-orphan", "own")
            if tasks.get("key", task_uuid, front_id="me", now=now) is not None}
    assert left == {"running", "recent-orphan", "own"}
