"""``multidb key create|list|revoke``: the named API keys of ``MULTI_DB_API_KEYS_FILE``.

    multidb key create NAME --scopes db:read:analytics,db:execute:analytics
    multidb key list
    multidb key revoke NAME

``create`` prints the new key once, on stdout alone (``KEY=$(multidb key create ...)``)
and stores only its sha256 digest. The file is rewritten whole, mode 0600 from its first
byte and atomically (:func:`multidb.files.write_private`), under an exclusive lock on its
folder so that two commands at once lose neither change. Running services and gateways
read the file again on the next request that presents a key (see :mod:`multidb.api_keys`):
a created key works at once, a revoked one is refused at once, no restart needed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import hashlib
import os
import re
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from multidb.api_keys import (
    NAME_PATTERN,
    KeysFileError,
    NamedKey,
    dump_keys,
    load_keys,
    parse_keys,
)
from multidb.files import write_private
from multidb.plugins import get_roles
from multidb.scopes import ACTIONS, scope_roles, unknown_scopes
from multidb.settings import read_environment

VARIABLE = "MULTI_DB_API_KEYS_FILE"
# A prefix that says what the string is, to a person and to a secret scanner.
KEY_PREFIX = "mdbk_"
KEY_BYTES = 32


def new_key() -> str:
    """A fresh API key: 256 random bits, URL-safe."""
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path``'s folder (no lock file left behind)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        yield
    finally:
        os.close(folder)  # releases the lock


def _current(path: Path) -> list[NamedKey]:
    return list(load_keys(path)) if path.exists() else []


def _keys_path(args: argparse.Namespace) -> Path:
    if args.file:
        return Path(args.file)
    value = read_environment().get(VARIABLE, "").strip()
    if not value:
        msg = f"{VARIABLE} is not set: set it (environment or .env) or pass --file"
        raise KeysFileError(msg)
    return Path(value)


def _check_scopes(scopes: list[str]) -> str | None:
    """Why ``scopes`` cannot be granted; None when they can."""
    if not scopes:
        return "--scopes: name at least one scope"
    unknown = unknown_scopes(scopes)
    if unknown:
        actions = ", ".join(sorted(ACTIONS))
        return (
            f"--scopes: unknown scope(s) {', '.join(unknown)} "
            f"(each is one of {actions}, alone or followed by ':<role>')"
        )
    installed = get_roles()
    strangers = [role for role in scope_roles(scopes) if role not in installed]
    if strangers:
        return (
            f"--scopes: no installed role named {', '.join(map(repr, strangers))} "
            f"(installed: {', '.join(installed)})"
        )
    return None


def cmd_create(args: argparse.Namespace) -> int:
    scopes = [scope.strip() for scope in args.scopes.split(",") if scope.strip()]
    problem = _check_scopes(scopes)
    if not re.fullmatch(NAME_PATTERN, args.name):
        problem = f"{args.name!r}: a key's name is letters, digits, '.', '_' or '-' (at most 64)"
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2
    key = new_key()
    created = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    try:
        path = _keys_path(args)
        entry = NamedKey(name=args.name, sha256=digest(key), scopes=tuple(scopes), created=created)
        with _locked(path):
            keys = _current(path)
            if any(existing.name == args.name for existing in keys):
                msg = f"a key named {args.name!r} exists in {path}; revoke it first"
                print(msg, file=sys.stderr)
                return 1
            # Checked as the services will read it, before anything is written.
            data = dump_keys(path, [*keys, entry])
            parse_keys(path, data)
            write_private(path, data)
    except KeysFileError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(key)
    print(
        f"key {args.name!r} ({', '.join(scopes)}) added to {path}. It is shown this once; "
        "only its digest is stored. Running services accept it from their next request.",
        file=sys.stderr,
    )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    try:
        path = _keys_path(args)
        keys = _current(path)
    except KeysFileError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if not keys:
        print(f"no keys in {path}")
        return 0
    rows = [("name", "scopes", "created")]
    rows += [(key.name, ",".join(key.scopes), key.created or "-") for key in keys]
    name_width = max(len(row[0]) for row in rows)
    scopes_width = max(len(row[1]) for row in rows)
    for name, scopes, created in rows:
        print(f"{name:<{name_width}}  {scopes:<{scopes_width}}  {created}".rstrip())
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    try:
        path = _keys_path(args)
        with _locked(path):
            keys = _current(path)
            kept = [key for key in keys if key.name != args.name]
            if len(kept) == len(keys):
                print(f"no key named {args.name!r} in {path}", file=sys.stderr)
                return 1
            write_private(path, dump_keys(path, kept))
    except KeysFileError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(f"revoked {args.name!r}; running services refuse it from their next request")
    return 0


def register(commands: Any) -> None:
    """Add ``key`` and its subcommands to the ``multidb`` parser's ``commands``."""
    key = commands.add_parser(
        "key",
        help=f"named API keys with scopes ({VARIABLE})",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = key.add_subparsers(dest="key_command", required=True)
    where = {"help": f"the keys file (default: {VARIABLE})"}
    create = actions.add_parser("create", help="make a key, print it once, store its digest")
    create.add_argument("name", help="letters, digits, '.', '_' or '-' (at most 64)")
    create.add_argument(
        "--scopes",
        required=True,
        help="comma-separated: <action> (every database) or <action>:<role>, "
        f"action one of {', '.join(sorted(ACTIONS))}",
    )
    create.add_argument("--file", **where)
    create.set_defaults(run=cmd_create)
    listing = actions.add_parser("list", help="name, scopes and creation time of every key")
    listing.add_argument("--file", **where)
    listing.set_defaults(run=cmd_list)
    revoke = actions.add_parser("revoke", help="remove a key: it is refused from then on")
    revoke.add_argument("name")
    revoke.add_argument("--file", **where)
    revoke.set_defaults(run=cmd_revoke)
