"""The gateway's own credential for the calls it makes on its behalf (monitor, audit).

Calls made for a client carry the client's credentials instead, so every service checks
the caller itself. The gateway mints short-lived tokens signed with
``MULTI_DB_SERVICE_SECRET`` (or, without it, ``JWT_SECRET``); every service accepts tokens
signed with either. Without a secret it presents the first plain key of ``API_KEYS``: a key
stored as ``sha256:<hex>`` cannot be presented, so a gateway with only hashed keys and no
secret has no credential at all, and :func:`require_credential` stops its start-up.
"""

from __future__ import annotations

import time

from multidb.auth import ADMIN, API_KEY_HEADER, READ, internal_signing_key, mint_token
from multidb.settings import Settings, SettingsError

SUBJECT = "multidb-gateway"
LIFETIME_S = 900
RENEW_BEFORE_S = 120
HASHED_PREFIX = "sha256:"


def _plain_key(settings: Settings) -> str:
    return next((key for key in settings.api_keys if not key.startswith(HASHED_PREFIX)), "")


def require_credential(settings: Settings) -> None:
    """Raise :class:`SettingsError` when the gateway could not authenticate to any service."""
    if not (internal_signing_key(settings) or _plain_key(settings)):
        msg = (
            "MULTI_DB_SERVICE_SECRET: the gateway has no credential for its calls to the "
            "services; set MULTI_DB_SERVICE_SECRET (or JWT_SECRET or JWT_SECRETS, or a plain "
            "key in API_KEYS: hashed keys cannot be presented)"
        )
        raise SettingsError(msg)


class GatewayCredential:
    def __init__(self, settings: Settings) -> None:
        self._key = internal_signing_key(settings)
        self._api_key = _plain_key(settings)
        self._headers: dict[str, str] = {}
        self._expires = 0.0

    def headers(self) -> dict[str, str]:
        """Headers that authenticate the gateway to a service (renewed before they expire)."""
        if self._key is None:
            return {API_KEY_HEADER: self._api_key} if self._api_key else {}
        now = time.time()
        if now > self._expires - RENEW_BEFORE_S:
            kid, secret = self._key
            token = mint_token(secret, SUBJECT, [READ, ADMIN], LIFETIME_S, kid=kid)
            self._headers = {"Authorization": f"Bearer {token}"}
            self._expires = now + LIFETIME_S
        return self._headers
