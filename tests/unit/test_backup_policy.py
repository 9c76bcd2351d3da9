"""Backup settings through load_settings: durations, off, KEEP forms, one line per bad value."""

from __future__ import annotations

import pytest

from multidb.backups.policy import BackupPolicy, format_duration
from multidb.plugins import get_roles
from multidb.settings import Settings, SettingsError, load_settings

ROLES = get_roles()
BASE = {"DB_HOST": "localhost", "MULTI_DB_ARCHIVE_HOST": "localhost"}


def _load(**env: str) -> Settings:
    return load_settings({**BASE, **env}, ROLES)


def _policy(role: str, **env: str) -> BackupPolicy:
    return _load(**env).backups.policy(role)


def _refused(**env: str) -> str:
    with pytest.raises(SettingsError) as refused:
        _load(**env)
    said = str(refused.value)
    assert "\n" not in said, said
    return said


def test_defaults_per_role() -> None:
    settings = _load()
    backups = settings.backups
    assert backups.directory == ".data/backups"
    assert backups.bin_dir == ""
    assert backups.timeout_s == 3600
    assert set(backups.policies) == set(ROLES)
    # The default role's data changes fastest: hourly; the others daily.
    assert backups.policy("default").interval_s == 3600
    for role in ("analytics", "logging", "archive"):
        assert backups.policy(role).interval_s == 86400
    for role in ROLES:
        policy = backups.policy(role)
        assert (policy.keep_count, policy.keep_age_s) == (48, 7 * 86400)
        assert policy.drill_interval_s == 86400
        assert policy.host == ""
    assert backups.policy("default").describe() == "every 1h"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("90s", 90),
        ("30m", 1800),
        ("1h", 3600),
        ("1.5h", 5400),
        ("1d", 86400),
        ("2w", 14 * 86400),
        (" 30m ", 1800),
        ("30 m", 1800),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    policy = _policy("archive", MULTI_DB_ARCHIVE_BACKUP_INTERVAL=text)
    assert policy.interval_s == seconds
    assert _policy("archive", MULTI_DB_ARCHIVE_DRILL_INTERVAL=text).drill_interval_s == seconds
    assert _load(MULTI_DB_BACKUP_TIMEOUT_S=text).backups.timeout_s == seconds


@pytest.mark.parametrize("text", ["off", "OFF", " Off "])
def test_off_turns_a_schedule_off(text: str) -> None:
    policy = _policy(
        "default",
        MULTI_DB_DEFAULT_BACKUP_INTERVAL=text,
        MULTI_DB_DEFAULT_DRILL_INTERVAL=text,
    )
    assert policy.interval_s is None
    assert policy.drill_interval_s is None
    assert policy.describe() == "off"
    # Only the role named: the others keep their schedule.
    assert _policy("analytics", MULTI_DB_DEFAULT_BACKUP_INTERVAL=text).interval_s == 86400


def test_an_empty_value_means_the_default() -> None:
    policy = _policy(
        "logging", MULTI_DB_LOGGING_BACKUP_INTERVAL="", MULTI_DB_LOGGING_BACKUP_KEEP="  "
    )
    assert policy.interval_s == 86400
    assert (policy.keep_count, policy.keep_age_s) == (48, 7 * 86400)


@pytest.mark.parametrize(
    ("text", "count", "age"),
    [
        ("24", 24, None),
        ("1", 1, None),
        ("7d", None, 7 * 86400),
        ("36h", None, 36 * 3600),
        ("24,7d", 24, 7 * 86400),
        ("7d,24", 24, 7 * 86400),
        (" 24 , 7d ", 24, 7 * 86400),
    ],
)
def test_keep_forms(text: str, count: int | None, age: float | None) -> None:
    policy = _policy("analytics", MULTI_DB_ANALYTICS_BACKUP_KEEP=text)
    assert (policy.keep_count, policy.keep_age_s) == (count, age)


def test_the_other_settings() -> None:
    settings = _load(
        MULTI_DB_BACKUP_DIR=" /srv/backups ",
        MULTI_DB_PG_BIN_DIR="/usr/lib/postgresql/16/bin",
        MULTI_DB_ARCHIVE_BACKUP_HOST="/run/postgresql",
        MULTI_DB_LOGGING_SERVICE_URL="http://logging:8003/",
    )
    backups = settings.backups
    assert backups.directory == "/srv/backups"
    assert backups.bin_dir == "/usr/lib/postgresql/16/bin"
    assert backups.policy("archive").host == "/run/postgresql"
    assert backups.policy("default").host == ""
    assert backups.logging_url == "http://logging:8003"


@pytest.mark.parametrize(
    "text", ["soon", "0", "0s", "-1h", "1y", "30 minutes", "1e3", "h", "1h30m", "30M"]
)
@pytest.mark.parametrize("name", ["BACKUP_INTERVAL", "DRILL_INTERVAL"])
def test_a_bad_duration_is_one_line_naming_the_variable(name: str, text: str) -> None:
    variable = f"MULTI_DB_ARCHIVE_{name}"
    said = _refused(**{variable: text})
    assert said.startswith(f"{variable}:"), said
    assert repr(text) in said
    assert "off" in said


@pytest.mark.parametrize(
    "text", ["0", "-3", "24,48", "7d,1w", "24,", ",7d", "off", "many", "1.5", "24.0", "7d;24"]
)
def test_a_bad_keep_is_one_line_naming_the_variable(text: str) -> None:
    said = _refused(MULTI_DB_DEFAULT_BACKUP_KEEP=text)
    assert said.startswith("MULTI_DB_DEFAULT_BACKUP_KEEP:"), said
    assert repr(text) in said
    assert "24,7d" in said


@pytest.mark.parametrize("text", ["off", "never", "0"])
def test_a_bad_timeout_is_one_line_naming_the_variable(text: str) -> None:
    said = _refused(MULTI_DB_BACKUP_TIMEOUT_S=text)
    assert said.startswith("MULTI_DB_BACKUP_TIMEOUT_S:"), said


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(3600, "1h"), (86400, "1d"), (604800, "1w"), (90, "90s"), (1800, "30m"), (1.5, "1.5s")],
)
def test_durations_are_shown_as_written(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
