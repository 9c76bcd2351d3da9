"""What every role's models share: a naming convention, so migrations name constraints alike,
and the mark of a system table.
"""

from __future__ import annotations

from sqlalchemy import MetaData

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# A table whose ``info`` holds this key is the system's own (audit trail, ledgers, ...):
# the execute logins never see or change it. ``__table_args__ = (..., {"info": SYSTEM_TABLE})``
SYSTEM_TABLE_KEY = "multidb_system"
SYSTEM_TABLE = {SYSTEM_TABLE_KEY: True}


def role_metadata() -> MetaData:
    """A fresh ``MetaData`` for one role: each role owns its own, never shared."""
    return MetaData(naming_convention=NAMING_CONVENTION)


def check_in(column: str, values: tuple[str, ...]) -> str:
    """The SQL of a CHECK that ``column`` is one of ``values`` (the model's own constants)."""
    listed = ", ".join(f"'{value}'" for value in values)
    return f"{column} IN ({listed})"
