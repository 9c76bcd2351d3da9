"""The gateway's Prometheus metrics: its calls to the services, its requests, its audit trail.

Calls are timed and their failures counted by kind where they are made
(:class:`~multidb_gateway.services.ServiceClient` for the transport, the fleet and the
execute proxy for answers they cannot use). The audit trail and the cached health are
read when scraped, by custom collectors. Label values are bounded by the code: roles
are the configured ones, ``path`` the service routes the gateway calls, ``kind`` the
closed set :data:`ERROR_KINDS`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from multidb import metrics
from multidb.wire import DEGRADED, HEALTHY

if TYPE_CHECKING:
    from multidb_gateway.audit import AuditTrail
    from multidb_gateway.fleet import HealthMonitor
    from multidb_gateway.outbox import OutboxStatus
    from multidb_gateway.stats_sampler import StatsSampler

# Why a call to a service gave nothing usable.
TIMEOUT = "timeout"  # no answer within the deadline
UNREACHABLE = "unreachable"  # connection refused, no route, DNS
CONNECTION_FAILED = "connection_failed"  # the connection broke mid-call
TOO_LARGE = "too_large"  # answered more than the gateway reads
REFUSED_CREDENTIALS = "refused_credentials"  # 401/403 to credentials the gateway holds
BAD_ANSWER = "bad_answer"  # a body that is not what a multidb service sends
BAD_STATUS = "bad_status"  # a status the call does not expect
ERROR_KINDS = (
    TIMEOUT,
    UNREACHABLE,
    CONNECTION_FAILED,
    TOO_LARGE,
    REFUSED_CREDENTIALS,
    BAD_ANSWER,
    BAD_STATUS,
)


class CallMetrics:
    """Latency and failures of the gateway's calls to each role's service."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry or metrics.new_registry()
        self._duration = Histogram(
            "multidb_gateway_service_call_duration_seconds",
            "Time a call to a role's service took, answered or not",
            ["role", "path"],
            registry=registry,
            buckets=metrics.LATENCY_BUCKETS,
        )
        self._errors = Counter(
            "multidb_gateway_service_call_errors",
            "Calls to a role's service that gave nothing usable, by kind",
            ["role", "path", "kind"],
            registry=registry,
        )
        self._timers: dict[tuple[str, str], Any] = {}

    def observe(self, role: str, path: str, seconds: float) -> None:
        timer = self._timers.get((role, path))
        if timer is None:
            timer = self._timers[role, path] = self._duration.labels(role, path)
        timer.observe(seconds)

    def error(self, role: str, path: str, kind: str) -> None:
        self._errors.labels(role, path, kind).inc()


class GatewayMetrics:
    """The gateway's registry and what its parts update."""

    def __init__(self) -> None:
        self.access = "loopback"
        self.registry: CollectorRegistry = metrics.new_registry()
        self.requests = metrics.RequestMetrics(self.registry, "gateway")
        self.calls = CallMetrics(self.registry)

    def watch(self, audit: AuditTrail, monitor: HealthMonitor, sampler: StatsSampler) -> None:
        self.registry.register(_GatewayCollector(audit, monitor, sampler))


def _outbox(name: str, items: str, receiver: str, status: OutboxStatus) -> Iterable[Metric]:
    """One outbox's delivery figures, as ``/readyz`` shows them under ``name``."""
    prefix = f"multidb_gateway_{name}"
    yield GaugeMetricFamily(
        f"{prefix}_pending",
        f"{items} held, not yet delivered to the {receiver} service",
        value=status.pending,
    )
    for counted, doc, value in (
        ("sent", f"{items} the {receiver} service took", status.sent),
        (
            "dropped",
            f"{items} lost (buffer full, refused as malformed, unsent at stop)",
            status.dropped,
        ),
        ("failures", "Failed delivery attempts, refusals included", status.failures),
        ("rejected", f"Delivery attempts the {receiver} service refused", status.rejected),
    ):
        yield CounterMetricFamily(f"{prefix}_{counted}", doc, value=value)
    yield GaugeMetricFamily(
        f"{prefix}_refusing",
        f"1 while the {receiver} service refuses delivery (a misconfiguration)",
        value=1.0 if status.refusing else 0.0,
    )


class _GatewayCollector:
    def __init__(self, audit: AuditTrail, monitor: HealthMonitor, sampler: StatsSampler) -> None:
        self.audit = audit
        self.monitor = monitor
        self.sampler = sampler

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        yield from _outbox("audit", "Audit records", "logging", self.audit.status())
        yield from _outbox("stats_history", "Stats samples", "analytics", self.sampler.status())
        _, roles = self.monitor.snapshot()
        healthy = GaugeMetricFamily(
            "multidb_gateway_role_healthy",
            "1 when the gateway's latest background health check of the role was healthy "
            "(or degraded: its primary answers, a replica is down or lagging)",
            labels=["role"],
        )
        age = GaugeMetricFamily(
            "multidb_gateway_role_health_age_seconds",
            "Age of the gateway's latest background health check of the role",
            labels=["role"],
        )
        for role, report in roles.items():
            working = report.get("status") in {HEALTHY, DEGRADED}
            healthy.add_metric([role], 1.0 if working else 0.0)
            if "age_s" in report:
                age.add_metric([role], report["age_s"])
        yield healthy
        yield age
