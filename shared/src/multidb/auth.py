"""Who is calling and what they may do: JWT (HS256) or API key, and scopes per route.

Every handler declares the scope it needs in its ``opt`` (:func:`needs`). Scopes:
``db:read`` (health, stats, models, configured), ``db:execute`` (run a query),
``db:write`` (run it outside a read-only transaction), ``db:admin`` (connection details),
``ingest:write`` (send log records and events), each for every database or, as
``<action>:<role>`` (``db:read:analytics``), for one (:mod:`multidb.scopes`).
An API key from ``API_KEYS`` holds every scope; a key of ``MULTI_DB_API_KEYS_FILE`` holds
its entry's scopes (:mod:`multidb.api_keys`). Keys may be stored as ``sha256:<hex>``;
they are always compared in constant time. Tokens are chosen a secret by their ``kid``
(:mod:`multidb.jwt_keys`). Missing, invalid or expired credentials are 401; a missing
scope is 403.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt
import msgspec
from litestar.connection import ASGIConnection
from litestar.exceptions import (
    NotAuthorizedException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.middleware.authentication import (
    AbstractAuthenticationMiddleware,
    AuthenticationResult,
)

from multidb import scopes as _scopes_module
from multidb.api_keys import KeysFile, NamedKey
from multidb.jwt_keys import signing_key
from multidb.scopes import describe_needed, known_scopes, unknown_scopes

if TYPE_CHECKING:
    from multidb.settings import Settings

READ = _scopes_module.READ
EXECUTE = _scopes_module.EXECUTE
WRITE = _scopes_module.WRITE
ADMIN = _scopes_module.ADMIN
INGEST = _scopes_module.INGEST
# What a key of API_KEYS holds: every action on every database.
ALL_SCOPES = _scopes_module.ACTIONS
JWT_ALGORITHM = "HS256"
API_KEY_HEADER = "X-API-Key"
SCOPE_OPT = "scope"
DATABASE_OPT = "scope_database"
# Where a route finds the database its scope is for (see :func:`needs`).
ANY_DATABASE = "any"
# Routes whose data spans every database (the audit trail, the stats samples): the bare scope.
EVERY_DATABASE = "every"
PATH_PREFIX = "path:"
QUERY_PREFIX = "query:"
# A route of one role's data whose path names no database (``/database/logging/logs``).
ROLE_PREFIX = "role:"


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """An authenticated caller: who (``subject``), how (``method``) and what they may do.

    ``scopes`` holds what was granted, as granted: ``db:read`` (every database) and
    ``db:read:analytics`` (one) alike.
    """

    subject: str
    method: str
    scopes: frozenset[str]

    def allows(self, action_scope: str, role: str | None) -> bool:
        """``action_scope`` (``db:read``) on ``role``'s database; with ``role`` None, on
        every database (the bare scope)."""
        if action_scope in self.scopes:
            return True
        return role is not None and f"{action_scope}:{role}" in self.scopes

    def roles_allowed(self, action_scope: str, roles: Iterable[str]) -> list[str]:
        """The entries of ``roles`` whose database ``action_scope`` is allowed on, in order."""
        return [role for role in roles if self.allows(action_scope, role)]

    def allows_somewhere(self, action_scope: str) -> bool:
        """``action_scope`` on at least one database (any role, or all)."""
        prefix = f"{action_scope}:"
        return action_scope in self.scopes or any(s.startswith(prefix) for s in self.scopes)


class Authenticator:
    """Checks credentials against the JWT secrets, ``API_KEYS`` and the keys file.

    A token without ``kid`` signed with ``JWT_SECRET`` or ``MULTI_DB_SERVICE_SECRET`` is
    accepted: ``JWT_SECRET`` signs the tokens of people and clients,
    ``MULTI_DB_SERVICE_SECRET`` those the gateway mints for its own calls to the services,
    which must work even when ``API_KEYS`` holds only hashes. When ``jwt_keys``
    (``JWT_SECRETS``) is configured, a token with a ``kid`` is checked against that entry
    only, and one whose ``kid`` is in no entry is refused.
    """

    def __init__(
        self,
        jwt_secret: str,
        api_keys: Iterable[str],
        service_secret: str = "",
        *,
        jwt_keys: Mapping[str, str] | None = None,
        keys_file: KeysFile | None = None,
    ) -> None:
        self._secrets = [secret for secret in (jwt_secret, service_secret) if secret]
        self._by_kid = dict(jwt_keys or {})
        self._plain: list[bytes] = []
        self._hashed: list[bytes] = []
        for key in api_keys:
            if key.startswith("sha256:"):
                self._hashed.append(bytes.fromhex(key.removeprefix("sha256:")))
            else:
                self._plain.append(key.encode())
        self._keys_file = keys_file
        self._named_from: tuple[NamedKey, ...] = ()
        self._named: list[tuple[bytes, Principal]] = []

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        """The authenticator of a process with ``settings`` (reads the keys file, if any)."""
        keys_file = KeysFile(Path(settings.api_keys_file)) if settings.api_keys_file else None
        return cls(
            settings.jwt_secret,
            settings.api_keys,
            settings.service_secret,
            jwt_keys=settings.jwt_keys,
            keys_file=keys_file,
        )

    def _named_keys(self) -> list[tuple[bytes, Principal]]:
        """``(digest, principal)`` of every key of the keys file, as it is now."""
        if self._keys_file is None:
            return self._named
        current = self._keys_file.keys()
        if current is not self._named_from:
            self._named = [
                (
                    bytes.fromhex(key.sha256),
                    Principal(
                        subject=f"api-key:{key.name}",
                        method="api_key",
                        scopes=frozenset(key.scopes),
                    ),
                )
                for key in current
            ]
            self._named_from = current
        return self._named

    def from_api_key(self, presented: str) -> Principal:
        given = presented.encode()
        digest = hashlib.sha256(given).digest()
        # Every stored key is compared, match or not, so timing says nothing about which.
        matched = False
        for key in self._plain:
            matched |= hmac.compare_digest(key, given)
        for key in self._hashed:
            matched |= hmac.compare_digest(key, digest)
        named: Principal | None = None
        for stored, principal in self._named_keys():
            if hmac.compare_digest(stored, digest):
                named = principal
        if named is not None:
            return named
        if not matched:
            raise NotAuthorizedException("invalid API key")
        return Principal(
            subject=f"api-key:{digest.hex()[:12]}", method="api_key", scopes=ALL_SCOPES
        )

    def from_jwt(self, token: str) -> Principal:
        if not self._secrets and not self._by_kid:
            msg = (
                "JWT authentication is not configured "
                "(no JWT_SECRET, JWT_SECRETS or MULTI_DB_SERVICE_SECRET)"
            )
            raise NotAuthorizedException(msg)
        try:
            claims = self._claims(token)
        except jwt.ExpiredSignatureError:
            raise NotAuthorizedException("token expired") from None
        except jwt.InvalidTokenError as exc:
            raise NotAuthorizedException(f"invalid token: {exc}") from None
        return Principal(subject=str(claims["sub"]), method="jwt", scopes=_scopes(claims))

    def _claims(self, token: str) -> dict[str, Any]:
        kid = jwt.get_unverified_header(token).get("kid")
        # Without JWT_SECRETS a kid means nothing here, as before rotation existed: the
        # token is checked against JWT_SECRET (and the service secret) whatever it says.
        if kid is not None and self._by_kid:
            secret = self._by_kid.get(kid) if isinstance(kid, str) else None
            if secret is None:
                shown = repr(kid)[:70]
                msg = (
                    f"unknown key id (kid) {shown}: no secret of JWT_SECRETS has it "
                    "(its secret was removed, or the token comes from elsewhere)"
                )
                raise NotAuthorizedException(f"invalid token: {msg}")
            return _decode(token, secret)
        if not self._secrets:
            msg = "invalid token: it has no key id (kid), and no JWT_SECRET is configured"
            raise NotAuthorizedException(msg)
        *others, last = self._secrets
        for secret in others:
            with contextlib.suppress(jwt.InvalidSignatureError):
                return _decode(token, secret)
        return _decode(token, last)

    def authenticate(self, authorization: str | None, api_key: str | None) -> Principal:
        if api_key and authorization:
            # Checking one and ignoring the other would accept a request whose other
            # credential is wrong: refuse the ambiguity instead.
            msg = f"send one credential, 'Authorization' or '{API_KEY_HEADER}', not both"
            raise NotAuthorizedException(msg)
        if api_key:
            return self.from_api_key(api_key)
        if authorization:
            kind, _, token = authorization.partition(" ")
            if kind.lower() != "bearer" or not token.strip():
                raise NotAuthorizedException("Authorization must be 'Bearer <token>'")
            return self.from_jwt(token.strip())
        msg = f"authentication required: send 'Authorization: Bearer <JWT>' or '{API_KEY_HEADER}'"
        raise NotAuthorizedException(msg)


def _decode(token: str, secret: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(
        token, secret, algorithms=[JWT_ALGORITHM], options={"require": ["exp", "sub"]}
    )
    return claims


def _scopes(claims: dict[str, Any]) -> frozenset[str]:
    raw = claims.get("scopes", claims.get("scope", ()))
    items = raw.split() if isinstance(raw, str) else raw
    if not isinstance(items, list | tuple):
        raise NotAuthorizedException("invalid token: 'scopes' must be a list or a string")
    return known_scopes(str(item) for item in items)


def internal_signing_key(settings: Settings) -> tuple[str | None, str] | None:
    """``(kid, secret)`` that signs the tokens multidb mints for its own calls between
    services: ``MULTI_DB_SERVICE_SECRET``, else the newest JWT secret; None without any."""
    if settings.service_secret:
        return None, settings.service_secret
    return signing_key(settings.jwt_secret, settings.jwt_keys)


def mint_token(
    secret: str,
    subject: str,
    scopes: Iterable[str],
    lifetime_s: int = 3600,
    *,
    kid: str | None = None,
) -> str:
    """A signed JWT for ``subject`` holding ``scopes``, valid for ``lifetime_s`` seconds.

    ``scopes`` may name databases (``db:execute:analytics``); ``kid`` goes in the header
    (the key id of ``secret`` in ``JWT_SECRETS``).
    """
    scopes = list(scopes)
    unknown = unknown_scopes(scopes)
    if unknown:
        msg = f"unknown scope(s): {', '.join(unknown)}"
        raise ValueError(msg)
    now = int(time.time())
    claims = {"sub": subject, "scopes": sorted(set(scopes)), "iat": now, "exp": now + lifetime_s}
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(claims, secret, algorithm=JWT_ALGORITHM, headers=headers)


class AuthenticationMiddleware(AbstractAuthenticationMiddleware):
    """Authenticates every request; the app's ``state.authenticator`` does the checking."""

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        authenticator: Authenticator = connection.app.state.authenticator
        principal = authenticator.authenticate(
            connection.headers.get("authorization"), connection.headers.get(API_KEY_HEADER)
        )
        opt = connection.route_handler.opt
        required = opt.get(SCOPE_OPT)
        if required:
            where = opt.get(DATABASE_OPT)
            if where == ANY_DATABASE:
                if not principal.allows_somewhere(required):
                    msg = f"this needs the '{required}' scope, on at least one database"
                    raise PermissionDeniedException(msg)
            else:
                require(principal, required, _database_of(connection, where))
        return AuthenticationResult(user=principal, auth=principal)


