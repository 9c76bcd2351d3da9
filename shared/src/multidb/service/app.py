"""The role-service app factory: one Litestar app per database role."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.middleware import DefineMiddleware

from multidb import auth, openapi
from multidb.engines import dispose_engines
from multidb.migrations import head_revision
from multidb.plugins import get_plugin_manager, get_roles
from multidb.request_id import RequestIdMiddleware
from multidb.router import DatabaseRouter
from multidb.service.handlers import ROUTES
from multidb.service.metrics import RoleMetrics
from multidb.service.problems import problem_details_plugin
from multidb.service.runtime import RoleRuntime, running
from multidb.settings import Settings, SettingsError, get_settings

UNAUTHENTICATED_PATHS = ["^/schema"]


def create_role_app(role: str, settings: Settings | None = None) -> Litestar:
    """A Litestar app serving ``role``'s database.

    Building the app loads the role plugins but opens no connection and reads no
    environment: settings are read (unless given) and pools created at start-up.
    """
    plugins = get_plugin_manager()
    spec = get_roles()[role]
    metrics = RoleMetrics(role)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        current = settings or get_settings()
        database = current.databases.get(role)
        if database is None:
            msg = f"role {role!r} has no database configured: set {spec.prefix}HOST"
            raise SettingsError(msg)
        # Read by Litestar on a route's first request, so the setting can arrive here.
        app.request_max_body_size = current.request_max_bytes
        app.state.authenticator = auth.Authenticator.from_settings(current)
        app.state.router = DatabaseRouter(get_roles(), current.routing)
        app.state.head_revision = head_revision(spec)
        metrics.access = current.metrics_access
        app.state.metrics = metrics
        runtime = RoleRuntime(
            spec, database, current, plugins, metrics=metrics, head=app.state.head_revision
        )
        app.state.runtime = runtime
        try:
            async with running(runtime):
                yield
        finally:
            # Engines that plugin routes opened through get_db().
            await dispose_engines()

    extra = [
        handler
        for found in plugins.hook.multidb_service_routes(role=role)
        for handler in found or ()
    ]
    handlers: list[object] = list(ROUTES)
    if extra:
        # A Router takes no ``responses``: a plugin's handlers document their own answers.
        handlers.append(
            Router(
                path="/",
                route_handlers=extra,
                opt=auth.needs(auth.READ),
                security=openapi.SECURITY,
            )
        )
    return Litestar(
        route_handlers=handlers,  # type: ignore[arg-type]
        lifespan=[lifespan],
        middleware=[
            metrics.requests.middleware,
            RequestIdMiddleware(),
            DefineMiddleware(auth.AuthenticationMiddleware, exclude=UNAUTHENTICATED_PATHS),
        ],
        plugins=[problem_details_plugin()],
        # Litestar's default config would replace the root handler of multidb.logs.
        logging_config=None,
        openapi_config=openapi.config(f"multidb {role} service"),
        # The database a route's scope is for unless it names another (multidb.auth.needs).
        state=State({"scope_role": role}),
    )
