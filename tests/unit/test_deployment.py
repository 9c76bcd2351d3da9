"""The Docker deployment, checked against the code (no Docker engine runs here).

``docker-compose.yml``, ``Dockerfile`` and ``config.multi_db.example.env`` are read as data:
roles, ports, dependencies, healthchecks, build targets, secrets and every environment
variable must agree with what the installed roles and the settings code say. When a
compose client is installed, ``docker compose config`` validates the file as well. What
each image installs is checked by replaying its build stages (tests/dockerfile.py) in
tests/integration/test_single_role_install.py.
"""

from __future__ import annotations

import ast
import json
import logging
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import yaml
from dotenv import dotenv_values

import multidb.service.__main__ as service_main
import multidb_gateway.__main__ as gateway_main
from multidb import settings as core_settings
from multidb.backups import policy as backup_policy
from multidb.logs import LOG_VARIABLES
from multidb.plugins import get_roles
from multidb.roles import RoleSpec
from multidb.settings import (
    DB_FIELDS,
    GATEWAY_PORT,
    GLOBAL_VARIABLES,
    SettingsError,
    load_settings,
    variable_name,
)
from multidb_gateway import settings as gateway_settings
from multidb_gateway.settings import load_gateway_settings, service_url_variable
from tests.dockerfile import Stage, copied_from, lineage, stages, targets, uv_sync_packages

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
EXAMPLE_ENV = ROOT / "config.multi_db.example.env"

PROFILE = "multi-db"
GATEWAY = "gateway"
SECRETS = "/run/secrets"
PG_CONTAINER_PORT = 5432
# The spec's host ports, in role order (default, analytics, logging, archive).
DB_HOST_PORTS = [5432, 5433, 5434, 5435]
# Streaming replicas: compose service -> (the role whose primary it follows, its host port).
DB_REPLICAS = {"db-analytics-replica": ("analytics", 5436)}
PG_DATA = "/var/lib/postgresql/data"  # the postgres image's data volume
# The replica's entrypoint (it copies its primary on a first start) and what the primary
# runs on its first initialisation to let a replication login in.
STANDBY_ENTRYPOINT = ROOT / "docker" / "standby-entrypoint.sh"
ALLOW_REPLICATION = ROOT / "docker" / "allow-replication.sh"
REPLICATION_HBA = "host replication all all scram-sha-256"
REQUIRED_SECRETS = ("API_KEYS", "JWT_SECRET")
EVERY_INTERFACE = "0.0.0.0"  # noqa: S104 - what the containers listen on
# Backups: the role images' stage with pg_dump/pg_restore, and the folder they write to.
ROLE_RUNTIME = "role-runtime"
BACKUP_FOLDER = "/var/lib/multidb/backups"
APP_USER = "10001:10001"

# Names the code reads that no constant exposes; each is proven read by a test below.
GATEWAY_VARIABLES = {
    "MULTI_DB_SERVICE_TIMEOUT_MS",
    "MULTI_DB_HEALTH_REFRESH_MS",
    "MULTI_DB_AUDIT_CAPACITY",
    "MULTI_DB_STATS_SAMPLE_S",
}
PROCESS_VARIABLES = {"MULTI_DB_GATEWAY_HOST", "MULTI_DB_GATEWAY_PORT", "MULTI_DB_SERVICE_HOST"}
OTHER_VARIABLES = {"API_KEYS", "MULTI_DB_ROUTING", "MULTI_DB_ENV_FILE"}
# The secrets of access control: read by multidb.settings (and multidb.jwt_keys).
ACCESS_VARIABLES = {"MULTI_DB_API_KEYS_FILE", "JWT_SECRET_FILE", "JWT_SECRETS", "JWT_SECRETS_FILE"}
# The archive's mover (multidb_archive.mover.settings, read through multidb_plugin_settings).
ARCHIVE_VARIABLES = {
    "MULTI_DB_ARCHIVE_POLICY",
    "MULTI_DB_ARCHIVE_INTERVAL",
    "MULTI_DB_ARCHIVE_BATCH_SIZE",
    "MULTI_DB_ARCHIVE_MAX_SOURCE_LAG_MS",
    "MULTI_DB_ARCHIVE_MAX_PAUSE_S",
}
# Read by the development stack only (`make run`; multidb_devstack.stack).
DEVSTACK_VARIABLES = {"MULTI_DB_EMBEDDED_REPLICAS"}


def service_port_variable(spec: RoleSpec) -> str:
    return f"MULTI_DB_{spec.name.upper()}_SERVICE_PORT"


def known_variables(roles: Mapping[str, RoleSpec]) -> set[str]:
    """Every environment variable the code reads, for ``roles``."""
    names = {variable_name(spec, field) for spec in roles.values() for field in DB_FIELDS}
    names |= {variable for variable, _ in GLOBAL_VARIABLES}
    names |= {service_url_variable(spec) for spec in roles.values()}
    names |= {service_port_variable(spec) for spec in roles.values()}
    known = GATEWAY_VARIABLES | PROCESS_VARIABLES | OTHER_VARIABLES | ACCESS_VARIABLES
    known |= ARCHIVE_VARIABLES | DEVSTACK_VARIABLES
    return names | known | set(LOG_VARIABLES) | backup_policy.variables(roles)


def password_file_variable(spec: RoleSpec) -> str:
    """``DB_PASSWORD_FILE`` / ``MULTI_DB_<ROLE>_PASSWORD_FILE``: the password from a file."""
    return f"{variable_name(spec, 'password')}_FILE"


def database_variables(spec: RoleSpec) -> set[str]:
    """Every variable that says something about ``spec``'s database."""
    return {variable_name(spec, field) for field in DB_FIELDS} | {password_file_variable(spec)}


def secret_name(role: str) -> str:
    return f"db-{role}-password"


def image(target: str) -> str:
    return f"multidb-{target}:local"


ROLES = get_roles()
KNOWN = known_variables(ROLES)
# The password files are read by the settings of contract 2 (the TLS branch, which also
# documents them in the example env); the compose file already uses them.
COMPOSE_KNOWN = KNOWN | {password_file_variable(spec) for spec in ROLES.values()}


