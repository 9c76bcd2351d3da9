"""Files that hold secrets or state: private (0600) from their first byte, replaced atomically."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from multidb.errors import SettingsError


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


def read_secret_file(variable: str, path: str) -> str:
    """The secret in the file ``variable`` names (``DB_PASSWORD_FILE``, ``JWT_SECRET_FILE``...).

    The Docker and Kubernetes secrets convention: the file's content, one trailing newline
    removed. Errors name the variable and the path, never the content.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"{variable}: cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SettingsError(f"{variable}: {path} is not UTF-8 text") from None
    secret = text.removesuffix("\n").removesuffix("\r")
    if not secret:
        raise SettingsError(f"{variable}: {path} is empty")
    return secret
