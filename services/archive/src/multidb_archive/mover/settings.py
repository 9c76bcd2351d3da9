"""The mover's settings, read from the environment like every other multidb setting.

``MULTI_DB_ARCHIVE_POLICY`` says which rows of which model leave the default database:
``Media: untouched 365d, People: deleted 30d, User: deleted 30d`` (the default). A rule is
``deleted <age>`` (soft-deleted longer ago than that), ``untouched <age>`` (not updated for
that long) or ``off``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

import msgspec

from multidb.backups.policy import format_duration, parse_duration
from multidb.errors import SettingsError
from multidb.settings import convert_env
from multidb_archive.mover.catalog import CATALOG

DEFAULT_POLICY = "Media: untouched 365d, People: deleted 30d, User: deleted 30d"
POLICY_VARIABLE = "MULTI_DB_ARCHIVE_POLICY"
INTERVAL_VARIABLE = "MULTI_DB_ARCHIVE_INTERVAL"
RULES = ("deleted", "untouched")
# Which column each rule reads.
RULE_COLUMNS = {"deleted": "deleted_at", "untouched": "updated_at"}

Positive = Annotated[int, msgspec.Meta(gt=0)]


class Policy(msgspec.Struct, frozen=True, kw_only=True):
    """Rows of ``model`` whose ``rule`` column is older than ``age_s`` seconds move."""

    model: str
    rule: Literal["deleted", "untouched"]
    age_s: float

    @property
    def column(self) -> str:
        return RULE_COLUMNS[self.rule]

    def describe(self) -> str:
        return f"{self.rule} {format_duration(self.age_s)}"


class ArchiveSettings(msgspec.Struct, frozen=True, kw_only=True):
    policies: dict[str, Policy] = msgspec.field(default_factory=dict)
    # None: the archive service runs no schedule (runs start by HTTP or the CLI only).
    interval_s: float | None = 86400.0
    # Rows of one model per batch; each row travels with its dependents and links, so
    # the batch is bounded by rows here and by MAX_BATCH_BYTES in the mover.
    batch_size: Annotated[int, msgspec.Meta(gt=0, le=10_000)] = 5000
    max_source_lag_ms: Positive = 5000
    max_pause_s: Positive = 300

    def describe_schedule(self) -> str:
        return "off" if self.interval_s is None else f"every {format_duration(self.interval_s)}"


def parse_policy(text: str) -> dict[str, Policy]:
    """``Model: rule age, ...`` -> policies by model; one clear line for any mistake."""
    policies: dict[str, Policy] = {}
    known = ", ".join(CATALOG)
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        model, colon, rule_text = entry.partition(":")
        model = model.strip()
        if not colon:
            msg = (
                f"{POLICY_VARIABLE}: {entry!r} is not '<Model>: deleted|untouched <age>' "
                "or '<Model>: off'"
            )
            raise SettingsError(msg)
        if model not in CATALOG:
            raise SettingsError(f"{POLICY_VARIABLE}: unknown model {model!r} (archivable: {known})")
        if model in policies:
            raise SettingsError(f"{POLICY_VARIABLE}: model {model!r} appears twice")
        words = rule_text.split()
        if words == ["off"]:
            continue
        if len(words) != 2 or words[0] not in RULES:
            msg = (
                f"{POLICY_VARIABLE}: the rule of {model} must be 'deleted <age>', "
                f"'untouched <age>' or 'off' (got {rule_text.strip()!r})"
            )
            raise SettingsError(msg)
        rule, age_text = words
        column = RULE_COLUMNS[rule]
        if column not in CATALOG[model].rule_columns:
            msg = f"{POLICY_VARIABLE}: {model} rows have no {column}, so no '{rule}' rule"
            raise SettingsError(msg)
        age_s = parse_duration(f"{POLICY_VARIABLE} ({model})", age_text)
        if age_s is None:
            msg = f"{POLICY_VARIABLE}: {model}: write '{model}: off' to turn it off"
            raise SettingsError(msg)
        policies[model] = Policy(model=model, rule=rule, age_s=age_s)  # type: ignore[arg-type]
    return policies


def load_archive_settings(env: Mapping[str, str]) -> ArchiveSettings:
    raw: dict[str, object] = {
        "policies": parse_policy(env.get(POLICY_VARIABLE, DEFAULT_POLICY) or DEFAULT_POLICY),
        "interval_s": parse_duration(INTERVAL_VARIABLE, env.get(INTERVAL_VARIABLE, "") or "1d"),
    }
    names = {
        "batch_size": "MULTI_DB_ARCHIVE_BATCH_SIZE",
        "max_source_lag_ms": "MULTI_DB_ARCHIVE_MAX_SOURCE_LAG_MS",
        "max_pause_s": "MULTI_DB_ARCHIVE_MAX_PAUSE_S",
    }
    for field, variable in names.items():
        value = env.get(variable, "").strip()
        if value:
            raw[field] = value
    result: ArchiveSettings = convert_env(raw, ArchiveSettings, names)
    return result
