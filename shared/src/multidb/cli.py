"""``multidb``: the everyday commands (``make`` calls these).

    multidb migrate [ROLE ...]      upgrade to head (or --revision REV, --downgrade REV, --status)
    multidb roles                   discovered roles: port, database, models, configured
    multidb health                  the fleet's health through the gateway, as a table
    multidb token --scopes S,...    mint a JWT (newest JWT_SECRETS entry and its kid, or JWT_SECRET)
    multidb key create|list|revoke  named API keys with scopes (MULTI_DB_API_KEYS_FILE)
    multidb backup run|list|verify|drill|prune [ROLE ...], backup restore ROLE ID --into DB
    multidb split --source URL      a single database's tables into the role databases

Plugins add commands: the development stack adds ``multidb up`` (what ``make run`` does),
the logging role ``multidb audit verify`` (the audit trail's hash chains).
Output is aligned for a terminal and plain (no colour) when piped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

from sqlalchemy.pool import NullPool

from multidb import key_command, migrations
from multidb.auth import ALL_SCOPES, API_KEY_HEADER, mint_token
from multidb.backups import command as backup_command
from multidb.engines import create_engine
from multidb.errors import DatabaseTLSError
from multidb.jwt_keys import jwt_keys_from_env, signing_key
from multidb.logs import configure_logging
from multidb.plugins import get_plugin_manager, get_roles
from multidb.roles import RoleSpec
from multidb.scopes import scope_roles
from multidb.settings import (
    GATEWAY_PORT,
    DatabaseSettings,
    Settings,
    SettingsError,
    get_settings,
    load_settings,
    read_environment,
    variable_name,
)
from multidb.split import command as split_command


def _colour(text: str, code: str) -> str:
    return f"\033[{code}m{text}\033[0m" if sys.stdout.isatty() else text


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def command_environment(
    resources: contextlib.ExitStack, *, start_database: bool = False
) -> dict[str, str]:
    """The environment, over what a plugin (the development stack) offers when it is silent.

    Commands that plugins add (``multidb_cli_commands``) call this too, so that they find the
    same databases and credentials as the built-in ones.
    """
    env = read_environment()
    if any(env.get(variable_name(spec, "host")) for spec in get_roles().values()):
        return env
    offered = get_plugin_manager().hook.multidb_cli_environment(
        resources=resources, start_database=start_database
    )
    return {**(offered or {}), **env}


def cmd_migrate(args: argparse.Namespace) -> int:
    roles = get_roles()
    with contextlib.ExitStack() as resources:
        settings = load_settings(command_environment(resources, start_database=True), roles)
        return _migrate(args, roles, settings)


def _migrate(args: argparse.Namespace, roles: dict[str, RoleSpec], settings: Settings) -> int:
    chosen = args.roles or list(settings.databases)
    for name in chosen:
        if name not in roles:
            print(f"unknown role {name!r}; installed: {', '.join(roles)}", file=sys.stderr)
            return 2
        if name not in settings.databases:
            print(
                f"role {name!r} has no database configured (set {roles[name].prefix}HOST)",
                file=sys.stderr,
            )
            return 2
    rows = [["role", "database", "current", "head"]]
    for name in chosen:
        spec, database = roles[name], settings.databases[name]
        if args.downgrade:
            print(f"{name}: downgrading to {args.downgrade}", flush=True)
            migrations.downgrade(spec, args.downgrade, database)
        elif not args.status:
            print(f"{name}: upgrading to {args.revision}", flush=True)
            migrations.upgrade(spec, args.revision, database)
        current = asyncio.run(_current(spec, database)) or "base"
        rows.append([name, database.database, current, migrations.head_revision(spec) or "-"])
    print(_table(rows))
    return 0


async def _current(spec: RoleSpec, database: DatabaseSettings) -> str | None:
    engine = create_engine(database, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(lambda sync: migrations.current_revision(sync, spec))
    finally:
        await engine.dispose()


def cmd_roles(_: argparse.Namespace) -> int:
    env = read_environment()
    try:
        configured = set(get_settings().databases)
    except SettingsError:
        configured = set()
    with contextlib.ExitStack() as resources:
        local = command_environment(resources)
    rows = [["role", "port", "database", "configured", "models"]]
    for name, spec in get_roles().items():
        port = env.get(f"MULTI_DB_{name.upper()}_SERVICE_PORT") or str(spec.port)
        where = (
            "env"
            if name in configured
            else "local"
            if local.get(variable_name(spec, "host"))
            else "no"
        )
        rows.append([name, port, spec.database, where, ", ".join(spec.model_names)])
    print(_table(rows))
    return 0


def _credentials_headers(env: dict[str, str]) -> dict[str, str]:
    keys = [
        key for key in env.get("API_KEYS", "").split(",") if key and not key.startswith("sha256:")
    ]
    if keys:
        return {API_KEY_HEADER: keys[0]}
    found = _signing_key(env)
    if found is not None:
        kid, secret = found
        token = mint_token(secret, "cli", ["db:read"], 60, kid=kid)
        return {"Authorization": f"Bearer {token}"}
    return {}


def _signing_key(env: dict[str, str]) -> tuple[str | None, str] | None:
    """``(kid, secret)`` new tokens are signed with; :class:`SettingsError` if misconfigured."""
    try:
        keys = jwt_keys_from_env(env)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    return signing_key(keys.legacy, keys.by_kid)


def cmd_health(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as resources:
        env = command_environment(resources)
    url = args.url or f"http://127.0.0.1:{env.get('MULTI_DB_GATEWAY_PORT') or GATEWAY_PORT}"
    request = urllib.request.Request(f"{url}/database/health", headers=_credentials_headers(env))  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            body = json.load(response)
    except urllib.error.HTTPError as exc:
        if exc.code != 503:
            print(
                f"the gateway answered {exc.code}: {exc.read().decode(errors='replace')}",
                file=sys.stderr,
            )
            return 2
        body = json.load(exc)
    except (urllib.error.URLError, OSError) as exc:
        print(f"cannot reach the gateway at {url}: {exc}", file=sys.stderr)
        return 2
    rows = [["role", "status", "database", "version", "latency ms", "error"]]
    for role, report in body.items():
        status = report.get("status", "?")
        rows.append(
            [
                role,
                status,
                report.get("database_name") or "",
                report.get("version") or "",
                str(report.get("latency_ms") or ""),
                report.get("error") or report.get("reason") or "",
            ]
        )
    table = _table(rows)
    for status, code in (("unhealthy", "31"), ("healthy", "32"), ("degraded", "33")):
        table = table.replace(f"  {status}  ", f"  {_colour(status, code)}  ")
    print(table)
    # degraded: the primary answers (a replica is down or lagging), so the role works.
    working = ("healthy", "degraded")
    return 0 if all(report.get("status") in working for report in body.values()) else 1


def cmd_token(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as resources:
        found = _signing_key(command_environment(resources))
    if found is None:
        msg = "neither JWT_SECRETS nor JWT_SECRET is set (environment, .env, or `make run` once)"
        print(msg, file=sys.stderr)
        return 2
    kid, secret = found
    scopes = [scope.strip() for scope in args.scopes.split(",") if scope.strip()]
    installed = get_roles()
    strangers = [role for role in scope_roles(scopes) if role not in installed]
    if strangers:
        named = ", ".join(map(repr, strangers))
        msg = f"no installed role named {named} (installed: {', '.join(installed)})"
        print(msg, file=sys.stderr)
        return 2
    try:
        print(mint_token(secret, args.subject, scopes, args.lifetime, kid=kid))
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="multidb", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = root.add_subparsers(dest="command", required=True)
    migrate = commands.add_parser("migrate", help="run role migrations")
    migrate.add_argument("roles", nargs="*", help="roles (default: every configured role)")
    migrate.add_argument(
        "--revision", default="head", help="upgrade to this revision (default head)"
    )
    migrate.add_argument(
        "--downgrade", metavar="REV", help="downgrade to this revision (e.g. base)"
    )
    migrate.add_argument(
        "--status", action="store_true", help="only show current and head revisions"
    )
    migrate.set_defaults(run=cmd_migrate)
    commands.add_parser("roles", help="list discovered roles").set_defaults(run=cmd_roles)
    health = commands.add_parser("health", help="the fleet's health via the gateway")
    health.add_argument("--url", help=f"gateway base URL (default http://127.0.0.1:{GATEWAY_PORT})")
    health.set_defaults(run=cmd_health)
    token = commands.add_parser("token", help="mint a JWT")
    token.add_argument(
        "--scopes",
        default="db:read",
        help=f"comma-separated, of {', '.join(sorted(ALL_SCOPES))}, each alone (every "
        "database) or followed by ':<role>' (that database)",
    )
    token.add_argument("--lifetime", type=int, default=3600, help="seconds (default 3600)")
    token.add_argument("--subject", default="cli", help="the token's 'sub' claim")
    token.set_defaults(run=cmd_token)
    key_command.register(commands)
    backup_command.register(commands, command_environment)
    split_command.register(
        commands, lambda resources: command_environment(resources, start_database=True)
    )
    get_plugin_manager().hook.multidb_cli_commands(commands=commands)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        # Log lines go to stderr; what a command prints for its reader stays on stdout.
        configure_logging("cli", env=read_environment())
        code: int = args.run(args)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except DatabaseTLSError as exc:  # one line naming the role and the setting
        print(f"multidb {args.command}: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
