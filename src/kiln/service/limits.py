"""Admission limits: work a server accepts is bounded, so no client can grow its memory without
end. A task over a limit is refused at once with `rateLimitExceeded` (HTTP 429): retry later.
"""

from __future__ import annotations

from collections import Counter

from kiln.errors import RateLimitError


class Ticket:
    """The admission of one task; `release()` (idempotent) gives its share back."""

    def __init__(self, admission: Admission, key: str, results: int) -> None:
        self._admission = admission
        self._key = key
        self._results = results
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._admission._release(self._key, self._results)


class Admission:
    """At most `max_tasks` tasks in flight in all (queued, running or delivering), and at most
    `max_results_per_key` requested results (`numberResults`) in flight per API key.

    Used from the event loop only, so the counts need no lock.
    """

    def __init__(self, *, max_results_per_key: int, max_tasks: int) -> None:
        self.max_results_per_key = max_results_per_key
        self.max_tasks = max_tasks
        self._tasks = 0
        self._results: Counter[str] = Counter()

    def admit(self, key: str, results: int = 1) -> Ticket:
        """Count a task asking for `results` results of `key`, or raise `RateLimitError`."""
        if self._tasks >= self.max_tasks:
            raise RateLimitError(
                f"The server's queue is full ({self.max_tasks} tasks in flight); retry later "
                f"with backoff.",
                code="rateLimitExceeded",
            )
        if self._results[key] + results > self.max_results_per_key:
            raise RateLimitError(
                f"This API key has {self._results[key]} results in flight and may have at most "
                f"{self.max_results_per_key}; this task asks for {results}. Retry when some "
                f"have finished.",
                code="rateLimitExceeded",
                parameter="numberResults",
            )
        self._tasks += 1
        self._results[key] += results
        return Ticket(self, key, results)

    def in_flight(self, key: str) -> int:
        """Results in flight for `key`."""
        return self._results[key]

    def _release(self, key: str, results: int) -> None:
        self._tasks -= 1
        self._results[key] -= results
        if self._results[key] <= 0:
            del self._results[key]
