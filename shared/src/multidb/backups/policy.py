"""Backup settings: where backups go, which tools take them, and each role's schedule.

Process-wide: ``MULTI_DB_BACKUP_DIR`` (default ``.data/backups``), ``MULTI_DB_PG_BIN_DIR``
(the folder of ``pg_dump``/``pg_restore``; found on ``PATH`` and in
``/usr/lib/postgresql/<major>/bin`` otherwise) and ``MULTI_DB_BACKUP_TIMEOUT_S``.

Per role (``ROLE`` is the role's name in capitals, ``DEFAULT`` for the default role):

- ``MULTI_DB_<ROLE>_BACKUP_INTERVAL``: ``30m``, ``1h``, ``1d``, seconds, or ``off``; the
  default is the role's own (:attr:`RoleSpec.backup_interval`: hourly for default, daily
  for the others), after the spec's "different schedules based on data importance";
- ``MULTI_DB_<ROLE>_BACKUP_KEEP``: how many good backups to keep and/or for how long:
  ``24``, ``7d`` or ``24,7d`` (default ``48,7d``); the newest verified backup is never
  pruned;
- ``MULTI_DB_<ROLE>_DRILL_INTERVAL``: how often a restore drill runs (default ``1d``);
- ``MULTI_DB_<ROLE>_BACKUP_HOST``: where the PostgreSQL tools reach the database when not
  at the role's ``HOST`` (a Unix socket folder, say, when the tools lack TLS).

Drill results are recorded in the logging role's database through its service at
``MULTI_DB_LOGGING_SERVICE_URL`` (the gateway's variable), when it is set.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated

import msgspec

from multidb.errors import SettingsError
from multidb.roles import RoleSpec

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
OFF = "off"
# Process-wide variables; each role adds MULTI_DB_<ROLE>_ + one of ROLE_KEYS.
GLOBAL_VARIABLES = ("MULTI_DB_BACKUP_DIR", "MULTI_DB_PG_BIN_DIR", "MULTI_DB_BACKUP_TIMEOUT_S")
ROLE_KEYS = ("BACKUP_INTERVAL", "BACKUP_KEEP", "DRILL_INTERVAL", "BACKUP_HOST")
DEFAULT_KEEP = "48,7d"
DEFAULT_DRILL_INTERVAL = "1d"


class BackupPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """One role's schedule: ``None`` intervals are off; ``None`` limits do not limit."""

    interval_s: float | None
    drill_interval_s: float | None
    keep_count: int | None
    keep_age_s: float | None
    host: str = ""

    def describe(self) -> str:
        if self.interval_s is None:
            return OFF
        return f"every {format_duration(self.interval_s)}"


class BackupSettings(msgspec.Struct, frozen=True, kw_only=True):
    directory: str = ".data/backups"
    bin_dir: str = ""
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 3600.0
    policies: dict[str, BackupPolicy] = msgspec.field(default_factory=dict)
    # Where drill results are recorded: the logging role's service (MULTI_DB_LOGGING_SERVICE_URL).
    logging_url: str = ""

    def policy(self, role: str) -> BackupPolicy:
        return self.policies.get(role) or BackupPolicy(
            interval_s=None, drill_interval_s=None, keep_count=None, keep_age_s=None
        )


def parse_duration(variable: str, text: str) -> float | None:
    """Seconds in ``text`` (``90``, ``30m``, ``1h``, ``1d``, ``2w``), or None for ``off``."""
    if text.strip().lower() == OFF:
        return None
    match = _DURATION.match(text)
    if match is None or float(match[1]) <= 0:
        msg = f"{variable}: must be a duration like 30m, 1h or 1d, or off (got {text!r})"
        raise SettingsError(msg)
    return float(match[1]) * _UNITS[match[2]]


def format_duration(seconds: float) -> str:
    for unit in ("w", "d", "h", "m"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def parse_keep(variable: str, text: str) -> tuple[int | None, float | None]:
    """``(count, max age in seconds)`` from ``24``, ``7d`` or ``24,7d`` (an age with its
    unit)."""
    count: int | None = None
    age: float | None = None
    for part in (piece.strip() for piece in text.split(",")):
        if part.isdigit() and count is None and int(part) >= 1:
            count = int(part)
            continue
        # An age has its unit: a bare "24.0" is no count, and no 24-second age either.
        if part[-1:].isalpha() and age is None:
            try:
                age = parse_duration(variable, part)
            except SettingsError:
                age = None
            if age is not None:
                continue
        msg = (
            f"{variable}: must be a count of backups (at least 1), a maximum age (7d), "
            f"or both, like 24,7d (got {text!r})"
        )
        raise SettingsError(msg)
    return count, age


def role_variable(spec: RoleSpec, name: str) -> str:
    return f"MULTI_DB_{spec.name.upper()}_{name}"


def variables(roles: Mapping[str, RoleSpec]) -> set[str]:
    """Every variable the backup settings read for ``roles``."""
    per_role = {role_variable(spec, key) for spec in roles.values() for key in ROLE_KEYS}
    return set(GLOBAL_VARIABLES) | per_role


def load_backup_settings(env: Mapping[str, str], roles: Mapping[str, RoleSpec]) -> BackupSettings:
    policies = {}
    for name, spec in roles.items():

        def value(key: str, default: str, spec: RoleSpec = spec) -> tuple[str, str]:
            variable = role_variable(spec, key)
            return variable, env.get(variable, "").strip() or default

        interval = parse_duration(*value("BACKUP_INTERVAL", spec.backup_interval))
        drill = parse_duration(*value("DRILL_INTERVAL", DEFAULT_DRILL_INTERVAL))
        count, age = parse_keep(*value("BACKUP_KEEP", DEFAULT_KEEP))
        policies[name] = BackupPolicy(
            interval_s=interval,
            drill_interval_s=drill,
            keep_count=count,
            keep_age_s=age,
            host=value("BACKUP_HOST", "")[1],
        )
    timeout = env.get("MULTI_DB_BACKUP_TIMEOUT_S", "").strip()
    timeout_s = parse_duration("MULTI_DB_BACKUP_TIMEOUT_S", timeout) if timeout else 3600.0
    if timeout_s is None:
        raise SettingsError("MULTI_DB_BACKUP_TIMEOUT_S: must be a duration, not off")
    return BackupSettings(
        directory=env.get("MULTI_DB_BACKUP_DIR", "").strip() or ".data/backups",
        bin_dir=env.get("MULTI_DB_PG_BIN_DIR", "").strip(),
        timeout_s=timeout_s,
        policies=policies,
        logging_url=_logging_url(env, roles),
    )


def _logging_url(env: Mapping[str, str], roles: Mapping[str, RoleSpec]) -> str:
    """Where the logging role's service is, as the gateway finds it: its
    ``MULTI_DB_LOGGING_SERVICE_URL``, else its own port on this host when its database is
    configured; empty without a logging role."""
    url = env.get("MULTI_DB_LOGGING_SERVICE_URL", "").strip()
    spec = roles.get("logging")
    if not url and spec is not None and env.get(f"{spec.prefix}HOST", "").strip():
        url = f"http://127.0.0.1:{spec.port}"
    return url.rstrip("/")
