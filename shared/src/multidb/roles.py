"""What a database role is: the spec a role plugin hands to the rest of the system."""

from __future__ import annotations

from pathlib import Path

import msgspec
from sqlalchemy import MetaData

from multidb.models import SYSTEM_TABLE_KEY


class RoleSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the system needs to know about one database role.

    A role plugin returns one of these from ``multidb_role_spec``. ``models`` are the
    SQLAlchemy classes the role owns (routed to its database by default); ``metadata``
    is the role's own ``MetaData`` (autogenerate sees only the role's tables);
    ``migrations`` is the folder of the role's Alembic environment.
    """

    name: str
    database: str
    metadata: MetaData
    models: tuple[type, ...]
    migrations: Path
    port: int
    pool_size: int = 5
    max_overflow: int = 10
    env_prefix: str = ""
    env_database_key: str = "DATABASE"
    # How often the role is backed up unless MULTI_DB_<ROLE>_BACKUP_INTERVAL says otherwise.
    backup_interval: str = "1d"

    @property
    def prefix(self) -> str:
        """Environment prefix of the role's variables (``MULTI_DB_<ROLE>_`` unless set)."""
        return self.env_prefix or f"MULTI_DB_{self.name.upper()}_"

    @property
    def version_table(self) -> str:
        """Alembic version table of the role: one per role, so roles may share a database."""
        return f"alembic_version_{self.name}"

    @property
    def system_tables(self) -> tuple[str, ...]:
        """Tables no execute login may read or write: the version table and every table
        marked :data:`~multidb.models.SYSTEM_TABLE`, so a role inherits the split by
        marking its own bookkeeping tables."""
        marked = [
            table.fullname
            for table in self.metadata.tables.values()
            if table.info.get(SYSTEM_TABLE_KEY)
        ]
        return (self.version_table, *marked)

    @property
    def model_names(self) -> list[str]:
        return [model.__name__ for model in self.models]
