"""``multidb backup``: the same operations as the services' schedule, from a terminal.

    multidb backup run [ROLE ...]          back up (then verify) each role, default all
    multidb backup list [ROLE ...]         the backups in MULTI_DB_BACKUP_DIR
    multidb backup verify [ROLE ...]       sha256 and a full read of the newest (or --id)
    multidb backup drill [ROLE ...]        restore into a scratch database and compare
    multidb backup prune [ROLE ...]        apply each role's MULTI_DB_<ROLE>_BACKUP_KEEP
    multidb backup restore ROLE ID --into DBNAME [--force]

Each operation takes the role's backup lock, so it never runs beside the role service's
own schedule or another command (it says so and exits 1). Exit codes: 0 when everything
asked for succeeded, 1 when an operation failed or was busy, 2 for a usage or
configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping
from datetime import UTC, datetime

import asyncpg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from multidb.backups.engine import BackupError, RoleBackups, try_lead, while_led
from multidb.backups.engine import Progress as ProgressCallback
from multidb.backups.manager import newest_drill
from multidb.backups.tools import BackupToolError
from multidb.backups.wire import BACKUP_ID, BackupManifest
from multidb.errors import CONNECTION_ERRORS, describe
from multidb.plugins import get_roles
from multidb.settings import Settings, load_settings

_err = Console(stderr=True, highlight=False)


# The CLI's own environment lookup (multidb.cli.command_environment), given at register().
def _no_environment(_: contextlib.ExitStack) -> Mapping[str, str]:
    return {}


_environment: Callable[[contextlib.ExitStack], Mapping[str, str]] = _no_environment
UNREACHABLE: tuple[type[Exception], ...] = (TimeoutError, OSError, *CONNECTION_ERRORS)


def _settings() -> Settings:
    with contextlib.ExitStack() as resources:
        return load_settings(_environment(resources), get_roles())


def _chosen(settings: Settings, names: list[str]) -> list[str] | None:
    roles = get_roles()
    for name in names:
        if name not in roles:
            print(f"unknown role {name!r}; installed: {', '.join(roles)}", file=sys.stderr)
            return None
        if name not in settings.databases:
            print(
                f"role {name!r} has no database configured (set {roles[name].prefix}HOST)",
                file=sys.stderr,
            )
            return None
    return names or list(settings.databases)


def _backups(settings: Settings, role: str) -> RoleBackups:
    return RoleBackups(settings.backups, get_roles()[role], settings.databases[role])


@contextlib.contextmanager
def _progress(label: str) -> Iterator[ProgressCallback]:
    """A bar on stderr for a long step (tables done of all), drawn only on a terminal."""
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[table]}"),
        TimeElapsedColumn(),
        console=_err,
        transient=True,
        disable=not _err.is_terminal,
    )
    task = bar.add_task(label, total=None, table="")

    def update(done: int, total: int, table: str) -> None:
        bar.update(task, completed=done, total=total or None, table=table)

    with bar:
        yield update


def _size(size: int | None) -> str:
    if size is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return f"{size}"


def _line(manifest: BackupManifest) -> str:
    parts = [f"{manifest.role:<10} {manifest.id}  {manifest.status:<7}"]
    if manifest.status == "ok":
        parts.append(f"{_size(manifest.size_bytes):>9}  {manifest.duration_s or 0:.1f} s")
        parts.append("verified" if manifest.verified else "not verified")
        if manifest.verification is not None and not manifest.verification.passed:
            parts.append(f"verify failed: {manifest.verification.error}")
        if manifest.last_drill is not None:
            drill = manifest.last_drill
            parts.append(
                "drill passed"
                if drill.passed
                else f"drill FAILED: {'; '.join(drill.differences[:3])}"
            )
    elif manifest.error:
        parts.append(manifest.error)
    return "  ".join(parts)


async def _led(role: RoleBackups, work: Callable[[], Awaitable[int]]) -> int:
    """Run ``work`` holding the role's backup lock; 1 when another operation holds it."""
    try:
        lock = await try_lead(role.database, role.spec.name)
    except UNREACHABLE as exc:
        print(f"{role.spec.name}: database unavailable: {describe(exc, 10_000)}", file=sys.stderr)
        return 1
    if lock is None:
        print(
            f"{role.spec.name}: another backup operation of this role is running "
            "(the role service's schedule, or another command); try again later",
            file=sys.stderr,
        )
        return 1
    try:
        role.clean_up()
        await role.drop_scratch_databases()
        return await while_led(lock, work())
    except BackupError as exc:
        print(f"{role.spec.name}: {exc}", file=sys.stderr)
        return 1
    except (*UNREACHABLE, asyncpg.PostgresError) as exc:
        print(f"{role.spec.name}: database unavailable: {describe(exc, 10_000)}", file=sys.stderr)
        return 1
    finally:
        with contextlib.suppress(Exception):
            await lock.close()


def _target(role: RoleBackups, backup_id: str | None) -> BackupManifest | None:
    if backup_id is not None:
        found = role.store.get(backup_id)
        if found is None:
            print(f"{role.spec.name}: no backup {backup_id!r}", file=sys.stderr)
        return found
    found = next((m for m in role.store.manifests() if m.status == "ok"), None)
    if found is None:
        print(
            f"{role.spec.name}: no complete backup yet (multidb backup run {role.spec.name})",
            file=sys.stderr,
        )
    return found


async def _run(role: RoleBackups) -> int:
    with _progress(f"{role.spec.name}: pg_dump") as progress:
        try:
            manifest = await role.run_backup("cli", progress=progress)
        except BackupError as exc:
            print(f"{role.spec.name}: backup failed: {exc}", file=sys.stderr)
            return 1
    with _progress(f"{role.spec.name}: verify") as progress:
        manifest = await role.verify(manifest, progress)
    print(_line(manifest))
    return 0 if manifest.verified else 1


