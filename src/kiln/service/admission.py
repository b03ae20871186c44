"""Admission limits: work the fronts accept is bounded, so no client can grow their memory
without end. A task over a limit is refused at once with `rateLimitExceeded` (HTTP 429): retry
later.

The counts live in the database (`kiln.storage.AdmissionRepository`), so every front of one
database shares them: two fronts with a limit of 10 tasks hold 10 tasks in all, not 20. The
tickets of a front that died stop counting when its heartbeat goes stale.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable

from kiln.errors import RateLimitError
from kiln.storage import AdmissionRepository, Database

log = logging.getLogger(__name__)


class Ticket:
    """The admission of one task; `release()` (idempotent) gives its share back."""

    def __init__(self, admission: Admission, ticket_id: str) -> None:
        self._admission = admission
        self._ticket_id = ticket_id
        self._released = False

    def release(self) -> None:
        """Give the share back (blocking: call it off the event loop). Never raises: a ticket
        the database does not take back now is given back with the next admission."""
        if not self._released:
            self._released = True
            self._admission._release(self._ticket_id)


class Admission:
    """At most `max_tasks` tasks in flight in all (queued, running or delivering, on every live
    front), and at most `max_results_per_key` requested results (`numberResults`) in flight per
    API key.

    Admitting is atomic across fronts. Every method reads or writes the database: call them off
    the event loop.
    """

    def __init__(self, db: Database, front_id: str, *, max_results_per_key: int, max_tasks: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.max_results_per_key = max_results_per_key
        self.max_tasks = max_tasks
        self._tickets = AdmissionRepository(db)
        self._front_id = front_id
        self._clock = clock
        self._lock = threading.Lock()
        self._unreleased: set[str] = set()  # released while the database did not answer

    def admit(self, key: str, results: int = 1) -> Ticket:
        """Count a task asking for `results` results of `key`, or raise `RateLimitError`."""
        ticket_id = str(uuid.uuid4())
        with self._lock:
            unreleased = set(self._unreleased)
        admitted, in_flight = self._tickets.admit(
            ticket_id, front_id=self._front_id, key_id=key, results=results,
            max_tasks=self.max_tasks, max_results_per_key=self.max_results_per_key,
            now=self._clock(), released=unreleased,
        )
        with self._lock:
            self._unreleased -= unreleased
        if admitted:
            return Ticket(self, ticket_id)
        if in_flight.tasks >= self.max_tasks:
            raise RateLimitError(
                f"The server's queue is full ({self.max_tasks} tasks in flight); retry later "
                f"with backoff.",
                code="rateLimitExceeded",
            )
        raise RateLimitError(
            f"This API key has {in_flight.key_results} results in flight and may have at most "
            f"{self.max_results_per_key}; this task asks for {results}. Retry when some "
            f"have finished.",
            code="rateLimitExceeded",
            parameter="numberResults",
        )

    def in_flight(self, key: str) -> int:
        """Results in flight for `key`, on every live front."""
        return self._tickets.results_in_flight(key, front_id=self._front_id, now=self._clock())

    def _release(self, ticket_id: str) -> None:
        try:
            self._tickets.release([ticket_id])
        except Exception:  # noqa: BLE001 - retried with the next admission
            log.warning("admission ticket %s not released now; retried later", ticket_id)
            with self._lock:
                self._unreleased.add(ticket_id)
