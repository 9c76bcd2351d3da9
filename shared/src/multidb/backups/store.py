"""The backup folder of one role: dumps and their manifests, never half-written.

``<directory>/<role>/<stamp>-<id>.dump`` and ``<stamp>-<id>.manifest.json`` (see
:mod:`multidb.backups.wire`). A dump is written as ``.<name>.partial`` and renamed once it
is complete and fsynced; a manifest is replaced atomically (:func:`write_private`). Files
are private (0600) and so is the folder (0700): a dump holds the role's data.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from multidb.backups.wire import BACKUP_ID, BackupManifest
from multidb.files import write_private

MANIFEST_SUFFIX = ".manifest.json"
DUMP_SUFFIX = ".dump"
PARTIAL_SUFFIX = ".partial"
_decode = msgspec.json.Decoder(BackupManifest).decode
_encode = msgspec.json.Encoder().encode


def new_id() -> str:
    return secrets.token_hex(6)


def stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


class BackupStore:
    """``root``/``role``: list, read and write the role's manifests and dumps."""

    def __init__(self, root: Path, role: str) -> None:
        self.folder = root / role
        self.role = role

    def prepare(self) -> None:
        """Create the folder (0700); raise OSError when it cannot be."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    def manifests(self) -> list[BackupManifest]:
        """Every readable manifest, newest first (an unreadable one is skipped)."""
        if not self.folder.is_dir():
            return []
        found = []
        for path in self.folder.glob(f"*{MANIFEST_SUFFIX}"):
            with contextlib.suppress(OSError, msgspec.DecodeError, msgspec.ValidationError):
                found.append(_decode(path.read_bytes()))
        return sorted(found, key=lambda manifest: manifest.started_at, reverse=True)

    def get(self, backup_id: str) -> BackupManifest | None:
        if not BACKUP_ID.match(backup_id) or not self.folder.is_dir():
            return None
        for path in self.folder.glob(f"*-{backup_id}{MANIFEST_SUFFIX}"):
            with contextlib.suppress(OSError, msgspec.DecodeError, msgspec.ValidationError):
                return _decode(path.read_bytes())
        return None

    def new(self, trigger: str) -> BackupManifest:
        started = datetime.now(UTC)
        backup_id = new_id()
        return BackupManifest(
            id=backup_id,
            role=self.role,
            status="running",
            started_at=started,
            file=f"{stamp(started)}-{backup_id}{DUMP_SUFFIX}",
            trigger=trigger,  # type: ignore[arg-type]
        )

    def manifest_path(self, manifest: BackupManifest) -> Path:
        return self.folder / manifest.file.replace(DUMP_SUFFIX, MANIFEST_SUFFIX)

    def dump_path(self, manifest: BackupManifest) -> Path:
        return self.folder / manifest.file

    def partial_path(self, manifest: BackupManifest) -> Path:
        return self.folder / f".{manifest.file}{PARTIAL_SUFFIX}"

    def save(self, manifest: BackupManifest) -> None:
        write_private(self.manifest_path(manifest), _encode(manifest))
        sync_folder(self.folder)  # the rename survives a crash: "ok" never reverts to "running"

    def delete(self, manifest: BackupManifest) -> None:
        """The dump first: a manifest without its dump is a visible loss, never the reverse."""
        for path in (self.dump_path(manifest), self.manifest_path(manifest)):
            path.unlink(missing_ok=True)
        sync_folder(self.folder)

    def leftovers(self) -> list[Path]:
        """Partial dumps and temporary manifests of runs that died."""
        if not self.folder.is_dir():
            return []
        return [*self.folder.glob(f".*{PARTIAL_SUFFIX}"), *self.folder.glob(".*.tmp")]


def sync_folder(folder: Path) -> None:
    """fsync a folder, so a rename or unlink in it survives a crash."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_private(path: Path) -> None:
    """An empty file, 0600 from creation, that must not exist yet."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
