"""partitioned events: analytics_events and user_activities range-partitioned by day, and
the hourly rollups of events

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05 10:00:00.000000

Both tables become ``PARTITION BY RANGE (<ts>)`` (``occurred_at``, ``created_at``) with one
partition per UTC day (``<table>_pYYYYMMDD``, see :mod:`multidb.partitions`); their primary
key becomes ``(id, <ts>)`` and a new ``event_id`` (the producer's idempotency key) is
unique per ``<ts>``. Existing rows are kept with their ids (the ``id`` sequences carry
on): the plain table is set aside, partitions are created for the days its rows fall on
and for ``[today - MULTI_DB_EVENTS_RETENTION_DAYS, today + 7]``, the rows are copied and
the plain table dropped. The downgrade does the same the other way (``event_id`` is lost).

``analytics_event_rollups`` (a system table) counts events per name and UTC hour; it starts
with the events already stored.
"""

from collections.abc import Mapping, Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from multidb.partitions import (
    create_partition_sql,
    days,
    move_rows_sql,
    partition_window,
    retention_days_from_environment,
    row_days_sql,
    set_aside_sql,
    take_sequence_sql,
    utc_today,
)
from multidb.settings import EVENTS_RETENTION_DAYS

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Each table and its timestamp, the partition key.
TABLES = {"analytics_events": "occurred_at", "user_activities": "created_at"}
# The columns both forms have, copied across.
COLUMNS = {
    "analytics_events": ("id", "name", "user_id", "session_id", "properties", "occurred_at"),
    "user_activities": (
        "id",
        "user_id",
        "activity",
        "resource",
        "ip_address",
        "user_agent",
        "details",
        "created_at",
    ),
}
PLAIN_INDEXES = {
    "analytics_events": (
        ("ix_analytics_events_name_occurred_at", ["name", "occurred_at"]),
        ("ix_analytics_events_user_id", ["user_id"]),
    ),
    "user_activities": (
        ("ix_user_activities_created_at", ["created_at"]),
        ("ix_user_activities_user_id", ["user_id"]),
    ),
}
PARTITIONED_INDEXES = {
    "analytics_events": (
        ("ix_analytics_events_name_occurred_at", ["name", "occurred_at"]),
        ("ix_analytics_events_user_id", ["user_id"]),
    ),
    "user_activities": (
        ("ix_user_activities_user_id_created_at", ["user_id", "created_at"]),
        ("ix_user_activities_created_at", ["created_at"]),
    ),
}


def _execute(statements: Sequence[str]) -> None:
    for statement in statements:
        op.execute(statement)


def _timestamp(name: str) -> sa.Column[object]:
    return sa.Column(
        name, sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
    )


def _jsonb(name: str) -> sa.Column[object]:
    return sa.Column(
        name, postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
    )


def _create_partitioned_tables() -> None:
    op.create_table(
        "analytics_events",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        _timestamp("occurred_at"),
        sa.Column("event_id", sa.String(length=64), nullable=True),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=True),
        sa.Column("session_id", sa.String(length=100), nullable=True),
        _jsonb("properties"),
        sa.PrimaryKeyConstraint("id", "occurred_at", name=op.f("pk_analytics_events")),
        sa.UniqueConstraint("event_id", "occurred_at", name=op.f("uq_analytics_events_event_id")),
        postgresql_partition_by="RANGE (occurred_at)",
    )
    op.create_table(
        "user_activities",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        _timestamp("created_at"),
        sa.Column("event_id", sa.String(length=64), nullable=True),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("activity", sa.String(length=100), nullable=False),
        sa.Column("resource", sa.String(length=255), nullable=True),
        sa.Column("ip_address", sa.String(length=45), nullable=True),
        sa.Column("user_agent", sa.String(length=512), nullable=True),
        _jsonb("details"),
        sa.PrimaryKeyConstraint("id", "created_at", name=op.f("pk_user_activities")),
        sa.UniqueConstraint("event_id", "created_at", name=op.f("uq_user_activities_event_id")),
        postgresql_partition_by="RANGE (created_at)",
    )


def _create_plain_tables() -> None:
    op.create_table(
        "analytics_events",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=True),
        sa.Column("session_id", sa.String(length=100), nullable=True),
        _jsonb("properties"),
        _timestamp("occurred_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_analytics_events")),
    )
    op.create_table(
        "user_activities",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("activity", sa.String(length=100), nullable=False),
        sa.Column("resource", sa.String(length=255), nullable=True),
        sa.Column("ip_address", sa.String(length=45), nullable=True),
        sa.Column("user_agent", sa.String(length=512), nullable=True),
        _jsonb("details"),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_activities")),
    )


def _create_indexes(
    indexes: Mapping[str, Sequence[tuple[str, Sequence[sa.TextClause | str]]]],
) -> None:
    for table, listed in indexes.items():
        for name, columns in listed:
            op.create_index(name, table, list(columns), unique=False)


def upgrade() -> None:
    retention = retention_days_from_environment(
        "MULTI_DB_EVENTS_RETENTION_DAYS", EVENTS_RETENTION_DAYS
    )
    window = set(days(*partition_window(utc_today(), retention)))
    for table in TABLES:
        _execute(set_aside_sql(table, drop_indexes=[name for name, _ in PLAIN_INDEXES[table]]))
    _create_partitioned_tables()
    bind = op.get_bind()
    for table, ts_column in TABLES.items():
        _execute(take_sequence_sql(table))
        row_days = set(bind.execute(sa.text(row_days_sql(f"{table}_old", ts_column))).scalars())
        for day in sorted(window | row_days):
            _execute(create_partition_sql(table, day))
        _execute(move_rows_sql(f"{table}_old", table, COLUMNS[table]))
    _create_indexes(PARTITIONED_INDEXES)
    op.create_table(
        "analytics_event_rollups",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("bucket", sa.DateTime(timezone=True), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", "bucket", name=op.f("pk_analytics_event_rollups")),
    )
    op.execute(
        "INSERT INTO analytics_event_rollups (name, bucket, events) "
        "SELECT name, date_trunc('hour', occurred_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', "
        "count(*) FROM analytics_events GROUP BY 1, 2"
    )


def downgrade() -> None:
    op.drop_table("analytics_event_rollups")
    for table in TABLES:
        _execute(
            set_aside_sql(table, drop_indexes=[name for name, _ in PARTITIONED_INDEXES[table]])
        )
    _create_plain_tables()
    for table in TABLES:
        _execute(take_sequence_sql(table))
        _execute(move_rows_sql(f"{table}_old", table, COLUMNS[table]))
    _create_indexes(PLAIN_INDEXES)
