"""Watch how files are created, through Python's audit hooks (PEP 578): no mock, the real calls.

``os.open`` raises the ``open`` event with its flags (not its mode) before the file exists;
``os.chmod`` and ``os.replace`` raise ``os.chmod`` and ``os.rename``. A file created with
``O_CREAT | O_EXCL`` under umask 0 and never chmod-ed had, from its first byte, exactly the
mode it shows afterwards.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WATCHED = ("open", "os.chmod", "os.rename")


@dataclass
class FileEvents:
    folder: Path
    events: list[tuple[str, str, int]] = field(default_factory=list)  # (event, path, flags)
    # The mode of each file at the moment it is renamed into place.
    renamed_modes: dict[str, int] = field(default_factory=dict)

    def created(self) -> list[tuple[str, int]]:
        """(path, flags) of every ``os.open``/``open`` that could create a file."""
        return [(path, flags) for event, path, flags in self.events if event == "open"]

    def chmodded(self) -> list[str]:
        return [path for event, path, _ in self.events if event == "os.chmod"]


_active: list[FileEvents] = []


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event not in WATCHED or not _active:
        return
    path = args[0]
    if not isinstance(path, str | bytes | os.PathLike):
        return  # a file descriptor
    text = os.fsdecode(path)
    for watch in _active:
        if not text.startswith(str(watch.folder)):
            continue
        flags = args[2] if event == "open" and isinstance(args[2], int) else 0
        if event == "open" and not flags & os.O_CREAT:
            continue  # a read: creates nothing
        watch.events.append((event, text, flags))
        if event == "os.rename":
            with contextlib.suppress(FileNotFoundError):
                watch.renamed_modes[text] = stat.S_IMODE(os.stat(text).st_mode)


_installed = False


@contextlib.contextmanager
def watch_files(folder: Path) -> Iterator[FileEvents]:
    """Record the file creations, chmods and renames under ``folder`` (umask 0 meanwhile)."""
    global _installed  # noqa: PLW0603 - an audit hook cannot be removed: install it once
    if not _installed:
        sys.addaudithook(_hook)
        _installed = True
    watch = FileEvents(folder.resolve())
    _active.append(watch)
    previous = os.umask(0)
    try:
        yield watch
    finally:
        os.umask(previous)
        _active.remove(watch)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)
