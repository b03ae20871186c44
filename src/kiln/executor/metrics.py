"""Prometheus metrics of one executor: its queue, its batches and the engine's model memory.

The metrics live in a registry of their own (`registry`), so an app serving `/metrics` appends
this exposition to its own, and several executors in one process (as in the tests) never clash.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
"""Images per pipeline call."""

UNIT_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
"""Seconds: from a batching window of a few milliseconds to a queue behind large SDXL batches."""


class ExecutorMetrics:
    """Queue depth, batch sizes, seconds each image waited and ran, model memory and evictions."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.queue_depth = Gauge(
            "kiln_executor_queue_depth", "Images waiting for a pipeline call.",
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "kiln_batch_size", "Images per pipeline call.",
            buckets=BATCH_SIZE_BUCKETS, registry=self.registry,
        )
        self.unit_queued_seconds = Histogram(
            "kiln_unit_queued_seconds", "Seconds an image waited from submission to its batch's start.",
            buckets=UNIT_SECONDS_BUCKETS, registry=self.registry,
        )
        self.unit_running_seconds = Histogram(
            "kiln_unit_running_seconds", "Seconds the batch that made an image ran.",
            buckets=UNIT_SECONDS_BUCKETS, registry=self.registry,
        )
        self.model_memory_bytes = Gauge(
            "kiln_model_memory_bytes", "Bytes of the models the engine holds.",
            registry=self.registry,
        )
        self._evictions = Counter(
            "kiln_model_evictions", "Models the engine evicted to stay within its memory budget.",
            registry=self.registry,
        )
        self._evictions_seen = 0

    def batch_ran(self, queued_s: Sequence[float], running_s: float) -> None:
        """Record one pipeline call: how long each of its images waited, how long it ran."""
        self.batch_size.observe(len(queued_s))
        for seconds in queued_s:
            self.unit_queued_seconds.observe(seconds)
            self.unit_running_seconds.observe(running_s)

    def engine_state(self, resident_bytes: int, evictions: int) -> None:
        """Record the engine's model memory and its eviction count since it was built."""
        self.model_memory_bytes.set(resident_bytes)
        if evictions > self._evictions_seen:
            self._evictions.inc(evictions - self._evictions_seen)
            self._evictions_seen = evictions

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format (`prometheus_client.CONTENT_TYPE_LATEST`)."""
        return generate_latest(self.registry)

