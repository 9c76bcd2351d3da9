"""The OpenAPI documents of the gateway and the services say exactly what they answer.

One place for what both share: the two security schemes (bearer JWT, ``X-API-Key``),
the problem-details body every error has (``application/problem+json``), the statuses
each kind of route can answer, and the finishing touches that need the configured roles.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import msgspec
from litestar import Litestar, Response, route
from litestar.enums import ParamType
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    Components,
    Operation,
    Parameter,
    RequestBody,
    Schema,
    SecurityRequirement,
    SecurityScheme,
)
from litestar.openapi.spec import OpenAPIMediaType as MediaType

from multidb.auth import API_KEY_HEADER, needs
from multidb.wire import ExecuteRequest

PROBLEM = "application/problem+json"
BEARER = "BearerToken"
API_KEY = "ApiKey"
SECURITY: list[SecurityRequirement] = [{BEARER: []}, {API_KEY: []}]

WHY = {
    400: "malformed input, or an SQL error (with `sqlstate`)",
    401: "missing, invalid or expired credentials",
    403: "a scope the credentials do not hold (on this database), or a plugin's refusal",
    404: "no such database role is configured (or no such backup)",
    409: "another backup operation of this role is running, or the backup is not complete",
    413: "the request body is larger than MULTI_DB_REQUEST_MAX_BYTES (for ingestion: "
    "MULTI_DB_INGEST_MAX_BYTES), or a batch holds more than MULTI_DB_INGEST_MAX_RECORDS",
    415: "the Content-Type is neither application/json nor application/x-ndjson",
    429: "this caller already runs as many statements as it may (see Retry-After)",
    502: "a role service answered something unusable",
    503: "the database is unavailable, or every connection stayed busy (see Retry-After)",
    504: "the statement ran longer than its timeout, or the service did not answer",
}


class Problem(msgspec.Struct, kw_only=True):
    """RFC 9457 problem details, as every error of this API is answered."""

    status: int
    title: str
    detail: str
    type: str | None = None
    sqlstate: str | None = None
    hint: str | None = None
    position: str | None = None
    errors: list[dict[str, Any]] | None = None


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    """``responses=`` for a route that may answer ``statuses`` with a problem."""
    return {
        status: ResponseSpec(data_container=Problem, media_type=PROBLEM, description=WHY[status])
        for status in statuses
    }


def protected(
    scope: str | None,
    *statuses: int,
    answers: dict[int, ResponseSpec] | None = None,
    database: str | None = None,
) -> dict[str, Any]:
    """Route keyword arguments of an authenticated route that needs ``scope``.

    Declares the scope (checked by the authentication middleware; None when the handler
    checks it itself) and which ``database`` it is for (see :func:`multidb.auth.needs`),
    the security schemes, and what else it may answer: a problem for 401, 403 and each of
    ``statuses``, and ``answers`` (say, a 503 with the same body).
    """
    documented = problems(401, 403, *statuses)
    documented.update(answers or {})
    opt = needs(scope, database) if scope else {"exclude_from_auth": True}
    return {"opt": opt, "security": SECURITY, "responses": documented}


def config(title: str) -> OpenAPIConfig:
    return OpenAPIConfig(
        title=title,
        version="0.1.0",
        path="/schema",
        components=Components(
            security_schemes={
                BEARER: SecurityScheme(
                    type="http",
                    scheme="bearer",
                    bearer_format="JWT",
                    description=(
                        "a token from `multidb token` (HS256; `sub`, `scopes`, `exp`; "
                        "`kid` in the header names its secret in JWT_SECRETS). A scope is "
                        "`<action>` (every database) or `<action>:<role>` (one); actions "
                        "`db:read`, `db:execute`, `db:write`, `db:admin`, `ingest:write`"
                    ),
                ),
                API_KEY: SecurityScheme(
                    type="apiKey",
                    name=API_KEY_HEADER,
                    security_scheme_in="header",
                    description=(
                        "a key from API_KEYS (holds every scope), or one made by "
                        "`multidb key create` (MULTI_DB_API_KEYS_FILE: holds its own scopes)"
                    ),
                ),
            }
        ),
    )


def _inline_schema(struct: type[msgspec.Struct]) -> Schema:
    # msgspec's own JSON schema of the struct: the one the decoder enforces.
    _, components = msgspec.json.schema_components([struct])
    return cast(Schema, components[struct.__name__])


@dataclass
class RawExecuteBody(Operation):
    """The operation of a handler that reads the execute body itself (to audit it even
    when it is malformed): documents the body the handler accepts."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            content={"application/json": MediaType(schema=_inline_schema(ExecuteRequest))},
        )


def name_the_roles(app: Litestar, roles: Iterable[str], parameter: str = "name") -> None:
    """Make the path parameter ``{parameter}`` of every path an enum of the configured ``roles``.

    Called at start-up, once settings are read: the document is built on first use and
    kept, so the enum is in it from the first request on.
    """
    names = list(roles)
    for path in (app.openapi_schema.paths or {}).values():
        for method in ("get", "post"):
            operation: Operation | None = getattr(path, method)
            for found in (operation.parameters or []) if operation else []:
                if (
                    isinstance(found, Parameter)
                    and found.name == parameter
                    and found.param_in == ParamType.PATH  # a query's ?name= is something else
                    and isinstance(found.schema, Schema)
                ):
                    found.schema.enum = names


def with_options(handlers: Sequence[Any]) -> list[Any]:
    """``handlers``, each path that several handlers serve (``GET`` and ``POST``) led by
    an ``OPTIONS`` handler whose ``Allow`` lists all their methods.

    Litestar's own ``OPTIONS`` handler is made with the route of the first handler
    registered on a path and keeps answering that route's methods only
    (``Allow: GET, OPTIONS`` where ``POST`` is served too). One registered first, as here,
    is kept instead. Like Litestar's, it needs no credentials and is not documented.
    """
    methods: dict[str, set[str]] = {}
    for handler in handlers:
        if isinstance(handler, HTTPRouteHandler):
            for path in handler.paths:
                methods.setdefault(path, set()).update(handler.http_methods)
    shared = [_options(path, found) for path, found in methods.items() if len(found) > 1]
    return [*shared, *handlers]


def _options(path: str, methods: Iterable[str]) -> HTTPRouteHandler:
    allow = ", ".join(sorted({*methods, "OPTIONS"}))

    def options() -> Response[None]:
        return Response(None, status_code=204, headers={"Allow": allow})

    return route(
        path,
        http_method=["OPTIONS"],
        name=f"options {path}",
        include_in_schema=False,
        sync_to_thread=False,
        opt={"exclude_from_auth": True},
    )(options)
