"""Routing: role ownership, __database__, MULTI_DB_ROUTING and add_model_to_database."""

from __future__ import annotations

import pytest

from multidb.plugins import get_roles
from multidb.router import DatabaseRouter, UnknownDatabaseError

ROLES = get_roles()


class YourNewModel:
    pass


class DeclaredModel:
    __database__ = "archive"


def test_models_route_to_the_role_that_declares_them() -> None:
    from multidb_analytics.models import AnalyticsEvent
    from multidb_default.models import User

    router = DatabaseRouter(ROLES, {})
    assert router.get_database_for_model(User) == "default"
    assert router.get_database_for_model(AnalyticsEvent) == "analytics"
    assert router.get_database_for_model("ErrorLog") == "logging"
    assert router.get_database_for_model("ArchivedUser") == "archive"


def test_unknown_models_go_to_default() -> None:
    assert DatabaseRouter(ROLES, {}).get_database_for_model(YourNewModel) == "default"


def test_precedence_manual_then_env_then_attribute_then_owner() -> None:
    router = DatabaseRouter(ROLES, {"DeclaredModel": "logging", "User": "archive"})
    assert router.get_database_for_model("User") == "archive"
    assert router.get_database_for_model(DeclaredModel) == "logging"
    router.add_model_to_database(DeclaredModel, "analytics")
    assert router.get_database_for_model(DeclaredModel) == "analytics"
    assert DatabaseRouter(ROLES, {}).get_database_for_model(DeclaredModel) == "archive"


def test_add_model_to_database_rejects_unknown_role() -> None:
    router = DatabaseRouter(ROLES, {})
    with pytest.raises(UnknownDatabaseError, match="unknown database 'reporting'"):
        router.add_model_to_database(YourNewModel, "reporting")


def test_models_by_database_matches_the_spec() -> None:
    router = DatabaseRouter(ROLES, {})
    router.add_model_to_database(YourNewModel, "analytics")
    by_database = router.models_by_database()
    assert by_database["default"] == [
        "User",
        "People",
        "Media",
        "IdentityDocument",
        "AuditLog",
        "OCRJob",
        "Mediable",
    ]
    assert by_database["analytics"] == [
        "AnalyticsEvent",
        "UserActivity",
        "SystemMetrics",
        "YourNewModel",
    ]
    assert by_database["logging"] == ["ApplicationLog", "ErrorLog", "AccessLog"]
    assert by_database["archive"] == ["ArchivedMedia", "ArchivedPeople", "ArchivedUser"]


def test_rerouted_model_moves_between_databases() -> None:
    router = DatabaseRouter(ROLES, {"AuditLog": "logging"})
    assert "AuditLog" not in router.get_models_for_database("default")
    assert "AuditLog" in router.get_models_for_database("logging")
