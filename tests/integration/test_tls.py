"""TLS to PostgreSQL with real certificates (made here with ``cryptography``), against real
servers: the embedded one behind its TLS front (the pgserver wheel has no TLS of its own)
and, where this machine has one, a PostgreSQL built with OpenSSL serving TLS itself
(``ssl = on``, a ``pg_hba.conf`` of ``hostssl`` lines only, client certificates).

Each failure is one line naming the role and the setting to look at.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import stat
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
from sqlalchemy import text

from multidb.engines import create_engine
from multidb.errors import DatabaseTLSError
from multidb.roles import RoleSpec
from multidb.settings import DatabaseSettings, Settings, load_settings
from multidb_devstack.certificates import issue, make_ca
from multidb_devstack.embedded import EmbeddedPostgres
from tests.conftest import ADMIN

CERT_LOGIN = "cert_login"
HBA_TLS_ONLY = f"""
local   all  all                       scram-sha-256
hostssl all  {CERT_LOGIN}  127.0.0.1/32  cert
hostssl all  all           127.0.0.1/32  scram-sha-256
"""


def tls_binaries() -> Path | None:
    """A PostgreSQL of this machine built with OpenSSL (Debian's), newest first."""
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        configure = subprocess.run(
            [str(folder / "pg_config"), "--configure"], capture_output=True, text=True, check=False
        )
        if "openssl" in configure.stdout:
            return folder
    return None


class Certificates(msgspec.Struct, frozen=True):
    ca: Path
    other_ca: Path
    client_certificate: Path
    client_key: Path


class TLSServer(msgspec.Struct, frozen=True):
    server: EmbeddedPostgres
    files: Certificates
    native: bool


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module", params=["front", "native"])
def tls_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TLSServer]:
    """A scratch cluster serving a certificate for ``localhost`` only, from a CA of ours."""
    native = request.param == "native"
    binaries = tls_binaries() if native else None
    if native and binaries is None:
        pytest.skip("no PostgreSQL built with OpenSSL here (Debian's postgresql package)")
    folder = tmp_path_factory.mktemp(f"tls-{request.param}")
    server = EmbeddedPostgres(folder / "pg", binaries=binaries)
    server.start()
    assert server.native_tls is native
    ca, other = make_ca("multidb test CA"), make_ca("another CA")
    client = issue(ca, CERT_LOGIN, client=True)
    files = Certificates(
        ca=_write(folder, "ca.crt", ca.certificate_pem),
        other_ca=_write(folder, "other-ca.crt", other.certificate_pem),
        client_certificate=_write(folder, "client.crt", client.certificate_pem),
        client_key=_write(folder, "client.key", client.key_pem),
    )
    server.stop()
    # Named "localhost" only: 127.0.0.1 reaches it, but is not a name it holds.
    server.use_certificates(ca, issue(ca, "localhost", hosts=["localhost"]))
    if native:
        with (server.pgdata / "postgresql.conf").open("a") as conf:
            conf.write(f"ssl_ca_file = '{server.ca_file}'\n")  # for client certificates
        (server.pgdata / "pg_hba.conf").write_text(HBA_TLS_ONLY)
    server.start()
    if native:
        admin = _settings(TLSServer(server, files, native), "default", "localhost", "verify-full")
        asyncio.run(_create_cert_login(admin))
    yield TLSServer(server, files, native)
    server.stop()


async def _create_cert_login(admin: DatabaseSettings) -> None:
    conn = await admin.connect()
    try:
        await conn.execute(f"DROP ROLE IF EXISTS {CERT_LOGIN}")
        await conn.execute(f"CREATE ROLE {CERT_LOGIN} LOGIN")
    finally:
        await conn.close()


def _roles() -> dict[str, RoleSpec]:
    from multidb.plugins import get_roles

    return get_roles()


