"""The gateway's settings: the shared ones plus where each role's service is.

A role is served by the gateway when its database is configured (its ``HOST`` is set,
as for every other process) or its ``MULTI_DB_<ROLE>_SERVICE_URL`` is set.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec

from multidb.plugins import get_roles
from multidb.roles import RoleSpec
from multidb.settings import Settings, convert_env, load_settings, read_environment
from multidb_gateway.credentials import require_credential

Positive = Annotated[int, msgspec.Meta(ge=1)]


class GatewaySettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    core: Settings
    services: dict[str, str]
    service_timeout_ms: Positive = 2000
    health_refresh_ms: Positive = 1000
    audit_capacity: Positive = 10_000
    stats_sample_s: Positive = 60

    def __repr__(self) -> str:
        return f"GatewaySettings(services={self.services})"


def service_url_variable(spec: RoleSpec) -> str:
    return f"MULTI_DB_{spec.name.upper()}_SERVICE_URL"


def load_gateway_settings(env: Mapping[str, str], roles: Mapping[str, RoleSpec]) -> GatewaySettings:
    core = load_settings(env, roles)
    services = {}
    for name, spec in roles.items():
        url = env.get(service_url_variable(spec), "").strip()
        if name in core.databases or url:
            services[name] = (url or f"http://127.0.0.1:{spec.port}").rstrip("/")
    names = {
        "service_timeout_ms": "MULTI_DB_SERVICE_TIMEOUT_MS",
        "health_refresh_ms": "MULTI_DB_HEALTH_REFRESH_MS",
        "audit_capacity": "MULTI_DB_AUDIT_CAPACITY",
        "stats_sample_s": "MULTI_DB_STATS_SAMPLE_S",
    }
    raw: dict[str, Any] = {field: env[var] for field, var in names.items() if env.get(var, "")}
    raw.update(core=core, services=services)
    result: GatewaySettings = convert_env(raw, GatewaySettings, names)
    require_credential(core)
    return result


@functools.cache
def get_gateway_settings() -> GatewaySettings:
    return load_gateway_settings(read_environment(), get_roles())
