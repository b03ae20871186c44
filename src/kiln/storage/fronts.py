"""The fronts: every `kiln serve` process on this database, alive while its heartbeat is fresh.

A front that stops cleanly deletes its row; one that is killed stops beating. Either way, after
`STALE_AFTER_S` at most, the others count it dead: its admission tickets no longer count and
its unfinished tasks are answered as interrupted. Fronts compare their clocks with each other's
heartbeats, so their clocks must agree to within a fraction of `STALE_AFTER_S` (NTP does).
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, delete, or_, select

from kiln.storage.database import Database
from kiln.storage.schema import admission_tickets, fronts

HEARTBEAT_INTERVAL_S = 2.0
STALE_AFTER_S = 10.0
"""A front whose heartbeat is older than this is dead (five beats missed)."""
FORGOTTEN_AFTER_S = 60.0
"""The row of a dead front is deleted this long after its last heartbeat."""


def on_live_front(front_id: ColumnElement[str], now: float, own: str | None = None) -> ColumnElement[bool]:
    """SQL: `front_id` names a live front at `now`, or is `own` (a front is alive to itself)."""
    live = front_id.in_(select(fronts.c.front_id).where(fronts.c.heartbeat_at >= now - STALE_AFTER_S))
    return live if own is None else or_(front_id == own, live)


class FrontRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def beat(self, front_id: str, now: float) -> None:
        """Register `front_id` as alive at `now` (again, if it was counted dead and forgotten)."""
        insert = self._db.insert(fronts).values(front_id=front_id, started_at=now, heartbeat_at=now)
        with self._db.write() as conn:
            conn.execute(insert.on_conflict_do_update(
                index_elements=["front_id"], set_={"heartbeat_at": insert.excluded.heartbeat_at}))

    def deregister(self, front_id: str) -> None:
        """A clean shutdown: the front and its admission tickets are gone at once."""
        with self._db.write() as conn:
            conn.execute(delete(admission_tickets).where(admission_tickets.c.front_id == front_id))
            conn.execute(delete(fronts).where(fronts.c.front_id == front_id))

    def live(self, now: float) -> list[str]:
        """The ids of the fronts alive at `now`, oldest first."""
        query = (select(fronts.c.front_id).where(fronts.c.heartbeat_at >= now - STALE_AFTER_S)
                 .order_by(fronts.c.started_at, fronts.c.front_id))
        with self._db.read() as conn:
            return list(conn.execute(query).scalars())

    def forget_dead(self, now: float) -> None:
        """Delete the rows of fronts dead for `FORGOTTEN_AFTER_S`, and every admission ticket
        of a front that is not alive (those no longer count anyway)."""
        with self._db.write() as conn:
            conn.execute(delete(fronts).where(fronts.c.heartbeat_at < now - FORGOTTEN_AFTER_S))
            conn.execute(delete(admission_tickets).where(
                ~on_live_front(admission_tickets.c.front_id, now)))