def _database_of(connection: ASGIConnection[Any, Any, Any, Any], where: str | None) -> str | None:
    """The role a route's scope is for: named by a path or query parameter, else the app's
    own (``state.scope_role``: a role service's role; none on the gateway)."""
    if where is None:
        role: str | None = getattr(connection.app.state, "scope_role", None)
        return role
    if where == EVERY_DATABASE:
        return None
    if where.startswith(ROLE_PREFIX):
        return where.removeprefix(ROLE_PREFIX)
    if where.startswith(PATH_PREFIX):
        value = connection.path_params.get(where.removeprefix(PATH_PREFIX))
    else:
        name = where.removeprefix(QUERY_PREFIX)
        values = connection.query_params.getall(name, [])
        if len(values) > 1:
            # The check would see one value and the handler another: refuse both.
            raise ValidationException(f"give '{name}' once (it was given {len(values)} times)")
        value = values[0] if values else None
    # A request that names no database needs the scope on every database.
    return str(value) if value else None


def require(principal: Principal, action_scope: str, role: str | None) -> None:
    """Refuse (403) unless ``principal`` holds ``action_scope`` on ``role``'s database (on
    every database when ``role`` is None). Any action, ``ingest:write`` included."""
    if not principal.allows(action_scope, role):
        where = "" if role is None else f" on database {role!r}"
        msg = f"this needs the {describe_needed(action_scope, role)} scope{where}"
        raise PermissionDeniedException(msg)