async def _verify(role: RoleBackups, backup_id: str | None) -> int:
    manifest = _target(role, backup_id)
    if manifest is None:
        return 1
    with _progress(f"{role.spec.name}: verify") as progress:
        manifest = await role.verify(manifest, progress)
    print(_line(manifest))
    return 0 if manifest.verified else 1


async def _drill(role: RoleBackups, backup_id: str | None) -> int:
    manifest = _target(role, backup_id)
    if manifest is None:
        return 1
    with _progress(f"{role.spec.name}: drill (pg_restore)") as progress:
        manifest = await role.drill(manifest, progress)
    print(_line(manifest))
    return 0 if manifest.last_drill is not None and manifest.last_drill.passed else 1


def _for_each(args: argparse.Namespace, work: Callable[[RoleBackups], Awaitable[int]]) -> int:
    settings = _settings()
    roles = _chosen(settings, args.roles)
    if roles is None:
        return 2

    async def every() -> int:
        codes = []
        for name in roles:
            role = _backups(settings, name)
            codes.append(await _led(role, functools.partial(work, role)))
        return max(codes, default=0)

    try:
        return asyncio.run(every())
    except BackupToolError as exc:
        print(f"multidb backup: {exc}", file=sys.stderr)
        return 2


def cmd_run(args: argparse.Namespace) -> int:
    return _for_each(args, _run)


def cmd_verify(args: argparse.Namespace) -> int:
    return _for_each(args, lambda role: _verify(role, args.id))


def cmd_drill(args: argparse.Namespace) -> int:
    return _for_each(args, lambda role: _drill(role, args.id))


def cmd_prune(args: argparse.Namespace) -> int:
    async def prune(role: RoleBackups) -> int:
        for manifest in role.prune():
            when = f"{manifest.started_at:%Y-%m-%d %H:%M}"
            print(f"{role.spec.name:<10} {manifest.id}  deleted ({manifest.status}, {when})")
        return 0

    return _for_each(args, prune)


def cmd_list(args: argparse.Namespace) -> int:
    settings = _settings()
    roles = _chosen(settings, args.roles)
    if roles is None:
        return 2
    now = datetime.now(UTC)
    for name in roles:
        role = _backups(settings, name)
        manifests = role.store.manifests()
        head = f"{name}: {len(manifests)} backups in {role.store.folder}"
        head += f", schedule {role.policy.describe()}"
        drill = newest_drill(manifests)
        if drill is not None:
            hours = (now - drill.finished_at).total_seconds() / 3600
            head += f", last drill {'passed' if drill.passed else 'FAILED'} {hours:.1f} h ago"
        print(head)
        for manifest in manifests:
            print(f"  {manifest.started_at:%Y-%m-%d %H:%M:%S}  {_line(manifest)}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    if not BACKUP_ID.match(args.id):
        print(f"malformed backup id {args.id!r}: an id is 12 lowercase hex digits", file=sys.stderr)
        return 2
    settings = _settings()
    if _chosen(settings, [args.role]) is None:
        return 2
    role = _backups(settings, args.role)

    async def restore() -> int:
        # Under the role's lock too: never beside a backup, drill or prune of the role.
        return await _led(role, restore_led)

    async def restore_led() -> int:
        manifest = role.store.get(args.id)
        if manifest is None or manifest.status != "ok":
            what = "no backup" if manifest is None else f"{manifest.status} backup"
            print(f"{args.role}: {what} {args.id!r}", file=sys.stderr)
            return 1
        with _progress(f"{args.role}: pg_restore into {args.into}") as progress:
            try:
                await role.restore(manifest, args.into, force=args.force, progress=progress)
            except BackupError as exc:
                print(f"{args.role}: {exc}", file=sys.stderr)
                return 1
            except BackupToolError as exc:
                print(
                    f"{args.role}: the restore failed and changed nothing: {exc}", file=sys.stderr
                )
                return 1
        print(f"{args.role}: backup {args.id} restored into {args.into!r}")
        return 0

    try:
        return asyncio.run(restore())
    except BackupToolError as exc:
        print(f"multidb backup: {exc}", file=sys.stderr)
        return 2


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    environment: Callable[[contextlib.ExitStack], Mapping[str, str]],
) -> None:
    """Add ``multidb backup``; ``environment`` finds the databases as every command does."""
    global _environment  # noqa: PLW0603 - set once, before any command runs
    _environment = environment
    backup = commands.add_parser(
        "backup",
        help="back up, verify, drill, prune, list and restore role databases",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = backup.add_subparsers(dest="action", required=True)
    for name, run, text in (
        ("run", cmd_run, "back up (then verify) each role"),
        ("list", cmd_list, "list each role's backups"),
        ("verify", cmd_verify, "check sha256 and read the whole archive"),
        ("drill", cmd_drill, "restore into a scratch database and compare with the manifest"),
        ("prune", cmd_prune, "delete backups beyond each role's BACKUP_KEEP"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("roles", nargs="*", help="roles (default: every configured role)")
        if name in {"verify", "drill"}:
            action.add_argument("--id", help="this backup instead of the newest complete one")
        action.set_defaults(run=run)
    restore = actions.add_parser(
        "restore", help="restore a backup into a database (not the HTTP API)"
    )
    restore.add_argument("role")
    restore.add_argument("id", help="the backup's id (multidb backup list)")
    restore.add_argument(
        "--into",
        required=True,
        metavar="DBNAME",
        help="target database on the role's server (created when missing)",
    )
    restore.add_argument(
        "--force", action="store_true", help="replace the tables of a database that is not empty"
    )
    restore.set_defaults(run=cmd_restore)