def _settings(tls: TLSServer, role: str, host: str, sslmode: str, **extra: str) -> DatabaseSettings:
    """``role``'s settings as its environment variables give them."""
    spec = _roles()[role]
    prefix = spec.prefix
    database_key = spec.env_database_key
    env = {
        f"{prefix}HOST": host,
        f"{prefix}PORT": str(tls.server.state.port),
        f"{prefix}USERNAME": "postgres",
        f"{prefix}PASSWORD": tls.server.state.password,
        f"{prefix}{database_key}": "postgres",
        f"{prefix}SSLMODE": sslmode,
        f"{prefix}SSLROOTCERT": str(tls.files.ca),
        **{f"{prefix}{key.upper()}": value for key, value in extra.items()},
    }
    return load_settings(env, {role: spec}).databases[role]


async def _encrypted(database: DatabaseSettings) -> str:
    """Connect, check both ends agree the session is TLS; the TLS version."""
    conn = await database.connect()
    try:
        assert await conn.fetchval("SELECT 1") == 1
        ssl_object = conn._transport.get_extra_info("ssl_object")
        assert ssl_object is not None, "the client's side of the session is not TLS"
        return str(ssl_object.version())
    finally:
        await conn.close()


async def _failure(database: DatabaseSettings) -> str:
    with pytest.raises(DatabaseTLSError) as caught:
        await database.connect()
    line = str(caught.value)
    assert "\n" not in line
    assert not database.password or database.password not in line
    return line


async def test_verify_full_succeeds_through_asyncpg_and_sqlalchemy(tls_server: TLSServer) -> None:
    database = _settings(tls_server, "analytics", "localhost", "verify-full")
    assert await _encrypted(database) in {"TLSv1.2", "TLSv1.3"}
    engine = create_engine(database)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar() == 1
            if tls_server.native:  # the server's own word for it
                ssl = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
                assert (await conn.execute(text(ssl))).scalar() is True
    finally:
        await engine.dispose()


async def test_a_wrong_ca_fails_with_one_line_naming_the_role_and_setting(
    tls_server: TLSServer,
) -> None:
    other = str(tls_server.files.other_ca)
    database = _settings(tls_server, "analytics", "localhost", "verify-full", sslrootcert=other)
    line = await _failure(database)
    assert line.startswith("analytics: TLS: certificate verify failed: "), line
    assert line.endswith(f"(MULTI_DB_ANALYTICS_SSLROOTCERT={other})"), line
    # The same through SQLAlchemy (the migrations' and the Python API's engines).
    engine = create_engine(database)
    try:
        with pytest.raises(DatabaseTLSError, match=r"^analytics: TLS: certificate verify failed"):
            async with engine.connect():
                pass
    finally:
        await engine.dispose()


async def test_a_wrong_host_name_fails_with_one_line_naming_the_role(
    tls_server: TLSServer,
) -> None:
    line = await _failure(_settings(tls_server, "default", "127.0.0.1", "verify-full"))
    assert line == (
        "default: TLS: host name 127.0.0.1 does not match the server certificate "
        "(DB_HOST=127.0.0.1, DB_SSLMODE=verify-full)"
    )


async def test_verify_ca_checks_the_chain_but_not_the_name(tls_server: TLSServer) -> None:
    await _encrypted(_settings(tls_server, "logging", "127.0.0.1", "verify-ca"))
    other = str(tls_server.files.other_ca)
    line = await _failure(
        _settings(tls_server, "logging", "127.0.0.1", "verify-ca", sslrootcert=other)
    )
    assert line.startswith("logging: TLS: certificate verify failed"), line


async def test_require_encrypts_and_verifies_only_with_a_root_certificate(
    tls_server: TLSServer,
) -> None:
    await _encrypted(_settings(tls_server, "archive", "127.0.0.1", "require", sslrootcert=""))
    other = str(tls_server.files.other_ca)
    line = await _failure(
        _settings(tls_server, "archive", "127.0.0.1", "require", sslrootcert=other)
    )
    assert line.startswith("archive: TLS: certificate verify failed"), line


