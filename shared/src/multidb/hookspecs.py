"""Every multidb hook, in one place.

Role plugins are modules (or objects) registered through the ``multidb.roles`` entry-point
group; tools that are not roles (the development stack) through ``multidb.extensions``.
Each implements some of these hooks with ``@multidb.hookimpl``. A hook
implementation may accept only some of the arguments named here. Hooks that get a
``role`` argument are called for every plugin: an implementation answers for its own
role and returns ``None`` for the others.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Awaitable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import asyncpg
    from litestar.types import ControllerRouterHandler

    from multidb.auth import Principal
    from multidb.jobs import BackgroundJob
    from multidb.roles import RoleSpec
    from multidb.service.runtime import RoleRuntime
    from multidb.settings import Settings
    from multidb.wire import ExecuteVote

hookspec = pluggy.HookspecMarker("multidb")

Detail = Mapping[str, Any] | Awaitable[Mapping[str, Any] | None] | None


@hookspec
def multidb_role_spec() -> RoleSpec | None:
    """Declare a database role.

    Called once when the plugin manager is built. Return the role's :class:`RoleSpec`
    (name, database, models, metadata, migrations, pool defaults, port). Two plugins
    declaring the same role name stop start-up with an error naming both.
    """


@hookspec
def multidb_plugin_settings(env: Mapping[str, str]) -> Mapping[str, Any] | None:
    """Parse a plugin's own settings (variables the core does not know).

    Called by :func:`multidb.settings.load_settings` each time settings are read, so a
    service, the gateway and the command line all read them once, from the same
    environment as the rest. Return ``{name: settings}`` (frozen Structs, say), kept in
    ``Settings.plugins[name]``, or ``None``. Raise :class:`multidb.errors.SettingsError`
    with one line naming the variable for a bad value: it stops start-up as any bad setting
    does.
    """


@hookspec
def multidb_service_resources(
    role: str, runtime: RoleRuntime
) -> AbstractAsyncContextManager[Any] | None:
    """Open what a role's routes, jobs and detail hooks share while its service runs.

    Called once when the role's service starts, before its background jobs start. Return
    an async context manager (or ``None``): it is entered then, and exited when the
    service stops, after its jobs stopped. Keep what it opens on ``runtime.extensions``
    (a dict, keyed by a name of the plugin's own), where handlers (``state.runtime``),
    jobs and detail hooks (``runtime``) find it.
    """


@hookspec
def multidb_health_detail(
    role: str, connection: asyncpg.Connection, runtime: RoleRuntime
) -> Detail:
    """Add fields to a role's health answer.

    Called by the role's service on every ``GET /health`` once the database answered.
    ``connection`` is an open asyncpg connection to the role's database (do not keep it,
    and leave no session state on it: the pool skips its reset for speed); ``runtime``
    is the role's :class:`~multidb.service.runtime.RoleRuntime`. The whole check, detail
    included, runs within ``MULTI_DB_HEALTH_TIMEOUT_MS``.
    Return a mapping (or an awaitable of one) whose keys are merged into the answer under
    ``detail``, or ``None``.
    """


@hookspec
def multidb_stats_detail(role: str, connection: asyncpg.Connection, runtime: RoleRuntime) -> Detail:
    """Add fields to a role's stats answer.

    Called by the role's service on every ``GET /stats``; same contract as
    ``multidb_health_detail``.
    """


@hookspec
def multidb_service_routes(role: str) -> Sequence[ControllerRouterHandler] | None:
    """Add routes to a role's own service.

    Called once when the role's service app is built. Return Litestar route handlers,
    controllers or routers; they are mounted at the service's root, need authentication,
    and need the ``db:read`` scope unless they declare another with
    ``opt=multidb.auth.needs(...)``; a scope is checked for the service's own role
    (``db:read`` or ``db:read:<role>``) unless ``needs(scope, database=...)`` names the
    parameter that says which database the route is about. Handlers may take
    ``state: State``: ``state.runtime`` is the role's
    :class:`~multidb.service.runtime.RoleRuntime` (its ``admin`` asyncpg pool runs fixed
    statements; leave no session state behind on its connections).
    """


@hookspec
def multidb_execute_vote(
    role: str, query: str, params: Mapping[str, Any], read_only: bool, principal: Principal
) -> ExecuteVote | None:
    """Allow or refuse an execute request before it reaches the database.

    Called for every ``POST /execute`` after authentication and before the statement is
    prepared. Return ``ExecuteVote(allow=False, reason=...)`` to refuse (the caller gets
    403 with the reason), ``ExecuteVote(allow=True)`` or ``None`` to let it pass. Any
    refusal wins. A vote is advice on top of the database's own guards, never instead.
    """


@hookspec
def multidb_background_jobs(role: str, settings: Settings) -> Sequence[BackgroundJob] | None:
    """Declare background jobs of a role's service (retention, backups, partition upkeep).

    Called once when the role's service starts, with the ``settings`` it runs with.
    Return :class:`~multidb.jobs.BackgroundJob` entries (or ``None``): each
    ``run(runtime, connection)`` is awaited every ``interval_s`` seconds for as long as
    the service runs, by one replica of the role at a time (a PostgreSQL advisory lock,
    held by the transaction ``connection`` is in, named after the role and the job: a job
    must not take that same lock itself). A job that raises or overruns its ``timeout_s``
    is rolled back, logged and counted in the service's ``/readyz`` (``jobs``), and runs
    again at its next interval: it never takes the service down. ``runtime`` is the role's
    :class:`~multidb.service.runtime.RoleRuntime` (``runtime.settings`` holds the settings).
    """


@hookspec
def multidb_rows_arrived(role: str, connection: asyncpg.Connection) -> Awaitable[None] | None:
    """Bring a role's derived data up to date after rows arrived in bulk, not through its
    service (``multidb split`` copying a monolith's tables in).

    Called once per role the rows went to, after they were copied and verified, with a
    connection to the role's database (the role's administrative login). Return ``None``
    or an awaitable; the analytics role rebuilds its event rollups here.
    """


@hookspec
def multidb_cli_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add subcommands to the ``multidb`` command line.

    Called once each time the command line's parser is built, before arguments are parsed.
    Each added parser sets ``run`` (``parser.set_defaults(run=...)``) to a function taking
    the parsed arguments and returning the exit code. The development stack adds ``up``;
    a role may add the commands that operate its own data.
    """


@hookspec(firstresult=True)
def multidb_cli_environment(
    resources: contextlib.ExitStack, start_database: bool
) -> Mapping[str, str] | None:
    """Variables a command falls back on when the environment names no database server.

    Called by the ``multidb`` commands that need a database or credentials (``migrate``,
    ``health``, ``token``, ``roles``) when the environment names no role's host.
    The development stack answers with its embedded server's connection variables and its
    generated credentials (``API_KEYS``, ``JWT_SECRET``), or ``None`` when it was never
    started. With ``start_database`` it starts the embedded server if it is stopped and
    registers the stop on ``resources``, so the command leaves it as it found it. What the
    environment sets always wins over what this returns.
    """
