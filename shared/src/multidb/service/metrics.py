"""A role service's Prometheus metrics: its instruments and the collector over its snapshot.

Instruments (histograms, counters) are updated on the request path; everything read from
the database comes from the :class:`~multidb.service.sampler.CatalogSampler`'s latest
snapshot and the pools' own counts, read when scraped. The README's "Metrics" section
lists each metric beside postgres_exporter's equivalent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from multidb import metrics
from multidb.disconnect import ClientDisconnectedError
from multidb.errors import (
    BadRequestError,
    DatabaseUnavailableError,
    ForbiddenError,
    ResultTooLargeError,
    SQLError,
    TimeoutExceededError,
    TooManyRequestsError,
)
from multidb.service.sampler import CatalogSampler

if TYPE_CHECKING:
    from multidb.jobs import JobStatus

# Execute outcomes, the label values of multidb_execute_requests_total (a closed set).
OK = "ok"
OUTCOMES: tuple[tuple[type[BaseException], str], ...] = (
    (ResultTooLargeError, "too_large"),  # before SQLError's sibling BadRequestError
    (SQLError, "sql_error"),
    (BadRequestError, "bad_request"),
    (ForbiddenError, "refused"),
    (TooManyRequestsError, "throttled"),
    (TimeoutExceededError, "timeout"),
    (ClientDisconnectedError, "cancelled"),
)


def execute_outcome(exc: BaseException) -> str:
    """The outcome class of an execute that raised ``exc``."""
    if isinstance(exc, DatabaseUnavailableError):
        # A Retry-After means every connection stayed busy: load, not an outage.
        return "busy" if exc.headers and "Retry-After" in exc.headers else "unavailable"
    if getattr(exc, "status_code", None) == 403:  # Litestar's own (the write scope)
        return "refused"
    for kind, outcome in OUTCOMES:
        if isinstance(exc, kind):
            return outcome
    return "error"


class RoleMetrics:
    """The registry of one role service and what its handlers update."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.access = "loopback"
        self.registry: CollectorRegistry = metrics.new_registry()
        self.requests = metrics.RequestMetrics(self.registry, role)
        self.health_latency = Histogram(
            "multidb_health_check_duration_seconds",
            "Time a health check of the database took (its query and plugin detail)",
            ["role"],
            registry=self.registry,
            buckets=metrics.LATENCY_BUCKETS,
        ).labels(role)
        self._executes = Counter(
            "multidb_execute_requests",
            "Statements run through /execute, by outcome",
            ["role", "outcome"],
            registry=self.registry,
        )
        self.execute_outcomes = {
            outcome: self._executes.labels(role, outcome)
            for outcome in (OK, "error", "busy", "unavailable", *(o for _, o in OUTCOMES))
        }
        self.execute_duration = Histogram(
            "multidb_execute_duration_seconds",
            "Time an execute took, from its request to its answer (queue wait included)",
            ["role"],
            registry=self.registry,
            buckets=metrics.LATENCY_BUCKETS,
        ).labels(role)
        self.execute_rows = Counter(
            "multidb_execute_rows",
            "Rows returned (or affected) by statements that succeeded",
            ["role"],
            registry=self.registry,
        ).labels(role)
        self.execute_bytes = Counter(
            "multidb_execute_result_bytes",
            "Bytes of JSON rows returned by statements that succeeded",
            ["role"],
            registry=self.registry,
        ).labels(role)

    def watch(
        self,
        sampler: CatalogSampler,
        pools: Callable[[], Mapping[str, metrics.PoolWatch]],
        head: str | None,
    ) -> None:
        """Expose ``sampler``'s snapshot and ``pools`` (read at each scrape)."""
        self.registry.register(_SnapshotCollector(self.role, sampler, pools, head))

    def watch_jobs(self, statuses: Callable[[], Iterable[JobStatus]]) -> None:
        """Expose the role's background jobs (read at each scrape)."""
        self.registry.register(_JobsCollector(self.role, statuses))