# ---- compose: reading and classifying ----------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def is_database(service: Mapping[str, Any]) -> bool:
    return str(service.get("image", "")).startswith("postgres:")


def is_replica(service: Mapping[str, Any]) -> bool:
    """A database that copies and follows another (its entrypoint's PRIMARY_HOST)."""
    return is_database(service) and "PRIMARY_HOST" in service.get("environment", {})


def primaries(services: Mapping[str, dict[str, Any]]) -> list[str]:
    return [n for n, s in services.items() if is_database(s) and not is_replica(s)]


def migration_role(service: Mapping[str, Any]) -> str | None:
    command = service.get("command") or []
    return command[2] if command[:2] == ["multidb", "migrate"] and len(command) == 3 else None


def service_role(service: Mapping[str, Any]) -> str | None:
    command = service.get("command") or []
    return command[3] if command[:3] == ["python", "-m", "multidb.service"] else None


def is_gateway(service: Mapping[str, Any]) -> bool:
    command: list[str] = service.get("command") or [""]
    return command[0] == "multidb-gateway"


def app_services(services: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: service for name, service in services.items() if not is_database(service)}


def roles_served(services: Mapping[str, dict[str, Any]]) -> dict[str, str]:
    """Role -> name of the compose service that runs ``python -m multidb.service <role>``."""
    served = {}
    for name, service in services.items():
        role = service_role(service)
        if role is not None:
            assert role not in served, f"role {role!r} is served twice"
            served[role] = name
    return served


def published(service: Mapping[str, Any]) -> list[tuple[int, int]]:
    """(host port, container port) of each short-syntax ``ports`` entry."""
    pairs = []
    for entry in service.get("ports", []):
        assert isinstance(entry, str), f"use the short port syntax: {entry!r}"
        host, container = entry.removesuffix("/tcp").split(":")[-2:]
        pairs.append((int(host), int(container)))
    return pairs


def depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    """Dependency -> condition; the long syntax is required (a condition for each)."""
    found = service.get("depends_on", {})
    assert isinstance(found, dict), "depends_on must name a condition for each dependency"
    return {name: spec["condition"] for name, spec in found.items()}


def mounts(service: Mapping[str, Any]) -> dict[str, str]:
    """Container path -> what is mounted there (a named volume, or a ``./`` path with its
    options) of each short-syntax ``volumes`` entry."""
    found = {}
    for entry in service.get("volumes", []):
        assert isinstance(entry, str), f"use the short volume syntax: {entry!r}"
        source, target, *options = entry.split(":")
        found[target] = ":".join([source, *options])
    return found


def data_volume(service: Mapping[str, Any]) -> str:
    """The named volume holding a database's data; anything else it mounts is one of this
    repository's scripts, read-only."""
    found = mounts(service)
    volume = found.pop(PG_DATA)
    assert not volume.startswith("."), f"{volume}: a named volume for the data"
    for target, source in found.items():
        assert source.startswith("./docker/"), f"{target}: {source} is not one of docker/"
        assert source.endswith(":ro"), f"{target}: mount {source} read-only"
    return volume


def argv(service: Mapping[str, Any]) -> list[str]:
    """Everything a container runs with on its command lines (``ps`` shows them)."""
    found = [*(service.get("entrypoint") or []), *(service.get("command") or [])]
    return found + list(service.get("healthcheck", {}).get("test", []))


def script_command(path: Path, program: str) -> list[str]:
    """The words of the command line of ``path`` that runs ``program`` (continuation lines
    joined, comments dropped), unexpanded."""
    text = path.read_text().replace("\\\n", " ")
    commands = [
        words
        for line in text.splitlines()
        if program in (words := shlex.split(line, comments=True))
    ]
    assert len(commands) == 1, f"{path.name}: one {program} command, not {commands}"
    return commands[0]


def readyz_port(service: Mapping[str, Any]) -> int:
    test = " ".join(service["healthcheck"]["test"])
    match = re.search(r"http://127\.0\.0\.1:(\d+)/readyz", test)
    assert match, f"healthcheck does not probe /readyz: {test}"
    return int(match.group(1))


# ---- compose: the tests ------------------------------------------------------------------