async def test_disable_against_a_server_that_requires_tls_fails_clearly(
    tls_server: TLSServer,
) -> None:
    line = await _failure(_settings(tls_server, "default", "127.0.0.1", "disable"))
    assert line.startswith(
        "default: TLS: the server requires TLS, which DB_SSLMODE=disable does not use ("
    ), line
    assert "no encryption" in line
    # The negotiated modes find TLS on offer and take it.
    await _encrypted(_settings(tls_server, "default", "127.0.0.1", "prefer"))
    await _encrypted(_settings(tls_server, "default", "127.0.0.1", "allow"))


async def test_plain_text_sent_before_the_handshake_is_never_taken_for_encrypted(
    tls_server: TLSServer,
) -> None:
    # PostgreSQL's CVE-2021-23214: a man in the middle pipelines a plain-text startup
    # message behind the SSLRequest, then lets the real client do the handshake. A server
    # that read the buffered bytes as if they came over TLS would answer them inside the
    # session (an authentication request, "R"); this one hangs up before the handshake.
    ssl_request = struct.pack("!ii", 8, 80877103)
    body = struct.pack("!i", 196608) + b"user\0postgres\0database\0postgres\0\0"
    startup = struct.pack("!i", len(body) + 4) + body
    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection("127.0.0.1", tls_server.server.state.port)
    try:
        writer.write(ssl_request + startup)
        await writer.drain()
        async with asyncio.timeout(10):
            assert await reader.readexactly(1) == b"S"
            said = await _first_byte_inside_tls(reader, writer, client)
    finally:
        writer.close()
    # The front hangs up before the handshake (nothing said); PostgreSQL completes it, then
    # refuses with a FATAL error ("received unencrypted data after SSL request").
    assert said in {b"", b"E"}, said


async def _first_byte_inside_tls(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: ssl.SSLContext
) -> bytes:
    try:
        await writer.start_tls(client)
        return await reader.readexactly(1)
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
        return b""


async def test_client_certificates(tls_server: TLSServer) -> None:
    if not tls_server.native:
        pytest.skip("the front ends TLS before the server: client certificates need native TLS")
    files = tls_server.files
    with_certificate = {"sslcert": str(files.client_certificate), "sslkey": str(files.client_key)}
    for mode in ("verify-full", "prefer"):  # prefer: asyncpg takes the certificate from the DSN
        database = _settings(tls_server, "analytics", "localhost", mode, **with_certificate)
        database = msgspec.structs.replace(database, username=CERT_LOGIN, password="")
        await _encrypted(database)
    without = _settings(tls_server, "analytics", "localhost", "verify-full")
    line = await _failure(msgspec.structs.replace(without, username=CERT_LOGIN, password=""))
    assert line.startswith("analytics: TLS: "), line
    assert "certificate" in line
    assert line.endswith("MULTI_DB_ANALYTICS_SSLCERT unset)"), line


# ---- the suite's own embedded server, the service, the CLI ----------------------------------


