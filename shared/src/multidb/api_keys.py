"""The API keys file (``MULTI_DB_API_KEYS_FILE``): named keys, each with its own scopes.

The file holds a key's sha256 digest, never the key. TOML, unless its name ends in
``.json``::

    [[keys]]
    name = "etl"
    sha256 = "<hex sha256 digest of the key>"
    scopes = ["db:execute:analytics", "db:read:analytics"]
    created = "2026-01-05T10:00:00+00:00"   # optional

or JSON: ``{"keys": [{"name": ..., "sha256": ..., "scopes": [...], "created": ...}]}``.
``multidb key create|list|revoke`` writes and reads it (:mod:`multidb.key_command`).
A key presented as ``X-API-Key`` whose digest is in the file authenticates as
``api-key:<name>`` with exactly its scopes.

:class:`KeysFile` is what a running process holds: it looks at the file's identity
(inode, size, modification time; one ``stat``) whenever a key is presented and reads the
file again when it changed, so a created key works and a revoked one is refused from the
next request on, without a restart. A file that no longer reads (deleted, malformed) grants
nothing until it is fixed, and says why in the log once.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import msgspec

from multidb.scopes import ACTIONS, unknown_scopes

log = logging.getLogger("multidb.auth")

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
KeyName = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]
Digest = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-fA-F]{64}$")]


class KeysFileError(ValueError):
    """The keys file cannot be used; the message names the file (and the entry)."""


class NamedKey(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One entry of the keys file."""

    name: KeyName
    sha256: Digest
    scopes: tuple[str, ...]
    created: str | None = None


class _File(msgspec.Struct, forbid_unknown_fields=True):
    keys: list[dict[str, Any]] = msgspec.field(default_factory=list)


def is_json(path: Path) -> bool:
    return path.suffix.lower() == ".json"


def _entry(path: Path, number: int, raw: dict[str, Any]) -> NamedKey:
    label = f"entry {number}" + (f" ({raw['name']!r})" if isinstance(raw.get("name"), str) else "")
    if isinstance(raw.get("created"), dt.datetime | dt.date):
        raw = {**raw, "created": raw["created"].isoformat()}  # an unquoted TOML date-time
    try:
        key = msgspec.convert(raw, NamedKey)
    except msgspec.ValidationError as exc:
        message, _, where = str(exc).rpartition(" - at `$.")
        field = where.rstrip("`") if message else ""
        msg = f"{path}: {label}: {field + ': ' if field else ''}{message or exc}"
        raise KeysFileError(msg) from None
    unknown = unknown_scopes(key.scopes)
    if unknown:
        msg = (
            f"{path}: {label}: unknown scope(s) {', '.join(map(repr, unknown))} "
            "(scopes are <action> or <action>:<role>, action one of "
            f"{', '.join(sorted(ACTIONS))})"
        )
        raise KeysFileError(msg)
    return msgspec.structs.replace(key, sha256=key.sha256.lower())


def parse_keys(path: Path, data: bytes) -> tuple[NamedKey, ...]:
    """The entries of a keys file whose content is ``data``; :class:`KeysFileError` if bad."""
    try:
        document = json.loads(data) if is_json(path) else tomllib.loads(data.decode())
    except (ValueError, UnicodeDecodeError) as exc:  # JSON and TOML errors are ValueErrors
        kind = "JSON" if is_json(path) else "TOML"
        raise KeysFileError(f"{path}: not valid {kind}: {exc}") from None
    try:
        entries = msgspec.convert(document, _File).keys
    except msgspec.ValidationError as exc:
        msg = f'{path}: must hold a list of keys ("keys"): {exc}'
        raise KeysFileError(msg) from None
    keys = tuple(_entry(path, number, raw) for number, raw in enumerate(entries, start=1))
    seen_names: set[str] = set()
    seen_digests: set[str] = set()
    for number, key in enumerate(keys, start=1):
        if key.name in seen_names:
            raise KeysFileError(f"{path}: entry {number}: the name {key.name!r} is used twice")
        if key.sha256 in seen_digests:
            msg = f"{path}: entry {number} ({key.name!r}): the same key (sha256) as another entry"
            raise KeysFileError(msg)
        seen_names.add(key.name)
        seen_digests.add(key.sha256)
    return keys


def load_keys(path: Path) -> tuple[NamedKey, ...]:
    """The entries of the keys file at ``path``; :class:`KeysFileError` if it cannot be used."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeysFileError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    return parse_keys(path, data)


def _toml_string(text: str) -> str:
    # JSON's string escapes are TOML basic-string escapes (\" \\ \n \uXXXX ...).
    return json.dumps(text, ensure_ascii=False)


def dump_keys(path: Path, keys: Sequence[NamedKey]) -> bytes:
    """The content of a keys file at ``path`` (TOML or JSON by its suffix) holding ``keys``."""
    if is_json(path):
        document = {"keys": [msgspec.to_builtins(key) for key in keys]}
        return (json.dumps(document, indent=2) + "\n").encode()
    lines = [
        "# multidb API keys: written by `multidb key create|revoke` (comments are not kept).",
        "# Each entry holds the sha256 digest of a key, never the key itself.",
    ]
    for key in keys:
        lines += ["", "[[keys]]", f"name = {_toml_string(key.name)}"]
        lines.append(f"sha256 = {_toml_string(key.sha256)}")
        lines.append(f"scopes = [{', '.join(_toml_string(scope) for scope in key.scopes)}]")
        if key.created is not None:
            lines.append(f"created = {_toml_string(key.created)}")
    return ("\n".join(lines) + "\n").encode()


Stamp = tuple[int, int, int, int]


def _stamp(path: Path) -> Stamp | None:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return (found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns)


class KeysFile:
    """The keys of one file, read again whenever the file changes.

    Built at start-up: a file that cannot be used then raises :class:`KeysFileError`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp = _stamp(path)
        self._keys = load_keys(path)

    def keys(self) -> tuple[NamedKey, ...]:
        """The current entries (the same tuple object until the file changes)."""
        stamp = _stamp(self.path)
        if stamp != self._stamp:
            # The stamp is taken before reading: a change during the read is seen next time.
            self._stamp = stamp
            try:
                self._keys = load_keys(self.path)
            except KeysFileError as exc:
                self._keys = ()
                log.error("API keys file unusable, none of its keys is accepted: %s", exc)
            else:
                log.info("API keys file read again: %d key(s)", len(self._keys))
        return self._keys
