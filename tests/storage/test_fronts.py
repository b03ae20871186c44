"""Fronts: alive while their heartbeat is fresh, dead once it is stale or they deregistered,
forgotten a while later; a forgotten front that beats again is alive again."""

from __future__ import annotations

from kiln.storage import STALE_AFTER_S, AdmissionRepository, FrontRepository
from kiln.storage.fronts import FORGOTTEN_AFTER_S


def test_a_front_is_alive_until_its_heartbeat_is_stale(db, second_db):
    fronts = FrontRepository(db)
    fronts.beat("a", 100.0)
    fronts.beat("b", 101.0)
    others_view = FrontRepository(second_db)
    assert others_view.live(102.0) == ["a", "b"]
    fronts.beat("a", 100.0 + STALE_AFTER_S)
    assert others_view.live(101.0 + STALE_AFTER_S + 0.5) == ["a"]


def test_deregistering_ends_a_front_and_its_tickets_at_once(db):
    fronts = FrontRepository(db)
    fronts.beat("a", 100.0)
    fronts.beat("b", 100.0)
    tickets = AdmissionRepository(db)
    for front in ("a", "b"):
        tickets.admit(f"ticket-{front}", front_id=front, key_id="key", results=1, max_tasks=10,
                      max_results_per_key=10, now=100.0)
    fronts.deregister("a")
    assert fronts.live(100.0) == ["b"]
    assert tickets.results_in_flight("key", front_id="c", now=100.0) == 1


def test_dead_fronts_are_forgotten_and_come_back_when_they_beat(db):
    fronts = FrontRepository(db)
    fronts.beat("dead", 100.0)
    fronts.beat("alive", 100.0 + FORGOTTEN_AFTER_S)
    AdmissionRepository(db).admit("ticket", front_id="dead", key_id="key", results=1,
                                  max_tasks=10, max_results_per_key=10, now=100.0)
    fronts.forget_dead(101.0 + FORGOTTEN_AFTER_S)
    assert fronts.live(101.0 + FORGOTTEN_AFTER_S) == ["alive"]
    # its ticket is gone too: were the front to come back, it would not count twice
    assert AdmissionRepository(db).results_in_flight("key", front_id="dead", now=101.0) == 0
    fronts.beat("dead", 102.0 + FORGOTTEN_AFTER_S)
    assert fronts.live(102.0 + FORGOTTEN_AFTER_S) == ["alive", "dead"]
