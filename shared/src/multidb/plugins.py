"""The plugin manager: hookspecs, then every role registered through entry points."""

from __future__ import annotations

import functools

import pluggy

from multidb import hookspecs
from multidb.roles import RoleSpec

ENTRY_POINT_GROUP = "multidb.roles"
# Plugins that are not roles: tools such as the development stack.
EXTENSION_ENTRY_POINT_GROUP = "multidb.extensions"

hookimpl = pluggy.HookimplMarker("multidb")


class RoleConflictError(RuntimeError):
    """Two plugins declared the same role name."""


def build_plugin_manager() -> pluggy.PluginManager:
    """Build a fresh manager: hookspecs, the roles' and extensions' entry points, checked.

    The built-in roles are entry points like any third-party role, so nothing is
    registered by hand here.
    """
    manager = pluggy.PluginManager("multidb")
    manager.add_hookspecs(hookspecs)
    manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    manager.load_setuptools_entrypoints(EXTENSION_ENTRY_POINT_GROUP)
    manager.check_pending()
    return manager


@functools.cache
def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, built on first use."""
    return build_plugin_manager()


def discover_roles(manager: pluggy.PluginManager | None = None) -> dict[str, RoleSpec]:
    """Every declared role by name, ordered by service port (default first)."""
    manager = manager or get_plugin_manager()
    found: dict[str, tuple[str, RoleSpec]] = {}
    for impl in manager.hook.multidb_role_spec.get_hookimpls():
        spec = impl.function()
        if not isinstance(spec, RoleSpec):
            continue
        if spec.name in found:
            other = found[spec.name][0]
            msg = (
                f"role {spec.name!r} is declared by two plugins: {other!r} and "
                f"{impl.plugin_name!r}; uninstall one of them"
            )
            raise RoleConflictError(msg)
        found[spec.name] = (impl.plugin_name, spec)
    ordered = sorted(found.values(), key=lambda item: (item[1].port, item[1].name))
    return {spec.name: spec for _, spec in ordered}


@functools.cache
def get_roles() -> dict[str, RoleSpec]:
    """The roles of the process-wide plugin manager (cached)."""
    return discover_roles(get_plugin_manager())
