"""What a scope is: an action on every database, or on one database.

A scope is ``<action>`` (``db:read``: every database) or ``<action>:<role>``
(``db:read:analytics``: that database only). The actions are :data:`ACTIONS`:
``db:read``, ``db:execute``, ``db:write``, ``db:admin`` and ``ingest:write`` (send log
records and events to a role's ingestion API), all checked the same way. An action grants
nothing beyond itself: ``db:write`` does not imply ``db:execute``, nor ``ingest:write``
``db:read``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

READ = "db:read"
EXECUTE = "db:execute"
WRITE = "db:write"
ADMIN = "db:admin"
INGEST = "ingest:write"
ACTIONS = frozenset({READ, EXECUTE, WRITE, ADMIN, INGEST})
# A role's name as a scope may spell it (the installed roles are checked by the CLI).
ROLE_NAME = re.compile(r"[A-Za-z0-9_-]{1,63}")


def parse_scope(scope: str) -> tuple[str, str | None] | None:
    """``(action, role)`` of ``scope`` (``role`` None for every database); None if malformed."""
    if scope in ACTIONS:
        return scope, None
    action, _, role = scope.rpartition(":")
    if action in ACTIONS and ROLE_NAME.fullmatch(role):
        return action, role
    return None


def unknown_scopes(scopes: Iterable[str]) -> list[str]:
    """The entries of ``scopes`` that are not scopes, sorted."""
    return sorted({scope for scope in scopes if parse_scope(scope) is None})


def known_scopes(scopes: Iterable[str]) -> frozenset[str]:
    """The entries of ``scopes`` that are scopes (others are dropped)."""
    return frozenset(scope for scope in scopes if parse_scope(scope) is not None)


def scope_roles(scopes: Iterable[str]) -> list[str]:
    """The roles that ``scopes`` name, sorted (for checking them against the installed ones)."""
    found = {parsed[1] for scope in scopes if (parsed := parse_scope(scope)) and parsed[1]}
    return sorted(found)


def describe_needed(action: str, role: str | None) -> str:
    """``'db:read'`` or ``'db:read' or 'db:read:default'``: the scopes that would do."""
    return f"'{action}'" if role is None else f"'{action}' or '{action}:{role}'"
