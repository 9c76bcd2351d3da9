"""Files that hold secrets or state: private (0600) from their first byte, replaced atomically."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``, mode 0600 from creation, via a temporary file and rename.

    A reader sees the old content or the new, never a mix; a crash leaves no partial file
    under ``path``; no other user can open the file between its creation and a chmod.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp creates the file with mode 0600 (O_EXCL), in the target's folder so that
    # the rename stays on one filesystem.
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
