"""Every hook is declared once, documented, prefixed, and named in the README."""

from __future__ import annotations

import inspect

from multidb import hookspecs
from multidb.plugins import build_plugin_manager
from tests.conftest import ROOT

HOOKS = [
    name
    for name, value in vars(hookspecs).items()
    if inspect.isfunction(value) and hasattr(value, "multidb_spec")
]


def test_there_are_the_hooks_the_design_asks_for() -> None:
    assert sorted(HOOKS) == [
        "multidb_background_jobs",
        "multidb_cli_commands",
        "multidb_cli_environment",
        "multidb_execute_vote",
        "multidb_health_detail",
        "multidb_plugin_settings",
        "multidb_role_spec",
        "multidb_rows_arrived",
        "multidb_service_resources",
        "multidb_service_routes",
        "multidb_stats_detail",
    ]


def test_every_hook_has_a_docstring_saying_when_it_is_called() -> None:
    for name in HOOKS:
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        assert "Called" in doc, f"{name} does not say when it is called"


def test_every_hook_is_named_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in HOOKS:
        assert name in readme, f"{name} is not in the README"


def test_builtin_roles_load_through_entry_points_and_implement_only_known_hooks() -> None:
    manager = build_plugin_manager()  # check_pending() inside refuses unknown hook names
    names = {name for name, _ in manager.list_name_plugin()}
    assert {"default", "analytics", "logging", "archive"} <= names
