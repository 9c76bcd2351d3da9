"""multidb: the multi-database layer of the OCR Identity platform.

The spec's in-process Python API lives here: ``get_db``, ``get_db_for_model``,
``get_database_router`` and the utilities of ``multidb.multi_database_utils``.
"""

from multidb.plugins import hookimpl
from multidb.roles import RoleSpec

__all__ = ["RoleSpec", "hookimpl"]