def check_write(principal: Principal, read_only: bool, role: str) -> None:
    """Refuse (403) an execute on ``role`` that asks to write without ``db:write`` there."""
    if not read_only and not principal.allows(WRITE, role):
        msg = f"read_only: false needs the {describe_needed(WRITE, role)} scope"
        raise PermissionDeniedException(msg)


def needs(scope: str, database: str | None = None) -> dict[str, str]:
    """Route ``opt`` declaring the scope a handler needs: ``@get(..., opt=needs(READ))``.

    ``database`` says which database the scope is for: ``"path:name"`` or
    ``"query:database"`` (that parameter names the role), ``"role:logging"`` (that role,
    for a route of one role's data on the gateway), :data:`ANY_DATABASE` (the
    handler shows only the databases the caller may see, and refuses a caller with none),
    :data:`EVERY_DATABASE` (the data spans every database: the bare scope, on a role service
    too), or None: the app's own role on a role service, every database on the gateway.
    A query parameter given twice is a 400 (the check and the handler must see one value).
    The authentication middleware checks it right after authenticating. (A declarative
    ``opt`` rather than a Litestar guard: guards copy the route handler on every call,
    measured at ~6% of a health check's CPU.)
    """
    opt = {SCOPE_OPT: scope}
    if database is not None:
        opt[DATABASE_OPT] = database
    return opt
