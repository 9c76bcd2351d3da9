"""Fan-out: ask every role's service at once and assemble one answer, whatever fails.

A role whose service is slow, dead or failing still appears, as ``unhealthy`` (health) or
``unavailable`` (stats, backup info) with an ``error`` saying what happened. Every service
body is decoded into its wire type (:class:`HealthReport`, :class:`StatsReport`,
:class:`BackupInfo`) before it is used; one that does not decode (a proxy's error page, a
truncated answer) is reported as the role's failure, so the gateway never emits a body it
has not validated. A validated body is spliced into the answer as it came
(``msgspec.Raw``), not re-encoded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import msgspec

from multidb.errors import trace
from multidb.wire import UNAVAILABLE, UNHEALTHY, BackupInfo, HealthReport, StatsReport
from multidb_gateway.metrics import BAD_ANSWER, BAD_STATUS, REFUSED_CREDENTIALS
from multidb_gateway.services import ServiceClient, ServiceUnreachableError

log = logging.getLogger("multidb.gateway.fleet")
_encode = msgspec.json.Encoder().encode
PATHS = {"health": "/health", "stats": "/stats", "backup": "/backup/info"}
_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    "health": msgspec.json.Decoder(HealthReport),
    "stats": msgspec.json.Decoder(StatsReport),
    "backup": msgspec.json.Decoder(BackupInfo),
}
UNREADABLE = "service answered an unreadable body"


class RoleAnswer(msgspec.Struct, frozen=True):
    """One role's part of an aggregate: its body (validated JSON), whether it is good, its
    HTTP status."""

    body: msgspec.Raw
    ok: bool
    status: int


class BackupUnavailable(msgspec.Struct, kw_only=True):
    database: str
    status: str
    error: str


def _failure(kind: str, role: str, error: str) -> msgspec.Raw:
    if kind == "health":
        return msgspec.Raw(_encode(HealthReport(database=role, status=UNHEALTHY, error=error)))
    if kind == "stats":
        return msgspec.Raw(_encode(StatsReport(database=role, status=UNAVAILABLE, error=error)))
    return msgspec.Raw(_encode(BackupUnavailable(database=role, status=UNAVAILABLE, error=error)))


def _unreadable(kind: str, role: str, body: bytes) -> str | None:
    """Why ``body`` is not a ``kind`` answer for ``role``; None when it is one."""
    try:
        report = _DECODERS[kind].decode(body)
    except msgspec.DecodeError as exc:
        return str(exc)  # msgspec names the position or field, never quotes the body
    if isinstance(report, HealthReport | StatsReport) and report.database != role:
        return f"it reports on database {report.database!r}"
    return None


class Fleet:
    """The aggregates of the public API over a :class:`ServiceClient`."""

    def __init__(self, client: ServiceClient, timeout_ms: int) -> None:
        self.client = client
        self.timeout_ms = timeout_ms

    async def ask(self, kind: str, role: str, headers: Mapping[str, str]) -> RoleAnswer:
        """``kind`` (health, stats, backup) of one role; never raises for a service failure."""
        try:
            answer = await self.client.call(role, "GET", PATHS[kind], headers, self.timeout_ms)
        except ServiceUnreachableError as exc:
            status = 504 if exc.timed_out else 503
            return RoleAnswer(
                _failure(kind, role, f"service {exc.reason}"), ok=False, status=status
            )
        calls = self.client.metrics
        path = PATHS[kind]
        if answer.status in {401, 403}:
            calls.error(role, path, REFUSED_CREDENTIALS)
            # Credentials the gateway accepted (or minted) but the service did not: a
            # misconfiguration of the secrets they should share.
            error = (
                f"service refused the credentials ({answer.status}); "
                "check JWT_SECRET/API_KEYS/MULTI_DB_SERVICE_SECRET"
            )
            return RoleAnswer(_failure(kind, role, error), ok=False, status=502)
        if answer.status == 200 or (answer.status == 503 and kind != "backup"):
            # The service's own verdict (healthy, or unhealthy with the database's error),
            # once its body is known to be what a service of ours sends.
            unreadable = _unreadable(kind, role, answer.body)
            if unreadable is not None:
                calls.error(role, path, BAD_ANSWER)
                error = f"{UNREADABLE} ({answer.status}: {unreadable})"
                return RoleAnswer(_failure(kind, role, error), ok=False, status=502)
            return RoleAnswer(
                msgspec.Raw(answer.body), ok=answer.status == 200, status=answer.status
            )
        calls.error(role, path, BAD_STATUS)
        error = f"service answered {answer.status}"
        return RoleAnswer(_failure(kind, role, error), ok=False, status=502)

    async def ask_all(
        self, kind: str, roles: Iterable[str], headers: Mapping[str, str]
    ) -> dict[str, RoleAnswer]:
        names = list(roles)
        answers = await asyncio.gather(*(self.ask(kind, role, headers) for role in names))
        return dict(zip(names, answers, strict=True))

    async def ask_one_by_one(
        self, kind: str, roles: Iterable[str], headers: Mapping[str, str]
    ) -> dict[str, RoleAnswer]:
        """The same, serially: only to measure what the concurrent fan-out saves."""
        return {role: await self.ask(kind, role, headers) for role in roles}


class CachedHealth(msgspec.Struct, frozen=True):
    report: dict[str, Any]
    ok: bool
    checked_at: float


class HealthMonitor:
    """Keeps each role's latest health, refreshed in the background (for frequent probes).

    A check older than ``stale_after_s`` (two refresh intervals plus a service's deadline)
    is reported unhealthy: if the background loop ever stalls, the cached answer must not
    stay green. The loop logs and carries on after any exception.
    """

    def __init__(
        self,
        fleet: Fleet,
        roles: Iterable[str],
        interval_ms: int,
        headers: Callable[[], Mapping[str, str]],
    ) -> None:
        self.fleet = fleet
        self.roles = list(roles)
        self.interval_s = interval_ms / 1000
        self.stale_after_s = 2 * self.interval_s + fleet.timeout_ms / 1000
        self._headers = headers
        self._latest: dict[str, CachedHealth] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="multidb-health-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def refresh(self) -> None:
        answers = await self.fleet.ask_all("health", self.roles, self._headers())
        now = time.monotonic()
        latest = {
            role: CachedHealth(_decode(answer.body), answer.ok, now)
            for role, answer in answers.items()
        }
        self._log_changes(latest)
        self._latest = latest

    def _log_changes(self, latest: Mapping[str, CachedHealth]) -> None:
        """One line when a role turns unhealthy (with why) and one when it recovers."""
        for role, cached in latest.items():
            before = self._latest.get(role)
            if cached.ok and before is not None and not before.ok:
                log.info("role healthy again", extra={"target_role": role})
            elif not cached.ok and (before is None or before.ok):
                error = cached.report.get("error")
                log.warning("role unhealthy", extra={"target_role": role, "error": error})

    def snapshot(
        self, roles: Iterable[str] | None = None
    ) -> tuple[bool, dict[str, dict[str, Any]]]:
        """The latest health of ``roles`` (default: every role) with its ``age_s``; unchecked
        or stale roles are unhealthy."""
        now = time.monotonic()
        body: dict[str, dict[str, Any]] = {}
        healthy = True
        for role in self.roles if roles is None else roles:
            cached = self._latest.get(role)
            if cached is None:
                body[role] = {"database": role, "status": UNHEALTHY, "error": "not checked yet"}
                healthy = False
                continue
            age = round(now - cached.checked_at, 3)
            body[role] = {**cached.report, "age_s": age}
            if age > self.stale_after_s:
                error = f"no background check for {age} s"
                body[role].update(status=UNHEALTHY, error=error)
            healthy = healthy and cached.ok and age <= self.stale_after_s
        return healthy, body

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # the next round may well succeed: never stop checking
                log.error("health monitor: a refresh failed: %s", trace(exc))
            await asyncio.sleep(self.interval_s)


_decode = msgspec.json.Decoder(dict[str, Any]).decode
