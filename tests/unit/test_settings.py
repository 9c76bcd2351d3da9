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


# ---- TLS and password files --------------------------------------------------------------


def test_tls_settings_per_role_default_to_prefer() -> None:
    env = {
        **SPEC_ENV,
        "DB_SSLMODE": "verify-full",
        "DB_SSLROOTCERT": "/etc/multidb/ca.crt",
        "MULTI_DB_ANALYTICS_SSLMODE": "require",
        "MULTI_DB_ANALYTICS_SSLCERT": "/etc/multidb/client.crt",
        "MULTI_DB_ANALYTICS_SSLKEY": "/etc/multidb/client.key",
    }
    databases = load_settings(env, ROLES).databases
    default, analytics = databases["default"], databases["analytics"]
    assert (default.sslmode, default.sslrootcert) == ("verify-full", "/etc/multidb/ca.crt")
    assert (analytics.sslmode, analytics.sslcert, analytics.sslkey) == (
        "require",
        "/etc/multidb/client.crt",
        "/etc/multidb/client.key",
    )
    assert databases["logging"].sslmode == "prefer"
    # Each knows its role and variables, for error lines that name the setting.
    assert default.variable("sslrootcert") == "DB_SSLROOTCERT"
    assert analytics.variable("sslmode") == "MULTI_DB_ANALYTICS_SSLMODE"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            {"DB_SSLMODE": "strict"},
            "DB_SSLMODE: must be one of disable, allow, prefer, require, verify-ca, verify-full"
            " (got 'strict')",
        ),
        (
            {"MULTI_DB_LOGGING_SSLMODE": "verify-ca"},
            "MULTI_DB_LOGGING_SSLMODE: verify-ca needs MULTI_DB_LOGGING_SSLROOTCERT",
        ),
        (
            {"MULTI_DB_ARCHIVE_SSLKEY": "/k.pem"},
            "MULTI_DB_ARCHIVE_SSLKEY: a client key needs its certificate in MULTI_DB_ARCHIVE_SSLCERT",
        ),
    ],
)
def test_bad_tls_settings_name_the_variable(extra: dict[str, str], expected: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({**SPEC_ENV, **extra}, ROLES)
    assert str(caught.value).startswith(expected)
    assert "\n" not in str(caught.value)


def test_unreadable_certificates_are_one_line_naming_the_variable(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    cases = {
        "MULTI_DB_ANALYTICS_SSLROOTCERT": (
            {"MULTI_DB_ANALYTICS_SSLMODE": "verify-full"},
            str(tmp_path / "missing.crt"),
            "cannot read",
        ),
        "DB_SSLROOTCERT": ({"DB_SSLMODE": "require"}, str(garbage), "no usable certificate in"),
        "MULTI_DB_ARCHIVE_SSLCERT": ({}, str(garbage), "cannot use the client certificate"),
    }
    for variable, (extra, path, expected) in cases.items():
        database = next(
            db
            for db in load_settings({**SPEC_ENV, **extra, variable: path}, ROLES).databases.values()
            if variable.startswith(db.env_prefix) and db.env_prefix
        )
        with pytest.raises(SettingsError) as caught:
            _ = database.connect_arguments
        message = str(caught.value)
        assert message.startswith(f"{variable}: {expected}"), message
        assert path in message
        assert "\n" not in message


def test_ssl_argument_follows_libpq_modes(tmp_path: Path) -> None:
    import ssl

    from multidb_devstack.certificates import make_ca

    root = tmp_path / "ca.crt"
    root.write_bytes(make_ca("test CA").certificate_pem)

    def argument(**extra: str) -> object:
        return (
            load_settings({**SPEC_ENV, **extra}, ROLES)
            .databases["default"]
            .connect_arguments["ssl"]
        )

    assert argument() == "prefer"  # asyncpg's own negotiation, as before
    assert argument(DB_SSLMODE="disable") is False
    assert argument(DB_SSLMODE="allow") == "allow"
    unverified = argument(DB_SSLMODE="require")
    assert isinstance(unverified, ssl.SSLContext)
    assert (unverified.verify_mode, unverified.check_hostname) == (ssl.CERT_NONE, False)
    # require with a root certificate checks the chain, as libpq does.
    chained = argument(DB_SSLMODE="require", DB_SSLROOTCERT=str(root))
    assert isinstance(chained, ssl.SSLContext)
    assert (chained.verify_mode, chained.check_hostname) == (ssl.CERT_REQUIRED, False)
    verify_ca = argument(DB_SSLMODE="verify-ca", DB_SSLROOTCERT=str(root))
    assert isinstance(verify_ca, ssl.SSLContext)
    assert (verify_ca.verify_mode, verify_ca.check_hostname) == (ssl.CERT_REQUIRED, False)
    full = argument(DB_SSLMODE="verify-full", DB_SSLROOTCERT=str(root))
    assert isinstance(full, ssl.SSLContext)
    assert (full.verify_mode, full.check_hostname) == (ssl.CERT_REQUIRED, True)
    assert full.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_libpq_environment_carries_tls_never_the_password() -> None:
    env = {**SPEC_ENV, "DB_SSLMODE": "verify-full", "DB_SSLROOTCERT": "/ca.crt"}
    database = load_settings(env, ROLES).databases["default"]
    libpq = database.libpq_environment()
    assert libpq == {
        "PGHOST": "localhost",
        "PGPORT": "5432",
        "PGUSER": "postgres",
        "PGDATABASE": "ocr_identity_db",
        "PGSSLMODE": "verify-full",
        "PGSSLROOTCERT": "/ca.crt",
    }
    assert "s3cret-pw" not in repr(libpq)
    system = load_settings({**SPEC_ENV, "DB_SSLMODE": "verify-full"}, ROLES).databases["default"]
    assert system.libpq_environment()["PGSSLROOTCERT"] == "system"  # libpq 16's trust store


def test_backup_info_shows_tls_paths_and_no_secret() -> None:
    env = {
        **SPEC_ENV,
        "DB_SSLMODE": "verify-full",
        "DB_SSLROOTCERT": "/ca.crt",
        "DB_SSLCERT": "/client.crt",
        "DB_SSLKEY": "/client.key",
    }
    info = load_settings(env, ROLES).databases["default"].backup_info()
    assert (info.sslmode, info.sslrootcert, info.sslcert, info.sslkey) == (
        "verify-full",
        "/ca.crt",
        "/client.crt",
        "/client.key",
    )
    assert "s3cret-pw" not in msgspec.json.encode(info).decode()
    assert load_settings(SPEC_ENV, ROLES).databases["analytics"].backup_info().sslcert is None


@pytest.mark.parametrize(
    ("content", "password"),
    [
        ("from-a-file\n", "from-a-file"),
        ("from-a-file", "from-a-file"),
        ("crlf\r\n", "crlf"),
        ("two-newlines\n\n", "two-newlines\n"),  # one trailing newline is dropped, no more
        (" spaces kept \n", " spaces kept "),
    ],
)
def test_password_file_is_read(tmp_path: Path, content: str, password: str) -> None:
    secret = tmp_path / "db-password"
    secret.write_text(content)
    env = {k: v for k, v in SPEC_ENV.items() if k != "MULTI_DB_ANALYTICS_PASSWORD"}
    env["MULTI_DB_ANALYTICS_PASSWORD_FILE"] = str(secret)
    assert load_settings(env, ROLES).databases["analytics"].password == password


def test_bad_password_files_are_one_clear_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("")
    missing = tmp_path / "missing"
    present = tmp_path / "present"
    present.write_text("another-s3cret\n")
    cases = [
        ({"DB_PASSWORD_FILE": str(missing)}, f"DB_PASSWORD_FILE: cannot read {missing}"),
        ({"DB_PASSWORD_FILE": str(empty)}, f"DB_PASSWORD_FILE: {empty} is empty"),
        # Both at once is a mistake, whichever was meant.
        ({"DB_PASSWORD_FILE": str(present)}, "DB_PASSWORD_FILE: set it or DB_PASSWORD, not both"),
    ]
    without = {k: v for k, v in SPEC_ENV.items() if k != "DB_PASSWORD"}
    for extra, expected in cases:
        base = SPEC_ENV if "not both" in expected else without
        with pytest.raises(SettingsError) as caught:
            load_settings({**base, **extra}, ROLES)
        message = str(caught.value)
        assert message.startswith(expected), message
        assert "s3cret" not in message


def test_replicas_and_cluster_hosts_are_parsed() -> None:
    env = {
        **SPEC_ENV,
        "DB_HOST": "db1:5433,db2,[::1]:5434",
        "DB_PORT": "6000",
        "MULTI_DB_ANALYTICS_REPLICAS": " r1:5432 , r2 ",
        "MULTI_DB_ANALYTICS_REPLICA_USERNAME": "reader",
        "MULTI_DB_ANALYTICS_REPLICA_PASSWORD": "replica-secret",
        "MULTI_DB_ANALYTICS_MAX_REPLICA_LAG_MS": "250",
        "MULTI_DB_READ_YOUR_WRITES_WAIT_MS": "40",
    }
    settings = load_settings(env, get_roles())
    default = settings.databases["default"]
    assert default.is_cluster
    assert default.addresses == (("db1", 5433), ("db2", 6000), ("::1", 5434))
    arguments = default.connect_arguments
    assert arguments["host"] == ["db1", "db2", "::1"]
    assert arguments["port"] == [5433, 6000, 5434]
    assert arguments["target_session_attrs"] == "read-write"
    libpq = default.libpq_environment()
    assert (libpq["PGHOST"], libpq["PGPORT"]) == ("db1,db2,::1", "5433,6000,5434")
    assert libpq["PGTARGETSESSIONATTRS"] == "read-write"
    analytics = settings.databases["analytics"]
    assert not analytics.is_cluster
    assert analytics.replicas == ("r1:5432", "r2:5433")  # no port: the role's PORT
    assert analytics.max_replica_lag_ms == 250
    replica = analytics.node(analytics.replica_addresses[1], replica=True)
    assert (replica.host, replica.port, replica.username) == ("r2", 5433, "reader")
    assert replica.password == "replica-secret"
    assert "replica-secret" not in repr(analytics)
    assert settings.read_your_writes_wait_ms == 40


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"MULTI_DB_ANALYTICS_REPLICAS": "r1:5432,,r2"}, "MULTI_DB_ANALYTICS_REPLICAS: an empty"),
        ({"MULTI_DB_ANALYTICS_REPLICAS": "r1:99999"}, "MULTI_DB_ANALYTICS_REPLICAS: 'r1:99999'"),
        ({"DB_HOST": "db1:5432,db2:port"}, "DB_HOST: 'db2:port' is not host:port"),
        ({"DB_MAX_REPLICA_LAG_MS": "-1"}, "DB_MAX_REPLICA_LAG_MS"),
        ({"MULTI_DB_READ_YOUR_WRITES_WAIT_MS": "soon"}, "MULTI_DB_READ_YOUR_WRITES_WAIT_MS"),
    ],
)
def test_bad_replica_settings_are_one_line_naming_the_variable(
    extra: dict[str, str], expected: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({**SPEC_ENV, **extra}, get_roles())
    assert str(raised.value).startswith(expected), str(raised.value)
    assert "\n" not in str(raised.value)


def test_one_host_with_its_port_and_a_cluster_url() -> None:
    settings = load_settings({**SPEC_ENV, "DB_HOST": "db:5439", "DB_PORT": ""}, get_roles())
    default = settings.databases["default"]
    assert (default.host, default.port, default.is_cluster) == ("db", 5439, False)
    ipv6 = load_settings({**SPEC_ENV, "DB_HOST": "[::1]:5433,db2"}, get_roles())
    cluster = ipv6.databases["default"]
    assert cluster.display_url == "postgresql://postgres:***@[::1]:5433,db2:5432/ocr_identity_db"
    assert cluster.url().port == 5433  # engines connect through connect_arguments
    with pytest.raises(SettingsError, match="DB_HOST: port 5439 differs from DB_PORT=5432"):
        load_settings({**SPEC_ENV, "DB_HOST": "db:5439"}, get_roles())
    with pytest.raises(SettingsError, match="listed twice"):
        load_settings({**SPEC_ENV, "MULTI_DB_ANALYTICS_REPLICAS": "r1,r1:5433"}, get_roles())
