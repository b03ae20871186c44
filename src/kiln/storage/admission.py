"""Admission tickets: one row per admitted task in flight, so that the limits of
`kiln.service.admission` hold across every front of the database.

Admitting is atomic across fronts: the count and the new ticket are one transaction under one
lock (a PostgreSQL advisory lock; SQLite's write lock). Tickets of dead fronts do not count.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import delete, func, select

from kiln.storage.database import Database
from kiln.storage.fronts import on_live_front
from kiln.storage.schema import admission_tickets

_ADMISSION_LOCK = 0x6B696C6E_0002  # PostgreSQL advisory lock serialising admissions


@dataclass(frozen=True)
class InFlight:
    """What the live fronts have in flight: tasks in all, and results of one key."""

    tasks: int
    key_results: int


class AdmissionRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    def admit(
        self, ticket_id: str, *, front_id: str, key_id: str, results: int, max_tasks: int,
        max_results_per_key: int, now: float, released: Collection[str] = (),
    ) -> tuple[bool, InFlight]:
        """Store the ticket when, counted with the live fronts' tickets, it fits both limits:
        fewer than `max_tasks` tasks in flight, and at most `max_results_per_key` results of
        `key_id` with its `results`. Returns whether it was stored, and the counts before it.

        `released` are tickets given back earlier whose deletion failed: deleted first.
        """
        live = on_live_front(admission_tickets.c.front_id, now, own=front_id)
        with self._db.write() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(_ADMISSION_LOCK)))
            if released:
                conn.execute(delete(admission_tickets).where(
                    admission_tickets.c.ticket_id.in_(list(released))))
            tasks, key_results = conn.execute(select(
                func.count(),
                func.coalesce(func.sum(admission_tickets.c.results).filter(
                    admission_tickets.c.key_id == key_id), 0),
            ).where(live)).one()
            counts = InFlight(int(tasks), int(key_results))
            if counts.tasks >= max_tasks or counts.key_results + results > max_results_per_key:
                return False, counts
            conn.execute(admission_tickets.insert().values(
                ticket_id=ticket_id, front_id=front_id, key_id=key_id, results=results,
                created_at=now))
            return True, counts

    def release(self, ticket_ids: Collection[str]) -> None:
        with self._db.write() as conn:
            conn.execute(delete(admission_tickets).where(
                admission_tickets.c.ticket_id.in_(list(ticket_ids))))

    def results_in_flight(self, key_id: str, *, front_id: str, now: float) -> int:
        """The results of `key_id` in flight on the live fronts."""
        query = select(func.coalesce(func.sum(admission_tickets.c.results), 0)).where(
            admission_tickets.c.key_id == key_id,
            on_live_front(admission_tickets.c.front_id, now, own=front_id))
        with self._db.read() as conn:
            return int(conn.execute(query).scalar_one())
