"""What the gateway holds while it runs: settings, the service client, monitor, audit and
the stats sampler."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec
from litestar import Request
from litestar.exceptions import PermissionDeniedException

from multidb import auth
from multidb.execute import ExecuteLimits
from multidb.request_id import request_id_of
from multidb.router import DatabaseRouter
from multidb_gateway.audit import ERROR_TEXT_LIMIT, AuditTrail, DeliveryRefusedError
from multidb_gateway.credentials import GatewayCredential
from multidb_gateway.fleet import Fleet, HealthMonitor
from multidb_gateway.metrics import GatewayMetrics
from multidb_gateway.outbox import Send
from multidb_gateway.services import ServiceAnswer, ServiceClient, ServiceUnreachableError
from multidb_gateway.settings import GatewaySettings
from multidb_gateway.stats_sampler import StatsSampler

AUDIT_PATH = "/audit/access"
SAMPLES_PATH = "/stats/samples"
log = logging.getLogger("multidb.gateway")


def forward_headers(request: Request[Any, Any, Any]) -> dict[str, str]:
    """The caller's credentials and request id, for a call made on the caller's behalf."""
    headers = {"x-request-id": request_id_of(request)}
    for name in ("authorization", "x-api-key"):
        value = request.headers.get(name)
        if value:
            headers[name] = value
    return headers


def _refusal(answer: ServiceAnswer, role: str, path: str, what: str) -> DeliveryRefusedError:
    """What a 4xx from ``role``'s service means, in words an operator can act on."""
    detail = _problem_detail(answer.body)
    said = f"{answer.status} {detail}".strip()
    if answer.status in {401, 403}:
        hint = f"the {role} service must accept MULTI_DB_SERVICE_SECRET (or JWT_SECRET)"
        reason = f"{role} service refused the gateway's credentials ({said}); {hint}"
        return DeliveryRefusedError(reason)
    if answer.status in {404, 405}:
        hint = f"is MULTI_DB_{role.upper()}_SERVICE_URL the {role} service?"
        return DeliveryRefusedError(f"{role} service has no {path} ({said}); {hint}")
    # Anything else: these items themselves are refused; retrying would block the rest.
    reason = f"{role} service refused the {what} ({said})"
    return DeliveryRefusedError(reason, batch_at_fault=True)


def _problem_detail(body: bytes) -> str:
    try:
        problem = _decode_problem(body)
    except msgspec.DecodeError:
        return ""
    return problem.detail[:ERROR_TEXT_LIMIT]


class Problem(msgspec.Struct):
    detail: str = ""


_decode_problem = msgspec.json.Decoder(Problem).decode


class GatewayRuntime:
    def __init__(
        self,
        settings: GatewaySettings,
        router: DatabaseRouter,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.router = router
        self.roles = list(settings.services)
        self.execute_limits = ExecuteLimits.from_settings(settings.core)
        self.authenticator = auth.Authenticator.from_settings(settings.core)
        self.credential = GatewayCredential(settings.core)
        self.metrics = metrics or GatewayMetrics()
        self.metrics.access = settings.core.metrics_access
        self.client = ServiceClient(settings.services, self.metrics.calls)
        self.fleet = Fleet(self.client, settings.service_timeout_ms)
        self.monitor = HealthMonitor(
            self.fleet, self.roles, settings.health_refresh_ms, self.credential.headers
        )
        self.audit = AuditTrail(
            self._sender("logging", AUDIT_PATH, "records"), capacity=settings.audit_capacity
        )
        self.sampler = StatsSampler(
            self.fleet,
            self.roles,
            settings.stats_sample_s,
            self.credential.headers,
            self._sender("analytics", SAMPLES_PATH, "samples")
            if "analytics" in settings.services
            else None,
        )
        self.metrics.watch(self.audit, self.monitor, self.sampler)

    def unknown(self, name: str) -> str:
        return f"unknown database {name!r}; configured: {', '.join(self.roles) or 'none'}"

    def visible(self, request: Request[Any, Any, Any], scope: str) -> list[str]:
        """The configured roles whose database the caller holds ``scope`` on, in order.

        An aggregate shows these and no other; a caller with none is refused (403).
        """
        principal: auth.Principal = request.user
        allowed = principal.roles_allowed(scope, self.roles)
        if not allowed:
            msg = (
                f"this needs the '{scope}' scope on at least one configured database "
                f"('{scope}' or '{scope}:<role>')"
            )
            raise PermissionDeniedException(msg)
        return allowed

    def _sender(self, role: str, path: str, what: str) -> Send:
        """Delivers one batch to ``role``'s ``path``; only its 200 counts as delivered."""

        async def send(body: bytes) -> None:
            if role not in self.settings.services:
                msg = f"no {role} service is configured to receive {what}"
                raise RuntimeError(msg)
            headers = {**self.credential.headers(), "content-type": "application/json"}
            timeout = self.settings.service_timeout_ms
            try:
                answer = await self.client.call(role, "POST", path, headers, timeout, body=body)
            except ServiceUnreachableError as exc:
                raise RuntimeError(str(exc)) from None
            if answer.status == 200:
                return
            if 400 <= answer.status < 500:
                raise _refusal(answer, role, path, what)
            msg = f"{role} service answered {answer.status}"
            raise RuntimeError(msg)

        return send

    async def start(self) -> None:
        await self.client.start()
        await self.audit.start()
        await self.monitor.start()
        await self.sampler.start()

    async def stop(self) -> None:
        # Each outbox may spend its whole grace period on a receiver that is down: side by
        # side, the gateway stops within one grace period, not the sum of them.
        await asyncio.gather(self.sampler.stop(), self.monitor.stop(), self.audit.stop())
        await self.client.close()
