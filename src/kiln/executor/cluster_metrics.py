"""Prometheus metrics of a front that sends its device work to engine replicas: its calls in
flight per replica, replicas lost and calls retried, and each replica's own executor metrics.

Each replica reports its executor metrics (queue depth, batch sizes, seconds queued and
running, model memory, evictions) at the end of every call; the latest report of each replica
appears here with a `replica` label. It is this front's view: a replica it has not heard from
lately shows its state as of its last answer to this front. Nothing here imports Ray.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families


class ClusterMetrics:
    """This front's calls to engine replicas, and the replicas' latest executor metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.calls_in_flight = Gauge(
            "kiln_replica_calls_in_flight", "Calls this front awaits from each engine replica.",
            ["replica"], registry=self.registry,
        )
        self.replicas_lost = Counter(
            "kiln_replica_failures", "Calls that failed because their engine replica died or stalled.",
            registry=self.registry,
        )
        self.retries = Counter(
            "kiln_replica_retries", "Calls sent again to another replica after a replica failure.",
            registry=self.registry,
        )
        self._reports: dict[str, bytes] = {}
        self.registry.register(_ReplicaReports(self._reports))

    def reported(self, replica: str, exposition: bytes) -> None:
        """Keep `replica`'s latest executor metrics (Prometheus text)."""
        self._reports[replica] = exposition

    def lost(self, replica: str | None) -> None:
        """A call failed with its replica: count it and forget that replica's report."""
        self.replicas_lost.inc()
        if replica is not None:
            self._reports.pop(replica, None)

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format (`prometheus_client.CONTENT_TYPE_LATEST`)."""
        return generate_latest(self.registry)


class _ReplicaReports:
    """A collector that merges the replicas' reports into one family per metric, each sample
    labelled with its replica."""

    def __init__(self, reports: dict[str, bytes]) -> None:
        self._reports = reports

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for replica, text in sorted(self._reports.items()):
            for family in text_string_to_metric_families(text.decode()):
                merged = families.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type, family.unit))
                for sample in family.samples:
                    merged.add_sample(sample.name, {**sample.labels, "replica": replica}, sample.value,
                                      sample.timestamp, sample.exemplar)
        yield from families.values()