def test_every_kind_of_service_is_recognised(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        kinds = [
            is_database(service),
            migration_role(service) is not None,
            service_role(service) is not None,
            is_gateway(service),
        ]
        assert sum(kinds) == 1, f"{name}: not exactly one of database/migration/service/gateway"


def test_every_service_is_in_the_multi_db_profile(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        assert service.get("profiles") == [PROFILE], name


def test_every_service_has_a_healthcheck_or_is_a_one_shot_migration(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        if migration_role(service) is not None:
            assert service.get("restart") == "no", f"{name}: a migration must not restart"
            assert "healthcheck" not in service, name
            continue
        check = service.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert check["test"][0] == "CMD", f"{name}: exec-form healthcheck expected"
        for key in ("interval", "timeout", "retries", "start_period"):
            assert key in check, f"{name}: healthcheck without {key}"
        assert service.get("restart") == "unless-stopped", name


def test_compose_roles_are_the_installed_roles(services: dict[str, dict[str, Any]]) -> None:
    assert set(roles_served(services)) == set(ROLES)
    migrated = {migration_role(s) for s in services.values()} - {None}
    assert migrated == set(ROLES)
    for role, name in roles_served(services).items():
        assert name == role, "a role's service is named after the role (the gateway's URLs)"
        assert services[name]["command"] == [
            "python",
            "-m",
            "multidb.service",
            role,
            "--host",
            EVERY_INTERFACE,
        ]
    for role in ROLES:
        assert services[f"migrate-{role}"]["command"] == ["multidb", "migrate", role]
        assert is_database(services[f"db-{role}"])


def test_databases_are_postgres_16_on_the_spec_ports(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    assert primaries(services) == [f"db-{role}" for role in ROLES]
    replicas = [name for name, service in services.items() if is_replica(service)]
    assert replicas == list(DB_REPLICAS)
    for (role, spec), host_port in zip(ROLES.items(), DB_HOST_PORTS, strict=True):
        db = services[f"db-{role}"]
        assert db["image"] == "postgres:16"
        assert published(db) == [(host_port, PG_CONTAINER_PORT)]
        assert db["environment"]["POSTGRES_DB"] == spec.database
    for name, (_, host_port) in DB_REPLICAS.items():  # after the spec's ports, on loopback
        assert services[name]["image"] == "postgres:16"
        assert services[name]["ports"] == [f"127.0.0.1:{host_port}:{PG_CONTAINER_PORT}"]
    databases = [name for name, service in services.items() if is_database(service)]
    volumes = {name: data_volume(services[name]) for name in databases}
    assert len(set(volumes.values())) == len(databases), f"one data volume each: {volumes}"
    assert set(volumes.values()) <= set(compose["volumes"]), "named volumes"


def test_each_database_gets_its_own_password_from_a_secret(
    services: dict[str, dict[str, Any]],
) -> None:
    for role in ROLES:
        db = services[f"db-{role}"]
        assert db.get("secrets") == [secret_name(role)], f"db-{role}: its own password only"
        env = db["environment"]
        assert env["POSTGRES_PASSWORD_FILE"] == f"{SECRETS}/{secret_name(role)}"
        assert "POSTGRES_PASSWORD" not in env, "a password never sits in the environment"
    for name, (role, _) in DB_REPLICAS.items():  # the password its primary's login has
        replica = services[name]
        assert replica.get("secrets") == [secret_name(role)], f"{name}: its primary's only"
        env = replica["environment"]
        assert env["PRIMARY_PASSWORD_FILE"] == f"{SECRETS}/{secret_name(role)}", name
        assert not {"POSTGRES_PASSWORD", "PGPASSWORD"} & set(env), name


def test_database_healthchecks_probe_tcp(services: dict[str, dict[str, Any]]) -> None:
    for role, spec in ROLES.items():
        test = services[f"db-{role}"]["healthcheck"]["test"]
        assert test[:2] == ["CMD", "pg_isready"]
        args = shlex.join(test[2:])
        # Over the socket, pg_isready is green during the image's init phase (DESIGN.md).
        assert "-h 127.0.0.1" in args
        assert f"-d {spec.database}" in args
        assert "-U postgres" in args
    for name, (role, _) in DB_REPLICAS.items():
        # A login over TCP that fails unless the server is a standby (promoted, or never
        # made one: not healthy); -w: never wait for a password prompt.
        test = services[name]["healthcheck"]["test"]
        assert test[:2] == ["CMD", "psql"], name
        args = shlex.join(test[2:])
        assert "-h 127.0.0.1" in args, name
        assert f"-d {ROLES[role].database}" in args, name
        assert "-U postgres" in args, name
        assert "-w" in test, name
        assert test[-1] == "SELECT 1 / pg_is_in_recovery()::int", name


def test_role_services_publish_their_roles_ports(services: dict[str, dict[str, Any]]) -> None:
    for role, name in roles_served(services).items():
        port = ROLES[role].port
        assert published(services[name]) == [(port, port)], name
        assert readyz_port(services[name]) == port, name
    assert sorted(spec.port for spec in ROLES.values()) == [8001, 8002, 8003, 8004]


def test_gateway_publishes_8000_and_probes_readyz(services: dict[str, dict[str, Any]]) -> None:
    gateways = [name for name, service in services.items() if is_gateway(service)]
    assert gateways == ["gateway"]
    gateway = services["gateway"]
    assert gateway["command"] == ["multidb-gateway", "--host", EVERY_INTERFACE]
    assert published(gateway) == [(GATEWAY_PORT, GATEWAY_PORT)]
    assert readyz_port(gateway) == GATEWAY_PORT


def test_dependencies_and_their_conditions(services: dict[str, dict[str, Any]]) -> None:
    for role in ROLES:
        assert depends_on(services[f"migrate-{role}"]) == {f"db-{role}": "service_healthy"}
        assert depends_on(services[role]) == {
            f"db-{role}": "service_healthy",
            f"migrate-{role}": "service_completed_successfully",
        }
    assert depends_on(services["gateway"]) == dict.fromkeys(ROLES, "service_healthy")
    # A replica copies its primary once that answers; nothing waits for a replica (above:
    # a role starts, and serves reads from its primary, without it).
    for name, (role, _) in DB_REPLICAS.items():
        assert depends_on(services[name]) == {f"db-{role}": "service_healthy"}, name
    for name, service in services.items():
        if is_database(service) and not is_replica(service):
            assert "depends_on" not in service, name
        for dependency in depends_on(service):
            assert dependency in services, f"{name} depends on unknown {dependency}"


def test_each_image_is_its_targets_and_built_once(services: dict[str, dict[str, Any]]) -> None:
    targets = {role: role for role in ROLES} | {GATEWAY: GATEWAY}
    for role in ROLES:  # a role's migration step and its service run the role's image
        assert services[f"migrate-{role}"]["image"] == image(role)
        assert services[role]["image"] == image(role)
    assert services[GATEWAY]["image"] == image(GATEWAY)
    builds = {
        service["image"]: service["build"] for service in services.values() if "build" in service
    }
    built = [service["image"] for service in services.values() if "build" in service]
    assert len(built) == len(set(built)), f"an image is built by one service only: {built}"
    assert builds == {image(t): {"context": ".", "target": t} for t in targets.values()}
    for name, service in app_services(services).items():
        assert service["image"] in builds, f"{name} runs an image no service builds"


def test_app_containers_use_only_variables_the_code_reads(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in app_services(services).items():
        environment = service.get("environment")
        assert isinstance(environment, dict), f"{name}: environment as a mapping"
        unknown = set(environment) - COMPOSE_KNOWN
        assert not unknown, f"{name} sets variables no code reads: {sorted(unknown)}"


def test_each_role_container_knows_only_its_own_database(
    services: dict[str, dict[str, Any]],
) -> None:
    for role, spec in ROLES.items():
        for name in (f"migrate-{role}", role):
            env = services[name]["environment"]
            assert env[variable_name(spec, "host")] == f"db-{role}", name
            assert env[variable_name(spec, "port")] == str(PG_CONTAINER_PORT), name
            assert env[variable_name(spec, "username")] == "postgres", name
            assert env[variable_name(spec, "database")] == spec.database, name
            assert env[password_file_variable(spec)] == f"{SECRETS}/{secret_name(role)}", name
            assert variable_name(spec, "password") not in env, f"{name}: password from a file"
            for other, other_spec in ROLES.items():
                if other != role:
                    leaked = database_variables(other_spec) & set(env)
                    assert not leaked, f"{name} is told about {other}'s database: {leaked}"
        service_env = services[role]["environment"]
        for secret in REQUIRED_SECRETS:
            assert service_env[secret].startswith(f"${{{secret}:?"), f"{role}: {secret} required"
        # The migration step checks no credential: it gets none.
        assert not set(REQUIRED_SECRETS) & set(services[f"migrate-{role}"]["environment"])


def test_each_container_gets_only_the_passwords_it_needs(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    assert compose["secrets"] == {
        secret_name(role): {"file": f"./secrets/{secret_name(role)}"} for role in ROLES
    }
    for role in ROLES:
        for name in (f"db-{role}", f"migrate-{role}", role):
            assert services[name]["secrets"] == [secret_name(role)], name
    for name, (role, _) in DB_REPLICAS.items():
        assert services[name]["secrets"] == [secret_name(role)], name
    gateway = services[GATEWAY]
    assert "secrets" not in gateway, "the gateway never connects to a database"
    every_database = set().union(*(database_variables(spec) for spec in ROLES.values()))
    assert not every_database & set(gateway["environment"])
    for name, service in services.items():
        for variable in service.get("environment", {}):
            assert not variable.endswith("_PASSWORD"), f"{name}: {variable} in the environment"
            assert variable != "PGPASSWORD", name
        command_lines = " ".join(argv(service))
        assert not re.search(r"password\s*=|PGPASSWORD", command_lines, re.IGNORECASE), name


def _substituted(environment: Mapping[str, Any], secret_files: Path) -> dict[str, str]:
    """What the container sees: compose's defaults for unset variables, the required
    credentials set, and the secrets at ``secret_files`` instead of /run/secrets."""
    env = {k: str(v) for k, v in environment.items()}
    env |= {k: f"a-{k.lower()}" for k in REQUIRED_SECRETS if k in env}
    env = {k: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", v) for k, v in env.items()}
    return {k: v.replace(SECRETS, str(secret_files)) for k, v in env.items()}


def test_the_compose_environments_are_valid_settings(
    services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    for role in ROLES:
        (tmp_path / secret_name(role)).write_text(f"{role}-password\n")
    logging_url = f"http://logging:{ROLES['logging'].port}"
    for role in ROLES:
        for name in (f"migrate-{role}", role):
            settings = load_settings(_substituted(services[name]["environment"], tmp_path), ROLES)
            assert list(settings.databases) == [role], name
        assert settings.backups.directory == BACKUP_FOLDER, role
        assert settings.backups.logging_url == logging_url, f"{role}: drill results reach logging"
    env = _substituted(services[GATEWAY]["environment"], tmp_path)
    gateway = load_gateway_settings(env, ROLES)
    assert gateway.core.databases == {}
    assert gateway.services == {role: f"http://{role}:{spec.port}" for role, spec in ROLES.items()}


def test_gateway_finds_each_service_by_its_compose_name(
    services: dict[str, dict[str, Any]],
) -> None:
    env = services["gateway"]["environment"]
    for role, spec in ROLES.items():
        assert env[service_url_variable(spec)] == f"http://{role}:{spec.port}"
    logging_url = service_url_variable(ROLES["logging"])
    for name, service in app_services(services).items():
        if is_gateway(service):
            continue
        urls = {k: v for k, v in service["environment"].items() if k.endswith("_SERVICE_URL")}
        if migration_role(service) is not None:
            assert not urls, name
        else:  # a role service finds the logging service (its drill results) as the gateway does
            assert urls == {logging_url: env[logging_url]}, name


def test_role_services_keep_their_backups_in_a_volume_of_their_own(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    volumes = {}
    for role in ROLES:
        service = services[role]
        [mount] = service.get("volumes", [])
        volume, _, folder = mount.partition(":")
        assert folder == BACKUP_FOLDER, f"{role}: the folder the image makes for the app user"
        assert service["environment"]["MULTI_DB_BACKUP_DIR"] == BACKUP_FOLDER, role
        assert volume in compose["volumes"], f"{role}: {volume} is a named volume"
        volumes[role] = volume
    assert len(set(volumes.values())) == len(ROLES), "no role sees another role's dumps"
    for name, service in app_services(services).items():
        if migration_role(service) is not None or is_gateway(service):
            assert "volumes" not in service, f"{name} takes no backups"
            assert "MULTI_DB_BACKUP_DIR" not in service["environment"], name


def test_replicas_copy_and_follow_their_roles_primary(
    services: dict[str, dict[str, Any]],
) -> None:
    entrypoint = f"/usr/local/bin/{STANDBY_ENTRYPOINT.name}"
    for name, (role, _) in DB_REPLICAS.items():
        replica = services[name]
        env = replica["environment"]
        role_env = services[role]["environment"]
        spec = ROLES[role]
        # The primary as the role's own service reaches it, with the same login.
        assert env["PRIMARY_HOST"] == role_env[variable_name(spec, "host")] == f"db-{role}"
        assert env["PRIMARY_PORT"] == str(PG_CONTAINER_PORT), name
        assert env["PRIMARY_USER"] == role_env[variable_name(spec, "username")], name
        # bash runs the script: it needs no executable bit on the host's checkout.
        assert replica["entrypoint"] == ["bash", entrypoint], name
        assert mounts(replica)[entrypoint] == f"./docker/{STANDBY_ENTRYPOINT.name}:ro", name
        # The image's entrypoint runs this once the copy is there: a hot standby.
        assert replica["command"] == ["postgres", "-c", "hot_standby=on"], name
        # The data in a folder of the volume (a copy is renamed into place when complete);
        # the passfile outside it (made anew from the secret at every start).
        assert env["PGDATA"].startswith(f"{PG_DATA}/"), name
        assert not env["PGPASSFILE"].startswith(f"{PG_DATA}/"), name
        assert env["STANDBY_NAME"] == name, "the name pg_stat_replication shows"


def test_the_standby_entrypoint_copies_with_pg_basebackup_and_a_passfile() -> None:
    words = script_command(STANDBY_ENTRYPOINT, "pg_basebackup")
    # As the server's user (PostgreSQL tools refuse root, the image's entrypoint is root).
    assert words[: words.index("pg_basebackup")] == ["gosu", "postgres"]
    options = dict(word.partition("=")[::2] for word in words if word.startswith("--"))
    assert "--write-recovery-conf" in options, "-R: primary_conninfo and standby.signal"
    assert options["--wal-method"] == "stream", "-X stream: the WAL of the copy comes with it"
    assert options["--pgdata"] == "$PGDATA.partial", "copied beside, renamed when complete"
    assert "--no-password" in options, "a missing passfile fails, never waits for a prompt"
    conninfo = dict(pair.split("=", 1) for pair in options["--dbname"].split())
    assert conninfo["host"] == "$PRIMARY_HOST"
    assert conninfo["port"] == "$PRIMARY_PORT"
    assert conninfo["user"] == "$PRIMARY_USER"
    # primary_conninfo keeps the passfile's name, never a password.
    assert conninfo["passfile"] == "$PGPASSFILE"
    assert "password" not in conninfo
    text = STANDBY_ENTRYPOINT.read_text()
    assert 'password=$(<"$PRIMARY_PASSWORD_FILE")' in text, "the password from the secret"
    assert "umask 077" in text.split('>"$PGPASSFILE"')[0], "the passfile is made 0600"
    assert 'chmod 0600 "$PGPASSFILE"' in text
    assert "PGPASSWORD" not in text, "never in the environment"
    assert 'mv "$PGDATA.partial" "$PGDATA"' in text
    assert text.rstrip().endswith('exec docker-entrypoint.sh "$@"'), "the image's entrypoint"


def test_a_replicas_primary_lets_replication_logins_in(
    services: dict[str, dict[str, Any]],
) -> None:
    init_script = f"/docker-entrypoint-initdb.d/{ALLOW_REPLICATION.name}"
    for name, (role, _) in DB_REPLICAS.items():
        primary = services[f"db-{role}"]
        assert mounts(primary)[init_script] == f"./docker/{ALLOW_REPLICATION.name}:ro", name
        # wal_level=replica and max_wal_senders=10 are the defaults: nothing turns them off.
        command = " ".join(primary.get("command", []))
        assert "wal_level" not in command, name
        assert "max_wal_senders" not in command, name
    text = ALLOW_REPLICATION.read_text()
    assert f"'{REPLICATION_HBA}' \"$PGDATA/pg_hba.conf\"" in text, "added once"
    assert f"printf '%s\\n' '{REPLICATION_HBA}' >>\"$PGDATA/pg_hba.conf\"" in text
    # The image sources an init script it cannot execute: nothing may end its shell.
    assert not re.search(r"^\s*(exit|set -e)", text, re.MULTILINE)


def test_the_role_service_reads_from_its_replicas(services: dict[str, dict[str, Any]]) -> None:
    for name, (role, _) in DB_REPLICAS.items():
        spec = ROLES[role]
        replicas = variable_name(spec, "replicas")
        assert services[role]["environment"][replicas] == f"{name}:{PG_CONTAINER_PORT}"
        # Migrations write: the primary only.
        assert replicas not in services[f"migrate-{role}"]["environment"]
    for name, service in services.items():
        assert not set(depends_on(service)) & set(DB_REPLICAS), f"{name} waits for a replica"


def test_the_replication_scripts_are_valid_bash() -> None:
    for script in (STANDBY_ENTRYPOINT, ALLOW_REPLICATION):
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, check=False)
        assert result.returncode == 0, result.stderr


def _compose_client() -> list[str] | None:
    """``docker compose`` (the plugin) or ``docker-compose``; None when neither is there."""
    candidates = [["docker", "compose"], ["docker-compose"]]
    for command in candidates:
        if shutil.which(command[0]) is None:
            continue
        probe = subprocess.run([*command, "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return command
    return None


@pytest.fixture
def compose_client(tmp_path: Path) -> tuple[list[str], Path]:
    client = _compose_client()
    if client is None:
        pytest.skip("no compose client (docker compose plugin or docker-compose) installed")
    empty = tmp_path / "empty.env"  # not the developer's .env
    empty.write_text("")
    return client, empty


def test_compose_config_validates(
    compose_client: tuple[list[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, empty = compose_client
    command = [*client, "-f", str(COMPOSE_FILE), "--env-file", str(empty), "--profile", PROFILE]
    monkeypatch.setenv("API_KEYS", "a-key")
    monkeypatch.setenv("JWT_SECRET", "a-secret")
    result = subprocess.run(
        [*command, "config", "-q"], capture_output=True, text=True, check=False, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    monkeypatch.delenv("API_KEYS")
    refused = subprocess.run(
        [*command, "config", "-q"], capture_output=True, text=True, check=False, cwd=ROOT
    )
    assert refused.returncode != 0
    assert "API_KEYS" in refused.stderr


# ---- the variables themselves --------------------------------------------------------------


def test_hand_typed_gateway_variables_are_read_by_the_gateway_settings() -> None:
    for variable in GATEWAY_VARIABLES:
        with pytest.raises(SettingsError, match=f"^{variable}: "):
            load_gateway_settings({variable: "many"}, ROLES)


@pytest.fixture
def fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """The process environment of a test, with the cached settings read anew around it."""
    monkeypatch.setenv("MULTI_DB_ENV_FILE", str(ROOT / "no-such.env"))
    for name in KNOWN - {"MULTI_DB_ENV_FILE"}:
        monkeypatch.delenv(name, raising=False)
    core_settings.get_settings.cache_clear()
    gateway_settings.get_gateway_settings.cache_clear()
    yield monkeypatch
    core_settings.get_settings.cache_clear()
    gateway_settings.get_gateway_settings.cache_clear()


def test_hand_typed_process_variables_are_read_by_the_entry_points(
    fresh_settings: pytest.MonkeyPatch,
) -> None:
    """The host and port variables of ``python -m multidb.service`` and ``multidb-gateway``."""
    runs: list[dict[str, Any]] = []

    def run(_app: object, **kwargs: Any) -> None:
        runs.append(kwargs)

    fresh_settings.setattr(uvicorn, "run", run)  # both entry points call uvicorn.run
    # ... and configure logging first: the test run's handlers are given back after.
    root = logging.getLogger()
    fresh_settings.setattr(root, "handlers", list(root.handlers))
    fresh_settings.setattr(root, "level", root.level)
    spec = ROLES["analytics"]
    fresh_settings.setenv(variable_name(spec, "host"), "localhost")
    fresh_settings.setenv("MULTI_DB_SERVICE_HOST", EVERY_INTERFACE)
    fresh_settings.setenv(service_port_variable(spec), "18002")
    fresh_settings.setenv("MULTI_DB_GATEWAY_HOST", EVERY_INTERFACE)
    fresh_settings.setenv("MULTI_DB_GATEWAY_PORT", "18000")
    fresh_settings.setenv("MULTI_DB_SERVICE_SECRET", "s" * 32)  # the gateway needs a credential
    assert service_main.main(["analytics"]) == 0
    assert gateway_main.main([]) == 0
    assert [(r["host"], r["port"]) for r in runs] == [
        (EVERY_INTERFACE, 18002),
        (EVERY_INTERFACE, 18000),
    ]


def test_devstack_variables_are_read_by_the_development_stack() -> None:
    sources = " ".join(p.read_text() for p in (ROOT / "devstack" / "src").rglob("*.py"))
    for variable in DEVSTACK_VARIABLES:
        assert f'"{variable}"' in sources, f"{variable}: no string of devstack/src names it"


def test_archive_variables_are_read_by_the_archive_settings() -> None:
    """Each ``MULTI_DB_ARCHIVE_*`` variable changes the settings every process reads."""
    values = {
        "MULTI_DB_ARCHIVE_POLICY": "Media: off",
        "MULTI_DB_ARCHIVE_INTERVAL": "off",
        "MULTI_DB_ARCHIVE_BATCH_SIZE": "7",
        "MULTI_DB_ARCHIVE_MAX_SOURCE_LAG_MS": "9",
        "MULTI_DB_ARCHIVE_MAX_PAUSE_S": "11",
    }
    assert set(values) == ARCHIVE_VARIABLES
    baseline = load_settings({}, ROLES).plugins["archive"]
    for name, value in values.items():
        assert load_settings({name: value}, ROLES).plugins["archive"] != baseline, name


def _string_constants(path: Path) -> Iterator[ast.AST]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant | ast.JoinedStr):
            yield node


def test_the_code_reads_no_variable_missing_from_the_known_set() -> None:
    """Scan the packages' string literals for variable names, per-role f-strings included."""
    literal = re.compile(
        r"\b(?:MULTI_DB_[A-Z][A-Z0-9_]*|DB_[A-Z][A-Z0-9_]*|API_KEYS|JWT_SECRET[A-Z_]*)\b"
    )
    role_suffixes = {f"_{field.upper()}" for field in DB_FIELDS}
    role_suffixes |= {"_SERVICE_URL", "_SERVICE_PORT", "_"}  # "_": RoleSpec.prefix itself
    sources = [
        *(ROOT / "shared" / "src").rglob("*.py"),
        *(ROOT / "gateway" / "src").rglob("*.py"),
        *(ROOT / "services").glob("*/src/**/*.py"),
    ]
    assert sources
    unknown: set[str] = set()
    for path in sources:
        for node in _string_constants(path):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                unknown |= set(literal.findall(node.value)) - KNOWN
            elif isinstance(node, ast.JoinedStr):
                parts = node.values
                for before, _, after in zip(parts, parts[1:], parts[2:], strict=False):
                    if (
                        isinstance(before, ast.Constant)
                        and str(before.value).endswith("MULTI_DB_")
                        and isinstance(after, ast.Constant)
                    ):
                        suffix = re.match(r"_[A-Z0-9_]*", str(after.value))
                        if suffix is None or suffix.group() not in role_suffixes:
                            unknown.add(f"MULTI_DB_<ROLE>{after.value!r} ({path.name})")
    assert not unknown, f"read by the code, unknown here (and in the example env): {unknown}"


# ---- config.multi_db.example.env ----------------------------------------------------------

ASSIGNMENT = re.compile(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")


def example_lines() -> list[tuple[bool, str, str]]:
    """(active, name, value) of every ``NAME=value`` or ``# NAME=value`` line."""
    found = []
    for line in EXAMPLE_ENV.read_text().splitlines():
        match = ASSIGNMENT.match(line)
        if match:
            found.append((match.group(1) is None, match.group(2), match.group(3)))
    return found


def test_example_env_names_exactly_the_known_variables() -> None:
    names = [name for _, name, _ in example_lines()]
    assert len(names) == len(set(names)), "a variable appears twice"
    assert not set(names) - KNOWN, f"unknown to the code: {sorted(set(names) - KNOWN)}"
    assert not KNOWN - set(names), f"not documented: {sorted(KNOWN - set(names))}"


def test_example_env_documents_each_variable_in_a_comment_above_it() -> None:
    lines = EXAMPLE_ENV.read_text().splitlines()
    for index, line in enumerate(lines):
        if ASSIGNMENT.match(line):
            above = lines[index - 1]
            assert above.startswith("# "), f"{line!r} has no comment line above it"
            assert not ASSIGNMENT.match(above), f"{line!r} has no comment line of its own"


def test_example_env_is_the_spec_example() -> None:
    values = {k: v for k, v in dotenv_values(EXAMPLE_ENV).items() if v is not None}
    settings = load_settings(values, ROLES)
    assert list(settings.databases) == list(ROLES)
    for (role, spec), port in zip(ROLES.items(), DB_HOST_PORTS, strict=True):
        database = settings.databases[role]
        assert (database.host, database.port) == ("localhost", port)
        assert (database.username, database.password) == ("postgres", "postgres")
        assert database.database == spec.database
    active = {name for is_active, name, _ in example_lines() if is_active}
    assert not active & set(REQUIRED_SECRETS), "secrets are placeholders, never real values"


def test_example_env_shows_the_real_defaults() -> None:
    """Uncommenting every optional line (except the placeholders) changes nothing."""
    lines = example_lines()
    active = {name: value for is_active, name, value in lines if is_active}
    skipped = {*REQUIRED_SECRETS, "MULTI_DB_ENV_FILE"}
    everything = {name: value for _, name, value in lines if name not in skipped}
    assert load_settings(everything, ROLES) == load_settings(active, ROLES)
    credential = {"JWT_SECRET": "a-secret"}  # the gateway refuses to start without one
    assert load_gateway_settings(everything | credential, ROLES) == load_gateway_settings(
        active | credential, ROLES
    )
    for spec in ROLES.values():
        assert everything[service_port_variable(spec)] == str(spec.port)
    assert everything["MULTI_DB_GATEWAY_PORT"] == str(GATEWAY_PORT)
    assert everything["MULTI_DB_GATEWAY_HOST"] == everything["MULTI_DB_SERVICE_HOST"] == "127.0.0.1"


# ---- Dockerfile ---------------------------------------------------------------------------


def python_minor() -> str:
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    match = re.fullmatch(r">=\s*(3\.\d+)(\.\d+)?", requires)
    assert match, requires
    return match.group(1)


def workspace_members() -> list[Path]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    members: list[Path] = []
    for pattern in config["tool"]["uv"]["workspace"]["members"]:
        members += sorted(p for p in ROOT.glob(pattern) if (p / "pyproject.toml").is_file())
    return members


def member_project(member: Path) -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads((member / "pyproject.toml").read_text())["project"]
    return project


def role_members() -> dict[str, Path]:
    """Role -> the workspace member whose ``multidb.roles`` entry point provides it."""
    found = {}
    for member in workspace_members():
        entry_points = member_project(member).get("entry-points", {}).get("multidb.roles", {})
        for role in entry_points:
            found[role] = member
    return found


def package(member: Path) -> str:
    name: str = member_project(member)["name"]
    return name


def relative(member: Path) -> str:
    return member.relative_to(ROOT).as_posix()


STAGES = stages()
SHARED = ROOT / "shared"
GATEWAY_MEMBER = ROOT / "gateway"
SERVICE_COMMAND = '["python", "-m", "multidb.service", "{role}", "--host", "0.0.0.0"]'


def syncs(stage: Stage) -> tuple[str, str]:
    """The build stage's two ``uv sync`` runs: third-party dependencies, then the rest."""
    runs = [args for args in stage.runs() if "uv sync" in args]
    assert len(runs) == 2, f"{stage.name}: two uv sync steps, not {runs}"
    return runs[0], runs[1]


def sources_between_syncs(stage: Stage) -> list[str]:
    first = next(i for i, (kind, args) in enumerate(stage.instructions) if "uv sync" in args)
    last = max(i for i, (kind, args) in enumerate(stage.instructions) if "uv sync" in args)
    copies = [args for kind, args in stage.instructions[first:last] if kind == "COPY"]
    return sorted(args.split()[0] for args in copies)


def test_the_roles_are_the_workspaces_role_packages() -> None:
    assert set(role_members()) == set(ROLES)


def test_every_stage_is_on_the_required_python_or_another_stage() -> None:
    image_name = f"python:{python_minor()}-slim"
    for stage in STAGES.values():
        assert stage.base in STAGES or stage.base == image_name, (stage.name, stage.base)


def test_one_target_per_role_and_one_for_the_gateway() -> None:
    images = [*ROLES, GATEWAY]
    expected = {"builder", "runtime", ROLE_RUNTIME, *images, *(f"build-{t}" for t in images)}
    assert set(STAGES) == expected
    assert targets(STAGES) == images
    assert list(STAGES)[-1] == GATEWAY, "a plain `docker build .` builds the gateway"
    assert STAGES[ROLE_RUNTIME].base == "runtime"
    for target in images:
        # The roles' runtime has their backup tools; the gateway never runs them.
        assert STAGES[target].base == ("runtime" if target == GATEWAY else ROLE_RUNTIME)
        assert STAGES[f"build-{target}"].base == "builder"
        # The target holds the virtualenv its build stage made, and nothing else.
        assert STAGES[target].copies() == [f"--from=build-{target} /app/.venv /app/.venv"]


def test_the_builder_has_uv_pinned_and_every_members_pyproject() -> None:
    builder = STAGES["builder"]
    copies = builder.copies()
    uv_from = [args for args in copies if "astral-sh/uv" in args]
    assert len(uv_from) == 1
    tag = re.search(r"ghcr\.io/astral-sh/uv:(\S+)", uv_from[0])
    assert tag, "uv comes from its official image"
    assert re.fullmatch(r"\d+\.\d+\.\d+", tag.group(1)), "pin uv's image tag"
    copied = " ".join(copies)
    assert "uv.lock" in copied
    # uv --locked checks the lock against every member, installed or not.
    for member in workspace_members():
        assert f"{relative(member)}/pyproject.toml" in copied, relative(member)
    assert not [args for args in copies if "/src" in args], "no sources in the shared builder"
    environment = " ".join(args for kind, args in builder.instructions if kind == "ENV")
    assert "UV_PYTHON_DOWNLOADS=0" in environment
    assert "UV_PROJECT_ENVIRONMENT=/app/.venv" in environment


def test_each_role_image_installs_its_package_alone() -> None:
    for role, member in role_members().items():
        build = STAGES[f"build-{role}"]
        dependencies, everything = syncs(build)
        for command in (dependencies, everything):
            assert "--locked" in command
            assert "--no-dev" in command
            assert uv_sync_packages(command) == [package(member)], command
        assert "--no-install-workspace" in dependencies
        assert "--no-install-workspace" not in everything
        assert "--no-editable" in everything, "installed into the venv: no sources needed"
        assert sources_between_syncs(build) == sorted(
            [f"{relative(SHARED)}/src", f"{relative(member)}/src"]
        ), f"{role}: the shared library and the role's own sources only"


def test_the_gateway_image_installs_the_gateway_and_the_role_packages_it_discovers() -> None:
    build = STAGES[f"build-{GATEWAY}"]
    roles = sorted(package(member) for member in role_members().values())
    for command in syncs(build):
        assert "--locked" in command
        assert "--no-dev" in command
        packages = uv_sync_packages(command)
        assert packages[0] == package(GATEWAY_MEMBER)
        assert sorted(packages[1:]) == roles
    members = [SHARED, GATEWAY_MEMBER, *role_members().values()]
    assert sources_between_syncs(build) == sorted(f"{relative(m)}/src" for m in members)


def test_no_image_holds_the_development_stack() -> None:
    for target in [*ROLES, GATEWAY]:
        for stage in lineage(f"build-{target}", STAGES):
            for kind, args in stage.instructions:
                if kind == "RUN":
                    assert "devstack" not in args, (stage.name, args)
                    assert "--all-packages" not in args, (stage.name, args)
                if kind == "COPY":
                    assert "devstack/src" not in args, (stage.name, args)


def test_each_target_runs_its_process() -> None:
    for role, spec in ROLES.items():
        target = STAGES[role]
        assert target.first("CMD") == SERVICE_COMMAND.format(role=role)
        assert target.first("EXPOSE") == str(spec.port)
    assert STAGES[GATEWAY].first("CMD") == '["multidb-gateway", "--host", "0.0.0.0"]'
    assert STAGES[GATEWAY].first("EXPOSE") == str(GATEWAY_PORT)


def test_the_runtime_stage_runs_unprivileged() -> None:
    runtime = STAGES["runtime"]
    kinds = dict(runtime.instructions)
    assert "/app/.venv/bin:$PATH" in kinds["ENV"]
    assert "PYTHONUNBUFFERED=1" in kinds["ENV"]
    user = kinds["USER"].split(":")[0]
    assert user == "10001"
    assert "--uid 10001" in " ".join(runtime.runs())
    # The role runtime installs its packages as root, then switches back to the app user.
    role_runtime = STAGES[ROLE_RUNTIME].instructions
    users = [i for i, (kind, _) in enumerate(role_runtime) if kind == "USER"]
    assert [role_runtime[i][1] for i in users] == ["root", APP_USER]
    assert all(users[0] < i < users[1] for i, (k, _) in enumerate(role_runtime) if k == "RUN")
    assert users[1] == len(role_runtime) - 1, "nothing runs after the switch back"
    for target in [*ROLES, GATEWAY]:  # nothing on top switches back to root
        assert all(kind != "USER" for kind, _ in STAGES[target].instructions), target
        chain = lineage(target, STAGES)
        switches = [args for stage in chain for kind, args in stage.instructions if kind == "USER"]
        assert switches[-1] == APP_USER, target
        assert not STAGES[target].runs(), f"{target}: copies the venv, runs nothing as root"
    assert copied_from(STAGES["builder"]) == ["ghcr.io/astral-sh/uv:0.13.9"]


def test_compose_runs_each_image_as_its_target_says(services: dict[str, dict[str, Any]]) -> None:
    for name, service in app_services(services).items():
        target = service["image"].removeprefix("multidb-").removesuffix(":local")
        stage = STAGES[target]
        if migration_role(service) is None:
            assert json.dumps(service["command"]) == stage.first("CMD"), name
            for _, container in published(service):
                assert str(container) == stage.first("EXPOSE"), name
        else:
            assert migration_role(service) == target, f"{name} migrates its image's role"


# ---- Dockerfile: the backup tools of the role images ---------------------------------------


def stage_environment(stage: Stage) -> dict[str, str]:
    """What a stage's ``ENV`` instructions set."""
    found = {}
    for args in (args for kind, args in stage.instructions if kind == "ENV"):
        for assignment in shlex.split(args):
            key, _, value = assignment.partition("=")
            found[key] = value
    return found


def image_environment(target: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for stage in lineage(target, STAGES):
        found |= stage_environment(stage)
    return found


def servers_major() -> int:
    """The PostgreSQL major of the compose file's servers (one for all)."""
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    majors = {s["image"].partition(":")[2] for s in services.values() if is_database(s)}
    assert len(majors) == 1, f"one PostgreSQL major for every server: {majors}"
    [major] = majors
    assert major.isdigit(), f"postgres:<major>, not {major!r}"
    return int(major)


def test_role_images_hold_pg_dump_and_pg_restore_of_the_servers_major() -> None:
    """Installed the PostgreSQL project's documented way, named by MULTI_DB_PG_BIN_DIR."""
    major = servers_major()
    [run] = STAGES[ROLE_RUNTIME].runs()
    steps = [step.strip() for step in run.split("&&")]
    assert steps[:5] == [
        "apt-get update",
        "apt-get install -y --no-install-recommends postgresql-common",
        "/usr/share/postgresql-common/pgdg/apt.postgresql.org.sh -y",
        f"apt-get install -y --no-install-recommends postgresql-client-{major}",
        "rm -rf /var/lib/apt/lists/*",
    ]
    user, group = APP_USER.split(":")
    assert f"install -d -o {user} -g {group} -m 0700 {BACKUP_FOLDER}" in steps
    for role in ROLES:
        assert ROLE_RUNTIME in [stage.name for stage in lineage(role, STAGES)], role
        env = image_environment(role)
        assert env["MULTI_DB_PG_BIN_DIR"] == f"/usr/lib/postgresql/{major}/bin", role
        assert env["MULTI_DB_BACKUP_DIR"] == BACKUP_FOLDER, role
    assert set(stage_environment(STAGES[ROLE_RUNTIME])) <= KNOWN, "variables the code reads"


def test_the_gateway_image_has_no_postgresql_client() -> None:
    for stage in lineage(GATEWAY, STAGES):
        assert stage.name != ROLE_RUNTIME
        for run in stage.runs():
            assert "apt-get" not in run, (stage.name, run)
            assert "postgresql" not in run, (stage.name, run)
    env = image_environment(GATEWAY)
    assert "MULTI_DB_PG_BIN_DIR" not in env
    assert "MULTI_DB_BACKUP_DIR" not in env
