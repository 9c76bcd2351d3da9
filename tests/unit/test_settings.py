"""Settings: the spec's variable names, pool defaults per role, one clear line per bad value."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from multidb.plugins import get_roles
from multidb.settings import DatabaseSettings, SettingsError, load_settings, read_environment

ROLES = get_roles()

SPEC_ENV = {
    "DB_HOST": "localhost",
    "DB_PORT": "5432",
    "DB_USERNAME": "postgres",
    "DB_PASSWORD": "s3cret-pw",
    "DB_NAME": "ocr_identity_db",
    "MULTI_DB_ANALYTICS_HOST": "localhost",
    "MULTI_DB_ANALYTICS_PORT": "5433",
    "MULTI_DB_ANALYTICS_USERNAME": "postgres",
    "MULTI_DB_ANALYTICS_PASSWORD": "postgres",
    "MULTI_DB_ANALYTICS_DATABASE": "ocr_analytics_db",
    "MULTI_DB_LOGGING_HOST": "localhost",
    "MULTI_DB_LOGGING_PORT": "5434",
    "MULTI_DB_ARCHIVE_HOST": "localhost",
    "MULTI_DB_ARCHIVE_PORT": "5435",
}


def test_spec_example_environment_configures_every_role() -> None:
    settings = load_settings(SPEC_ENV, ROLES)
    assert list(settings.databases) == ["default", "analytics", "logging", "archive"]
    default = settings.databases["default"]
    assert (default.host, default.port, default.username, default.database) == (
        "localhost",
        5432,
        "postgres",
        "ocr_identity_db",
    )
    assert settings.databases["analytics"].port == 5433
    # Unset database names fall back to the spec's defaults.
    assert settings.databases["logging"].database == "ocr_logging_db"
    assert settings.databases["archive"].database == "ocr_archive_db"


def test_pool_defaults_per_role_and_overrides() -> None:
    settings = load_settings(SPEC_ENV, ROLES)
    pools = {name: (db.pool_size, db.max_overflow) for name, db in settings.databases.items()}
    assert pools == {
        "default": (10, 20),
        "analytics": (5, 10),
        "logging": (5, 10),
        "archive": (3, 5),
    }
    env = {**SPEC_ENV, "DB_POOL_SIZE": "4", "DB_MAX_OVERFLOW": "0", "MULTI_DB_ARCHIVE_ECHO": "true"}
    settings = load_settings(env, ROLES)
    assert (
        settings.databases["default"].pool_size,
        settings.databases["default"].max_overflow,
    ) == (4, 0)
    assert settings.databases["archive"].echo is True


def test_unconfigured_role_is_absent() -> None:
    settings = load_settings({"DB_HOST": "db.internal"}, ROLES)
    assert list(settings.databases) == ["default"]
    assert load_settings({}, ROLES).databases == {}


def test_settings_are_immutable() -> None:
    database = load_settings(SPEC_ENV, ROLES).databases["default"]
    with pytest.raises(AttributeError):
        database.port = 1  # type: ignore[misc]


def test_password_never_in_repr_or_display_url() -> None:
    settings = load_settings(SPEC_ENV, ROLES)
    database = settings.databases["default"]
    assert "s3cret-pw" not in repr(database)
    assert "s3cret-pw" not in repr(settings)
    assert database.display_url == "postgresql://postgres:***@localhost:5432/ocr_identity_db"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("DB_PORT", "abc", "DB_PORT: expected `int`, got `str` (got 'abc')"),
        ("DB_PORT", "70000", "DB_PORT: expected `int` <= 65535"),
        ("MULTI_DB_ANALYTICS_PORT", "0", "MULTI_DB_ANALYTICS_PORT: expected `int` >= 1"),
        ("MULTI_DB_LOGGING_POOL_SIZE", "0", "MULTI_DB_LOGGING_POOL_SIZE: expected `int` >= 1"),
        (
            "MULTI_DB_ARCHIVE_MAX_OVERFLOW",
            "-1",
            "MULTI_DB_ARCHIVE_MAX_OVERFLOW: expected `int` >= 0",
        ),
        ("DB_ECHO", "maybe", "DB_ECHO: expected `bool`"),
        ("MULTI_DB_EXECUTE_TIMEOUT_MS", "soon", "MULTI_DB_EXECUTE_TIMEOUT_MS: expected `int`"),
        ("MULTI_DB_EXECUTE_MAX_ROWS", "0", "MULTI_DB_EXECUTE_MAX_ROWS: expected `int` >= 1"),
        ("MULTI_DB_HEALTH_TIMEOUT_MS", "1.5", "MULTI_DB_HEALTH_TIMEOUT_MS: expected `int`"),
        ("MULTI_DB_ROUTING", "not json", "MULTI_DB_ROUTING: must be a JSON object"),
        ("MULTI_DB_ROUTING", '["User"]', "MULTI_DB_ROUTING: must be a JSON object"),
        ("MULTI_DB_ROUTING", '{"User": 3}', "MULTI_DB_ROUTING: must be a JSON object"),
        ("MULTI_DB_ROUTING", '{"User": "reporting"}', "routed to unknown role 'reporting'"),
    ],
)
def test_bad_value_names_the_variable(variable: str, value: str, expected: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({**SPEC_ENV, variable: value}, ROLES)
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message
    assert message.startswith(variable)


def test_a_bad_secret_is_never_echoed() -> None:
    # A value that fails to parse is quoted back, except a secret's: a secret that is too
    # short is still someone's secret (or a typo of it).
    short = "hunter2-almost-the-real-secret"
    with pytest.raises(SettingsError) as caught:
        load_settings({**SPEC_ENV, "MULTI_DB_SERVICE_SECRET": short}, ROLES)
    message = str(caught.value)
    assert message == "MULTI_DB_SERVICE_SECRET: expected `str` of length >= 32"
    assert "hunter2" not in message
    # The same kind of mistake in a variable that is not a secret is shown.
    with pytest.raises(SettingsError, match=r"\(got 'x'\)"):
        load_settings({**SPEC_ENV, "DB_PORT": "x"}, ROLES)


def test_routing_json_is_parsed() -> None:
    settings = load_settings({**SPEC_ENV, "MULTI_DB_ROUTING": '{"AuditLog": "logging"}'}, ROLES)
    assert settings.routing == {"AuditLog": "logging"}


def test_dotenv_file_is_read_and_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        'DB_HOST=from-file\nDB_PORT=6000\n# comment\nMULTI_DB_ROUTING=\'{"User": "default"}\'\n'
    )
    monkeypatch.setenv("DB_PORT", "6001")
    monkeypatch.delenv("DB_HOST", raising=False)
    env = read_environment(env_file)
    settings = load_settings(env, ROLES)
    assert settings.databases["default"].host == "from-file"
    assert settings.databases["default"].port == 6001
    assert settings.routing == {"User": "default"}


def test_api_keys_are_split_and_trimmed() -> None:
    settings = load_settings({**SPEC_ENV, "API_KEYS": " one, sha256:abcd ,,two "}, ROLES)
    assert settings.api_keys == ("one", "sha256:abcd", "two")


def test_database_settings_reject_unknown_fields() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"host": "h", "database": "d", "colour": "red"}, DatabaseSettings)