def test_the_suite_connects_verify_full_to_the_embedded_server(
    embedded: EmbeddedPostgres | None, settings: Settings
) -> None:
    if embedded is None:
        pytest.skip("the environment names the database servers")
    for database in settings.databases.values():
        assert (database.sslmode, database.sslrootcert) == ("verify-full", str(embedded.ca_file))
    # Private keys are the server's (or ours) alone; the CA certificate is public.
    assert stat.S_IMODE(embedded.ca_key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(embedded.server_key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(embedded.ca_file.stat().st_mode) == 0o644


def test_a_cluster_made_before_tls_gets_its_certificates_on_next_start(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "old")
    server.start()
    server.stop()
    # As a cluster made before TLS: no certificates, no TLS configuration, and running with
    # its own TCP port as it used to.
    for path in (server.ca_file, server.ca_key_file, server.server_certificate_file):
        path.unlink()
    server.server_key_file.unlink()
    conf = server.pgdata / "postgresql.conf"
    conf.write_text(conf.read_text().split("\n# multidb:")[0])
    port = server.state.port
    server._run(  # the old way of starting it
        "pg_ctl",
        "-D",
        str(server.pgdata),
        "-w",
        "-l",
        str(server.pgdata / "server.log"),
        "-o",
        f"-h 127.0.0.1 -p {port} -k {server.pgdata}",
        "start",
    )
    try:
        server.start()
        assert server.ca_file.exists()
        assert server.server_key_file.exists()
        spec = _roles()["archive"]
        database = server.database_settings(spec, database="postgres")
        assert database.sslmode == "verify-full"
        assert asyncio.run(_encrypted(database)) in {"TLSv1.2", "TLSv1.3"}
    finally:
        server.stop()


def _pointed_at(settings: Settings, role: str, database: DatabaseSettings) -> Settings:
    return msgspec.structs.replace(settings, databases={**settings.databases, role: database})


async def test_a_tls_failure_is_one_line_in_health_and_execute(
    service_client: Any, settings: Settings, tmp_path: Path
) -> None:
    other = tmp_path / "other-ca.crt"
    other.write_bytes(make_ca("another CA").certificate_pem)
    wrong = msgspec.structs.replace(settings.databases["analytics"], sslrootcert=str(other))
    async with service_client("analytics", _pointed_at(settings, "analytics", wrong)) as client:
        health = await client.get("/health", headers=ADMIN)
        assert health.status_code == 503
        error = health.json()["error"]
        assert error.startswith("analytics: TLS: certificate verify failed: "), error
        assert error.endswith(f"(MULTI_DB_ANALYTICS_SSLROOTCERT={other})"), error
        execute = await client.post("/execute", json={"query": "SELECT 1"}, headers=ADMIN)
        assert execute.status_code == 503
        assert "analytics: TLS: certificate verify failed" in execute.json()["detail"]


def _cli_env(database_env: dict[str, str], **overrides: str) -> dict[str, str]:
    only_analytics = {k: v for k, v in database_env.items() if k.startswith("MULTI_DB_ANALYTICS_")}
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DB_", "MULTI_DB_"))},
        **only_analytics,
        "MULTI_DB_ENV_FILE": os.devnull,
        **overrides,
    }


def test_migrate_says_a_tls_failure_in_one_line(
    database_env: dict[str, str], tmp_path: Path
) -> None:
    other = tmp_path / "other-ca.crt"
    other.write_bytes(make_ca("another CA").certificate_pem)
    env = _cli_env(database_env, MULTI_DB_ANALYTICS_SSLROOTCERT=str(other))
    result = subprocess.run(
        [sys.executable, "-m", "multidb.cli", "migrate", "analytics"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("multidb migrate: analytics: TLS: certificate verify failed"), last
    assert last.endswith(f"(MULTI_DB_ANALYTICS_SSLROOTCERT={other})")


def test_a_service_with_a_missing_certificate_stops_at_start_up_with_one_line(
    database_env: dict[str, str], tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere" / "ca.crt"
    env = _cli_env(database_env, MULTI_DB_ANALYTICS_SSLROOTCERT=str(missing))
    result = subprocess.run(
        [sys.executable, "-m", "multidb.service", "analytics", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"multidb analytics: configuration error: MULTI_DB_ANALYTICS_SSLROOTCERT: cannot read "
        f"{missing}: No such file or directory"
    )


async def test_a_password_file_works_and_a_wrong_one_is_a_clear_error(
    database_env: dict[str, str], roles: dict[str, RoleSpec], tmp_path: Path
) -> None:
    password = database_env["MULTI_DB_ANALYTICS_PASSWORD"]
    secret = tmp_path / "analytics-password"
    secret.write_text(password + "\n")  # as `echo ... > file` and Docker secrets leave it
    env = {
        k: v
        for k, v in _cli_env(database_env).items()
        if k.startswith("MULTI_DB_ANALYTICS_") and k != "MULTI_DB_ANALYTICS_PASSWORD"
    }
    env["MULTI_DB_ANALYTICS_PASSWORD_FILE"] = str(secret)
    database = load_settings(env, roles).databases["analytics"]
    assert database.password == password
    await _encrypted(database)

    secret.write_text("not-the-password\n")
    wrong = load_settings(env, roles).databases["analytics"]
    with pytest.raises(asyncpg.InvalidPasswordError) as caught:
        await wrong.connect()
    assert "password authentication failed" in str(caught.value)
    assert "not-the-password" not in str(caught.value)
