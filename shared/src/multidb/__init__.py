"""multidb: the multi-database layer of the OCR Identity platform.

The spec's in-process Python API, async: ``get_db(name)``, ``get_db_for_model(Model)``,
``get_database_router()``, and the utilities ``get_multi_database_utils()``,
``health_check_all()`` and ``get_database_stats_all()``.
"""

from multidb.engines import dispose_engines, get_db, get_db_for_model
from multidb.multi_database_utils import (
    MultiDatabaseUtils,
    get_database_stats_all,
    get_multi_database_utils,
    health_check_all,
)
from multidb.plugins import hookimpl
from multidb.roles import RoleSpec
from multidb.router import DatabaseRouter, get_database_router

__all__ = [
    "DatabaseRouter",
    "MultiDatabaseUtils",
    "RoleSpec",
    "dispose_engines",
    "get_database_router",
    "get_database_stats_all",
    "get_db",
    "get_db_for_model",
    "get_multi_database_utils",
    "health_check_all",
    "hookimpl",
]