class _JobsCollector:
    """Each background job's runs, failures and last success, as ``/readyz`` shows them."""

    def __init__(self, role: str, statuses: Callable[[], Iterable[JobStatus]]) -> None:
        self.role = role
        self.statuses = statuses

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        labels = ["role", "job"]
        runs = CounterMetricFamily(
            "multidb_job_runs", "Runs of a background job as the role's leader", labels=labels
        )
        failures = CounterMetricFamily(
            "multidb_job_failures", "Runs of a background job that failed", labels=labels
        )
        last_ok = GaugeMetricFamily(
            "multidb_job_last_success_timestamp_seconds",
            "When a background job last succeeded (Unix time)",
            labels=labels,
        )
        for status in self.statuses():
            key = [self.role, status.name]
            runs.add_metric(key, status.runs)
            failures.add_metric(key, status.failures)
            if status.last_ok_at is not None:
                last_ok.add_metric(key, status.last_ok_at.timestamp())
        yield runs
        yield failures
        yield last_ok


class _SnapshotCollector:
    """Database figures from the latest background sample; no SQL at scrape time."""

    def __init__(
        self,
        role: str,
        sampler: CatalogSampler,
        pools: Callable[[], Mapping[str, metrics.PoolWatch]],
        head: str | None,
    ) -> None:
        self.role = role
        self.sampler = sampler
        self.pools = pools
        self.head = head

    def describe(self) -> Iterable[Metric]:
        return []  # names vary with what was sampled; nothing to check at registration

    def collect(self) -> Iterable[Metric]:
        role = [self.role]
        sampler = self.sampler

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=["role"])
            family.add_metric(role, value)
            return family

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(name, doc, labels=["role"])
            family.add_metric(role, value)
            return family

        yield gauge(
            "multidb_database_up",
            "1 when the latest background sample of the database succeeded and is recent",
            1.0 if sampler.up() else 0.0,
        )
        yield counter(
            "multidb_stats_sample_failures",
            "Background samples of the database that failed",
            sampler.failures,
        )
        if sampler.last_duration_s is not None:
            yield gauge(
                "multidb_stats_sample_duration_seconds",
                "Time the latest background sample took",
                sampler.last_duration_s,
            )
        yield from self._pools()
        snapshot = sampler.latest
        if snapshot is None:
            return
        catalog, size = snapshot.catalog, snapshot.size
        yield gauge(
            "multidb_stats_sample_age_seconds",
            "Age of the latest successful sample of the catalog",
            catalog.age_s,
        )
        yield gauge(
            "multidb_database_size_bytes", "Size of the database (pg_database_size)", size.bytes
        )
        yield gauge(
            "multidb_database_size_age_seconds",
            "Age of the database size figure (sampled at most every 30 s)",
            size.age_s,
        )
        yield gauge(
            "multidb_database_tables",
            "Tables in the database (pg_class, system schemas excluded)",
            catalog.table_count,
        )
        yield gauge(
            "multidb_database_connections",
            "Backends connected to the database (pg_stat_database.numbackends)",
            catalog.connections,
        )
        yield counter(
            "multidb_database_commits", "Transactions committed (xact_commit)", catalog.commits
        )
        yield counter(
            "multidb_database_rollbacks",
            "Transactions rolled back (xact_rollback)",
            catalog.rollbacks,
        )
        yield counter("multidb_database_deadlocks", "Deadlocks detected", catalog.deadlocks)
        yield counter(
            "multidb_database_temp_bytes",
            "Bytes written to temporary files by queries",
            catalog.temp_bytes,
        )
        yield counter(
            "multidb_database_temp_files", "Temporary files created by queries", catalog.temp_files
        )
        ratio = catalog.cache_hit_ratio
        if ratio is not None:
            yield gauge(
                "multidb_database_cache_hit_ratio",
                "Share of block reads served from shared buffers, since the stats reset",
                ratio,
            )
        yield gauge(
            "multidb_migration_at_head",
            "1 when the database's migration revision is the role's head",
            1.0 if catalog.revision is not None and catalog.revision == self.head else 0.0,
        )

    def _pools(self) -> Iterable[Metric]:
        names = {
            "open": ("multidb_pool_connections", "Connections the pool holds open"),
            "in_use": ("multidb_pool_in_use_connections", "Connections of the pool in use"),
            "waiting": ("multidb_pool_waiting_tasks", "Tasks waiting for a connection"),
            "max": ("multidb_pool_max_connections", "Most connections the pool may open"),
        }
        families = {
            key: GaugeMetricFamily(name, doc, labels=["role", "pool"])
            for key, (name, doc) in names.items()
        }
        for pool, watch in self.pools().items():
            for key, value in zip(names, watch.figures(), strict=True):
                families[key].add_metric([self.role, pool], value)
        yield from families.values()
