"""Which database a model lives in.

Precedence, strongest first: ``add_model_to_database``; ``MULTI_DB_ROUTING``; the model's
``__database__`` attribute; the role that declares the model; ``default``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

from multidb.plugins import get_roles
from multidb.roles import RoleSpec
from multidb.settings import get_settings

DEFAULT_DATABASE = "default"


class UnknownDatabaseError(LookupError):
    """A database name that no installed role declares."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"unknown database {name!r}; known: {', '.join(known) or 'none'}")
        self.name = name


class DatabaseRouter:
    """Routes models (classes or class names) to database roles."""

    def __init__(self, roles: Mapping[str, RoleSpec], routing: Mapping[str, str]) -> None:
        self._roles = dict(roles)
        self._owner = {
            model.__name__: name for name, spec in roles.items() for model in spec.models
        }
        self._routing = dict(routing)
        self._manual: dict[str, str] = {}

    def _check(self, name: str) -> str:
        if name not in self._roles:
            raise UnknownDatabaseError(name, list(self._roles))
        return name

    def add_model_to_database(self, model: type | str, database: str) -> None:
        """Route ``model`` to ``database`` from now on (the strongest rule)."""
        key = model if isinstance(model, str) else model.__name__
        self._manual[key] = self._check(database)

    def get_database_for_model(self, model: type | str) -> str:
        """The role ``model`` is routed to."""
        key = model if isinstance(model, str) else model.__name__
        for table in (self._manual, self._routing):
            if key in table:
                return table[key]
        declared = None if isinstance(model, str) else getattr(model, "__database__", None)
        if isinstance(declared, str):
            return self._check(declared)
        return self._owner.get(key, DEFAULT_DATABASE)

    def get_models_for_database(self, database: str) -> list[str]:
        """Names of the models routed to ``database``, declared ones first."""
        self._check(database)
        names = [*self._owner, *self._routing, *self._manual]
        seen = dict.fromkeys(names)
        return [name for name in seen if self.get_database_for_model(name) == database]

    def models_by_database(self) -> dict[str, list[str]]:
        return {name: self.get_models_for_database(name) for name in self._roles}


@functools.cache
def get_database_router() -> DatabaseRouter:
    """The process-wide router, built from the installed roles and ``MULTI_DB_ROUTING``."""
    return DatabaseRouter(get_roles(), get_settings().routing)
