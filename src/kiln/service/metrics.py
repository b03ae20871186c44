"""Prometheus metrics of one Kiln app, served at `GET /metrics` in the text exposition format.

What an operator watches: replies by task type and outcome (`success` or the error code), how
long admitted tasks take, how many run now, and how long finished images take to check, encode
and store; the executor's queue, batch and model-memory metrics follow in the same exposition. Labels come from bounded sets (the served task
types, else `unknown`; Kiln's error codes), so a client cannot grow the series without bound.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320)
"""Seconds: from a ping-fast preprocess to a large SDXL batch."""


class Metrics:
    """The app's counters, in a registry of their own (several apps in one process, as in the
    tests, each expose only theirs)."""

    def __init__(self, task_types: Iterable[str]) -> None:
        self._task_types = frozenset(task_types)
        self.registry = CollectorRegistry()
        self._replies = Counter(
            "kiln_replies", "Result items and error objects sent, by task type and outcome "
            "(success, or the error code).", ["task_type", "outcome"], registry=self.registry,
        )
        self._duration = Histogram(
            "kiln_task_duration_seconds", "Time from admission to the end of a task that ran.",
            ["task_type"], buckets=DURATION_BUCKETS, registry=self.registry,
        )
        self.encoding = Histogram(
            "kiln_image_encoding_seconds", "Seconds from a generated image to its stored file "
            "(NSFW check when asked, encoding, storing).", buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "kiln_tasks_in_flight", "Admitted tasks still running (async ones included).",
            registry=self.registry,
        )

    def _label(self, task_type: str | None) -> str:
        return task_type if task_type in self._task_types else "unknown"

    def reply(self, task_type: str | None, outcome: str = "success") -> None:
        """Count one result item (`success`) or one error object (its code)."""
        self._replies.labels(self._label(task_type), outcome).inc()

    def ran(self, task_type: str | None, seconds: float) -> None:
        self._duration.labels(self._label(task_type)).observe(seconds)

    def exposition(self, *more: bytes) -> tuple[bytes, str]:
        """The registry in Prometheus' text format followed by `more` expositions (the
        executor's), and their content type."""
        return b"".join((generate_latest(self.registry), *more)), CONTENT_TYPE_LATEST
