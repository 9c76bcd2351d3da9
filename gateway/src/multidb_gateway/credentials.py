"""The gateway's own credential for the calls it makes on its behalf (monitor, audit).

Calls made for a client carry the client's credentials instead, so every service checks
the caller itself. With ``JWT_SECRET`` the gateway mints short-lived tokens; otherwise it
presents the first of ``API_KEYS``.
"""

from __future__ import annotations

import time

from multidb.auth import ADMIN, API_KEY_HEADER, READ, mint_token
from multidb.settings import Settings

SUBJECT = "multidb-gateway"
LIFETIME_S = 900
RENEW_BEFORE_S = 120


class GatewayCredential:
    def __init__(self, settings: Settings) -> None:
        self._secret = settings.jwt_secret
        self._api_key = settings.api_keys[0] if settings.api_keys else ""
        self._headers: dict[str, str] = {}
        self._expires = 0.0

    def headers(self) -> dict[str, str]:
        """Headers that authenticate the gateway to a service (renewed before they expire)."""
        if not self._secret:
            return {API_KEY_HEADER: self._api_key} if self._api_key else {}
        now = time.time()
        if now > self._expires - RENEW_BEFORE_S:
            token = mint_token(self._secret, SUBJECT, [READ, ADMIN], LIFETIME_S)
            self._headers = {"Authorization": f"Bearer {token}"}
            self._expires = now + LIFETIME_S
        return self._headers
