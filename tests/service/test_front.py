"""A front: registered when started, beating on its own thread, dead to the others when it stops
beating, gone at once when closed."""

from __future__ import annotations

import time

from kiln.service.front import Front
from kiln.storage import Database, FrontRepository


def test_a_front_beats_until_stopped_and_is_gone_once_closed(tmp_path):
    db = Database(tmp_path / "kiln.sqlite3")
    now = [100.0]
    front = Front(db, interval_s=0.02, clock=lambda: now[0])
    fronts = FrontRepository(db)
    front.start()
    assert fronts.live(100.0) == [front.front_id]
    now[0] = 1000.0
    deadline = time.monotonic() + 10
    while fronts.live(1000.0) != [front.front_id]:  # a later beat
        assert time.monotonic() < deadline
        time.sleep(0.02)
    front.stop()
    now[0] = 2000.0
    time.sleep(0.1)
    assert fronts.live(1000.0) == [front.front_id] and fronts.live(2000.0) == []  # no beat since
    front.close()
    assert fronts.live(1000.0) == []
    db.close()
