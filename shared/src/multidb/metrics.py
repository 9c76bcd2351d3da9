"""Prometheus metrics: what every multidb process shares to expose them.

Each app owns a :class:`prometheus_client.CollectorRegistry` (never the process-global
one), so several apps in one process (the tests) keep their figures apart. Values that
come from the database are read from a snapshot sampled in the background by custom
collectors, so a scrape runs no SQL and costs the same whatever the database holds.

Names follow Prometheus conventions: the ``multidb_`` prefix, base units (``_seconds``,
``_bytes``), ``_total`` counters, and a ``role`` label (``gateway`` for the gateway's own
requests). Label values are bounded: route templates, never raw paths.

Access to ``/metrics`` (``MULTI_DB_METRICS_ACCESS``): ``loopback`` lets clients on
127.0.0.1/::1 in without a credential and asks every other client for one holding
``db:read``; ``credential`` always asks for one. The route is outside the authentication
middleware and checks for itself, since whether it needs a credential depends on who calls.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, Protocol

import asyncpg
from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

from multidb import auth

PATH = "/metrics"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1"})
# Latencies of HTTP calls and catalog queries: 1 ms to 10 s.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A request the router could not match (404, 405) has no template; it is counted under this.
UNMATCHED = "unmatched"


class Exposed(Protocol):
    """What ``/metrics`` needs from an app's ``state.metrics``."""

    registry: CollectorRegistry
    access: str


def new_registry() -> CollectorRegistry:
    return CollectorRegistry(auto_describe=True)


def scrape_allowed(request: Request[Any, Any, Any], access: str) -> None:
    """Let the caller read the metrics, or raise 401/403 as any other route would."""
    client = request.client.host if request.client else None
    if access == "loopback" and client in LOOPBACK_HOSTS:
        return
    authenticator: auth.Authenticator = request.app.state.authenticator
    principal = authenticator.authenticate(
        request.headers.get("authorization"), request.headers.get(auth.API_KEY_HEADER)
    )
    # A role service's own role; on the gateway (every role's figures), every database.
    auth.require(principal, auth.READ, getattr(request.app.state, "scope_role", None))


# Outside the OpenAPI document: it is Prometheus's text format, not the JSON API, and its
# credential depends on the caller's address, which a security scheme cannot say.
@get(PATH, opt={"exclude_from_auth": True}, include_in_schema=False, sync_to_thread=False)
def metrics_endpoint(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    """The app's metrics in the Prometheus text format."""
    exposed: Exposed = state.metrics
    scrape_allowed(request, exposed.access)
    return Response(
        generate_latest(exposed.registry), media_type=CONTENT_TYPE_LATEST, status_code=200
    )


class RequestMetrics:
    """Counts HTTP requests by route template and status, and times them.

    A small ASGI middleware rather than Litestar's ``PrometheusMiddleware``: that one
    registers into the process-global registry (two apps in one process would share, or
    collide on, the same metrics), groups paths only with ``group_path=True``, and its
    ``exclude_unhandled_paths`` is read by nothing. Litestar has already routed the request
    when an app middleware runs, so ``scope["path_template"]`` (``/database/{name}/health``)
    is the label: bounded by the routes the app declares, whatever paths callers send.
    """

    def __init__(self, registry: CollectorRegistry, role: str) -> None:
        self.role = role
        self.requests = Counter(
            "multidb_http_requests",
            "HTTP requests answered, by route template and status",
            ["role", "method", "route", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "multidb_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template",
            ["role", "method", "route"],
            registry=registry,
            buckets=LATENCY_BUCKETS,
        )
        # labels() takes a lock and builds a key on each call: keep the children.
        self._counted: dict[tuple[str, str, int], Any] = {}
        self._timed: dict[tuple[str, str], Any] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        counted = self._counted.get((method, route, status))
        if counted is None:
            counted = self._counted[method, route, status] = self.requests.labels(
                self.role, method, route, str(status)
            )
        counted.inc()
        timed = self._timed.get((method, route))
        if timed is None:
            timed = self._timed[method, route] = self.duration.labels(self.role, method, route)
        timed.observe(seconds)

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """The ASGI middleware factory Litestar's ``middleware=[...]`` takes."""

        async def measured(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP:
                await app(scope, receive, send)
                return
            method = scope["method"]
            started = time.perf_counter()
            status = 500

            async def send_status(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await app(scope, receive, send_status)
            except Exception as exc:
                # Raised by an inner middleware (authentication): Litestar answers with it.
                status = getattr(exc, "status_code", 500)
                raise
            finally:
                route = scope.get("path_template") or UNMATCHED
                self.observe(method, route, status, time.perf_counter() - started)

        return measured


class PoolWatch:
    """One asyncpg pool and how many tasks wait for its connections.

    ``asyncpg.Pool`` exposes its size (``get_size``, ``get_max_size``) and idle count
    (``get_idle_size``) but not its queue, so callers acquire through :meth:`acquire` or
    :meth:`waiting`, which count the waiters.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.waiters = 0

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        self.waiters += 1
        try:
            yield
        finally:
            self.waiters -= 1

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        with self.waiting():
            conn: asyncpg.Connection = await self.pool.acquire()
        try:
            yield conn
        finally:
            await self.pool.release(conn)

    def figures(self) -> tuple[int, int, int, int]:
        """``(open, in use, waiting, max)`` connections."""
        size = self.pool.get_size()
        return size, size - self.pool.get_idle_size(), self.waiters, self.pool.get_max_size()
