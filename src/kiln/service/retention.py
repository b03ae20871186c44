"""Retention: images and task records are deleted when their time is up, so the disk does not
fill. A running Kiln purges every `interval_s` on a thread of its own; `kiln media prune` purges
once."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from kiln.media import ImageStore
from kiln.service.task_registry import TaskRegistry

log = logging.getLogger(__name__)

PURGE_INTERVAL_S = 60.0


@dataclass(frozen=True)
class Purged:
    """What one purge deleted."""

    images: int
    tasks: int


class Retention:
    """Deletes images stored more than `media_ttl_s` ago and the expired task records.

    Task records go first: a record never outlives the images it is re-encoded from, as long as
    `media_ttl_s` is at least the records' time to live (Settings checks it).
    """

    def __init__(self, images: ImageStore, tasks: TaskRegistry, media_ttl_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        self._images = images
        self._tasks = tasks
        self._media_ttl_s = media_ttl_s
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def purge(self) -> Purged:
        tasks = self._tasks.purge()
        return Purged(images=self._images.purge(self._clock() - self._media_ttl_s), tasks=tasks)

    def start(self, interval_s: float = PURGE_INTERVAL_S) -> None:
        """Purge now and then every `interval_s` until `stop()`; a failed purge is logged and
        tried again at the next interval."""
        def run() -> None:
            while True:
                try:
                    purged = self.purge()
                    if purged.images or purged.tasks:
                        log.info("retention deleted %d images and %d task records",
                                 purged.images, purged.tasks)
                except Exception:
                    log.exception("retention purge failed")
                if self._stop.wait(interval_s):
                    return

        self._thread = threading.Thread(target=run, name="kiln-retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the periodic purge; returns once a purge in progress has ended."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
