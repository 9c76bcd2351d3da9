"""The JWT secrets: one for tokens without a key id, and several chosen by ``kid``.

- ``JWT_SECRET`` (or ``JWT_SECRET_FILE``, a file holding it: the Docker and Kubernetes
  secrets convention) verifies tokens that carry no ``kid`` header, as it always did, and
  signs new ones when no ``JWT_SECRETS`` is set.
- ``JWT_SECRETS`` (or ``JWT_SECRETS_FILE``) holds ``kid:secret`` entries, separated by
  commas or new lines, **newest first**. The newest signs (``multidb token``, and the
  gateway's own tokens when there is no ``MULTI_DB_SERVICE_SECRET``) and sets the token's
  ``kid``; every entry verifies the tokens that name its ``kid``. To rotate, put a new
  entry first; tokens signed with an older one keep working until that entry is removed.
  A token whose ``kid`` is in no entry is refused (401) with a message that says so.
  Without ``JWT_SECRETS``, a ``kid`` header selects nothing (as before rotation existed).

Setting a variable and its ``_FILE`` twin at once is an error. A file's content is the
variable's value with one trailing new line removed; in a ``JWT_SECRETS_FILE`` blank
lines and lines starting with ``#`` are skipped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import msgspec

from multidb.files import read_secret_file

KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# RFC 7518 section 3.2: an HS256 key is at least as long as the hash.
MIN_SECRET_LENGTH = 32


class JwtKeys(msgspec.Struct, frozen=True, kw_only=True):
    """``legacy``: the secret of tokens without ``kid``; ``by_kid``: newest first."""

    legacy: str = ""
    by_kid: dict[str, str] = msgspec.field(default_factory=dict)

    def __repr__(self) -> str:
        return f"JwtKeys(kids={list(self.by_kid)}, legacy={bool(self.legacy)})"


def signing_key(legacy: str, by_kid: Mapping[str, str]) -> tuple[str | None, str] | None:
    """``(kid, secret)`` that signs new tokens: the newest ``kid``, else ``legacy``
    (``kid`` None); None when there is neither."""
    for kid, secret in by_kid.items():
        return kid, secret
    return (None, legacy) if legacy else None


def _one_of(env: Mapping[str, str], variable: str) -> tuple[str, str] | None:
    """``(where, value)`` of ``variable`` or of its ``_FILE`` twin; None when neither is set."""
    value, path = env.get(variable, ""), env.get(f"{variable}_FILE", "")
    if value and path:
        msg = f"{variable}_FILE: set either {variable} or {variable}_FILE, not both"
        raise ValueError(msg)
    if path:
        return f"{variable}_FILE", read_secret_file(f"{variable}_FILE", path)
    return (variable, value) if value else None


def parse_jwt_secrets(text: str, where: str) -> dict[str, str]:
    """``kid:secret`` entries of ``text`` (commas or new lines), newest first, checked."""
    entries: dict[str, str] = {}
    lines = [line.strip() for line in text.splitlines()]
    items = [
        item.strip()
        for line in lines
        if line and not line.startswith("#")
        for item in line.split(",")
        if item.strip()
    ]
    for number, item in enumerate(items, start=1):
        kid, colon, secret = (part.strip() for part in item.partition(":"))
        if not colon or not KEY_ID.fullmatch(kid):
            msg = (
                f"{where}: entry {number} must be 'kid:secret' with a key id of letters, "
                "digits, '.', '_' or '-' (at most 64)"
            )
            raise ValueError(msg)
        if len(secret) < MIN_SECRET_LENGTH:
            msg = f"{where}: the secret of key id {kid!r} is shorter than {MIN_SECRET_LENGTH}"
            raise ValueError(msg)
        if kid in entries:
            raise ValueError(f"{where}: key id {kid!r} appears twice")
        entries[kid] = secret
    if not entries:
        raise ValueError(f"{where}: holds no 'kid:secret' entry")
    return entries


def jwt_keys_from_env(env: Mapping[str, str]) -> JwtKeys:
    """The JWT secrets the environment configures; :class:`ValueError` naming the variable."""
    legacy = _one_of(env, "JWT_SECRET")
    several = _one_of(env, "JWT_SECRETS")
    return JwtKeys(
        legacy=legacy[1] if legacy else "",
        by_kid=parse_jwt_secrets(several[1], several[0]) if several else {},
    )
