"""This server process as one front of its database: registered in `fronts` while it runs, so
that the other fronts count its admission tickets and wait for its tasks.

Its heartbeat thread beats every `interval_s` (and forgets the fronts long dead); a front that
is killed stops beating and, `kiln.storage.STALE_AFTER_S` later, the others answer its
unfinished tasks as interrupted. `close()` deregisters at once.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable

from kiln.storage import HEARTBEAT_INTERVAL_S, Database, FrontRepository

log = logging.getLogger(__name__)


class Front:
    def __init__(self, db: Database, interval_s: float = HEARTBEAT_INTERVAL_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.front_id = str(uuid.uuid4())
        self._fronts = FrontRepository(db)
        self._interval_s = interval_s
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Register now (`ServiceUnavailableError` when the database does not answer), then
        beat every `interval_s` until `stop()` or `close()`. A failed beat is logged once per
        outage and tried again at the next interval."""
        self._fronts.beat(self.front_id, self._clock())

        def run() -> None:
            failing = False
            while not self._stop.wait(self._interval_s):
                try:
                    now = self._clock()
                    self._fronts.beat(self.front_id, now)
                    self._fronts.forget_dead(now)
                except Exception:  # noqa: BLE001 - the database may come back
                    if not failing:
                        log.exception("heartbeat of front %s failed", self.front_id)
                    failing = True
                else:
                    if failing:
                        log.info("heartbeat of front %s recovered", self.front_id)
                    failing = False

        self._thread = threading.Thread(target=run, name="kiln-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop beating, as a killed process would: the others count this front dead once its
        heartbeat is stale. Returns once a beat in progress has ended."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def close(self) -> None:
        """Stop beating and deregister: the others count this front dead at once."""
        self.stop()
        try:
            self._fronts.deregister(self.front_id)
        except Exception:  # noqa: BLE001 - its heartbeat goes stale instead
            log.warning("front %s could not deregister; it counts as dead once its heartbeat "
                        "is stale", self.front_id)
