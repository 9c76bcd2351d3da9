"""The gateway's credential for its own calls: one that works whatever form API_KEYS takes."""

from __future__ import annotations

import hashlib

import pytest

from multidb.auth import Authenticator
from multidb.plugins import get_roles
from multidb.settings import SettingsError
from multidb_gateway.credentials import GatewayCredential
from multidb_gateway.settings import load_gateway_settings

ROLES = get_roles()
KEY = "a-plain-key-0123456789"
HASHED = "sha256:" + hashlib.sha256(KEY.encode()).hexdigest()
INTERNAL = "internal-service-secret-of-at-least-32-characters"


def _authenticates(env: dict[str, str]) -> str:
    """The method by which a service configured like ``env`` accepts the gateway."""
    settings = load_gateway_settings(env, ROLES).core
    headers = GatewayCredential(settings).headers()
    service = Authenticator(settings.jwt_secret, settings.api_keys, settings.service_secret)
    return service.authenticate(headers.get("Authorization"), headers.get("X-API-Key")).method


def test_hashed_keys_with_the_service_secret_authenticate_by_token() -> None:
    assert _authenticates({"API_KEYS": HASHED, "MULTI_DB_SERVICE_SECRET": INTERNAL}) == "jwt"


def test_the_jwt_secret_stands_in_for_the_service_secret() -> None:
    assert _authenticates({"API_KEYS": HASHED, "JWT_SECRET": "j" * 40}) == "jwt"


def test_a_plain_key_serves_when_there_is_no_secret() -> None:
    assert _authenticates({"API_KEYS": f"{HASHED},{KEY}"}) == "api_key"


@pytest.mark.parametrize("keys", ["", HASHED])
def test_no_usable_credential_stops_start_up_naming_the_variables(keys: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_gateway_settings({"API_KEYS": keys}, ROLES)
    message = str(caught.value)
    assert message.startswith("MULTI_DB_SERVICE_SECRET: the gateway has no credential")
    for variable in ("JWT_SECRET", "API_KEYS"):
        assert variable in message
