"""The gateway app factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.middleware import DefineMiddleware

from multidb import auth, openapi
from multidb.plugins import get_roles
from multidb.request_id import RequestIdMiddleware
from multidb.router import DatabaseRouter
from multidb.service.problems import problem_details_plugin
from multidb_gateway.handlers import ROUTES
from multidb_gateway.metrics import GatewayMetrics
from multidb_gateway.runtime import GatewayRuntime
from multidb_gateway.settings import GatewaySettings, get_gateway_settings


def create_gateway_app(settings: GatewaySettings | None = None) -> Litestar:
    """The public ``/database`` API. Building it opens nothing; start-up does."""
    metrics = GatewayMetrics()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        current = settings or get_gateway_settings()
        runtime = GatewayRuntime(
            current, DatabaseRouter(get_roles(), current.core.routing), metrics
        )
        app.state.metrics = metrics
        # Read by Litestar on a route's first request, so the setting can arrive here.
        app.request_max_body_size = current.core.request_max_bytes
        openapi.name_the_roles(app, runtime.roles)
        app.state.authenticator = runtime.authenticator
        app.state.gateway = runtime
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    return Litestar(
        route_handlers=ROUTES,
        lifespan=[lifespan],
        middleware=[
            metrics.requests.middleware,
            RequestIdMiddleware(),
            DefineMiddleware(
                auth.AuthenticationMiddleware, exclude=["^/schema", "^/dashboard(/|$)"]
            ),
        ],
        plugins=[problem_details_plugin()],
        # Litestar's default config would replace the root handler of multidb.logs.
        logging_config=None,
        openapi_config=openapi.config("multidb gateway"),
    )
