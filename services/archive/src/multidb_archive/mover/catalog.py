"""What the mover moves: each archivable model's table in the default database, its table in
the archive database, and the archive columns filled from the row (so archived rows can be
searched without opening ``data``).

The archive role names the default role's tables by name only: roles never import each
other. Foreign keys are not listed here; the mover reads them from the catalog of the
default database at run time (multidb_archive.mover.keys).
"""

from __future__ import annotations

import msgspec


class Archivable(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    source_table: str
    archive_table: str
    # archive column -> SQL expression over the source row, aliased ``r``.
    columns: dict[str, str]
    # Columns a policy rule may read (multidb_archive.mover.settings.RULE_COLUMNS).
    rule_columns: frozenset[str]


# In archive order: a row moves with or after whatever points at it (a user's media and
# people go before the user), and comes back in the opposite order.
CATALOG: dict[str, Archivable] = {
    "Media": Archivable(
        model="Media",
        source_table="media",
        archive_table="archived_media",
        columns={"filename": "r.filename", "mime_type": "r.mime_type"},
        rule_columns=frozenset({"updated_at"}),
    ),
    "People": Archivable(
        model="People",
        source_table="people",
        archive_table="archived_people",
        columns={
            "full_name": "left(concat_ws(' ', r.first_name, r.middle_name, r.last_name), 310)",
            "national_id_number": "r.national_id_number",
        },
        rule_columns=frozenset({"updated_at", "deleted_at"}),
    ),
    "User": Archivable(
        model="User",
        source_table="users",
        archive_table="archived_users",
        columns={"username": "r.username", "email": "r.email"},
        rule_columns=frozenset({"updated_at", "deleted_at"}),
    ),
}
ARCHIVE_ORDER = tuple(CATALOG)
UNARCHIVE_ORDER = tuple(reversed(ARCHIVE_ORDER))
SOURCE_TABLES = frozenset(entry.source_table for entry in CATALOG.values())
