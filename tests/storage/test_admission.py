"""Admission tickets: both limits hold across fronts, admitting is atomic when fronts race, and
the tickets of a dead front stop counting."""

from __future__ import annotations

import threading
import time
import uuid

from kiln.storage import STALE_AFTER_S, AdmissionRepository, FrontRepository, InFlight


def admit(db, front: str, key: str = "key", results: int = 1, *, max_tasks: int = 10,
          max_results_per_key: int = 10, now: float | None = None, released=()) -> bool:
    admitted, _ = AdmissionRepository(db).admit(
        str(uuid.uuid4()), front_id=front, key_id=key, results=results, max_tasks=max_tasks,
        max_results_per_key=max_results_per_key, now=time.time() if now is None else now,
        released=released)
    return admitted


def test_the_limits_count_the_tickets_of_every_live_front(db, second_db):
    now = time.time()
    FrontRepository(db).beat("a", now)
    FrontRepository(second_db).beat("b", now)
    tickets = AdmissionRepository(db)
    assert tickets.admit("1", front_id="a", key_id="key", results=3, max_tasks=3,
                         max_results_per_key=5, now=now) == (True, InFlight(0, 0))
    assert admit(second_db, "b", results=2, max_tasks=3, max_results_per_key=5)
    # per key: 5 results in flight on two fronts, one more is too many; another key fits
    assert tickets.admit("2", front_id="a", key_id="key", results=1, max_tasks=3,
                         max_results_per_key=5, now=now) == (False, InFlight(2, 5))
    assert admit(db, "a", key="other", max_tasks=3)
    # in all: three tasks in flight
    assert not admit(second_db, "b", key="third", max_tasks=3)
    tickets.release(["1"])
    assert tickets.results_in_flight("key", front_id="a", now=now) == 2
    assert admit(second_db, "b", key="third", max_tasks=3)


def test_racing_fronts_never_admit_more_than_the_limit(db, second_db):
    now = time.time()
    for front, handle in (("a", db), ("b", second_db)):
        FrontRepository(handle).beat(front, now)
    admitted: list[bool] = []

    def race(handle, front: str) -> None:
        for _ in range(10):
            admitted.append(admit(handle, front, results=1, max_tasks=7, max_results_per_key=100))

    threads = [threading.Thread(target=race, args=(handle, front))
               for front, handle in (("a", db), ("b", second_db), ("a", db), ("b", second_db))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert admitted.count(True) == 7 and len(admitted) == 40


def test_the_tickets_of_a_dead_front_do_not_count(db):
    now = time.time()
    FrontRepository(db).beat("killed", now - STALE_AFTER_S - 1)
    assert admit(db, "killed", max_tasks=1, now=now - STALE_AFTER_S - 1)
    assert admit(db, "alive", max_tasks=1, now=now)  # the killed front's ticket is ignored
    # a front's own tickets count even before its first heartbeat
    assert not admit(db, "alive", key="other", max_tasks=1, now=now)


def test_tickets_given_back_while_the_database_was_away_are_deleted_with_the_next_admission(db):
    tickets = AdmissionRepository(db)
    tickets.admit("stuck", front_id="a", key_id="key", results=1, max_tasks=1,
                  max_results_per_key=10, now=time.time())
    assert not admit(db, "a", max_tasks=1)
    assert admit(db, "a", max_tasks=1, released=["stuck"])
