"""A role's servers as Prometheus metrics, from the monitor's latest check (no SQL at scrape).

``multidb_node_up``, ``multidb_node_is_primary``, ``multidb_replica_lag_bytes``,
``multidb_replica_lag_seconds`` and ``multidb_replica_serving_reads``, labelled by role and
server; ``multidb_reads_waiting_for_replay``; ``multidb_execute_routed_total`` (role,
server kind, reason) counts where statements ran (:mod:`multidb.replicas.routing`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric

from multidb.replicas.monitor import ReplicaSet
from multidb.replicas.routing import PRIMARY, REASONS

SERVER_KINDS = (PRIMARY, "replica")


class ReplicaCollector:
    def __init__(self, role: str, replicas: ReplicaSet) -> None:
        self.role = role
        self.replicas = replicas

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        labels = ["role", "server"]
        up = GaugeMetricFamily(
            "multidb_node_up", "1 when the server answered its last check", labels=labels
        )
        primary = GaugeMetricFamily(
            "multidb_node_is_primary", "1 when the server is the role's primary", labels=labels
        )
        lag_bytes = GaugeMetricFamily(
            "multidb_replica_lag_bytes", "WAL a standby has not replayed yet", labels=labels
        )
        lag_s = GaugeMetricFamily(
            "multidb_replica_lag_seconds",
            "For how long a standby has been behind the primary (0 when caught up)",
            labels=labels,
        )
        serving = GaugeMetricFamily(
            "multidb_replica_serving_reads", "1 when reads are routed to the standby", labels=labels
        )
        for node in self.replicas.nodes:
            where = [self.role, node.name]
            up.add_metric(where, 1.0 if node.up else 0.0)
            primary.add_metric(where, 1.0 if node.is_primary else 0.0)
            if node.is_standby:
                serving.add_metric(where, 1.0 if node.serving else 0.0)
                if node.lag_bytes is not None:
                    lag_bytes.add_metric(where, float(node.lag_bytes))
                if node.lag_s is not None:
                    lag_s.add_metric(where, node.lag_s)
        waiting = GaugeMetricFamily(
            "multidb_reads_waiting_for_replay",
            "Reads waiting now for a replica to replay their min_lsn",
            labels=["role"],
        )
        waiting.add_metric([self.role], float(self.replicas.waiting_reads))
        yield from (up, primary, lag_bytes, lag_s, serving, waiting)


def routed_counter(registry: CollectorRegistry, role: str) -> Callable[[str, str], None]:
    """The counter of where statements ran, every label pair made at once (so each shows 0)."""
    counter = Counter(
        "multidb_execute_routed",
        "Statements run through /execute, by the server kind they ran on and why there",
        ["role", "server", "reason"],
        registry=registry,
    )
    children = {
        (kind, reason): counter.labels(role, kind, reason)
        for kind in SERVER_KINDS
        for reason in REASONS
    }

    def count(kind: str, reason: str) -> None:
        children[(kind, reason)].inc()

    return count
