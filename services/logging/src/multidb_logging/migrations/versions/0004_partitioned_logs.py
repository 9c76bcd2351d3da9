"""partitioned logs: application_logs and error_logs range-partitioned by day

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 10:00:00.000000

Both tables become ``PARTITION BY RANGE (created_at)`` with one partition per UTC day
(``<table>_pYYYYMMDD``, see :mod:`multidb.partitions`); their primary key becomes
``(id, created_at)`` and a new ``event_id`` (the producer's idempotency key) is unique per
``created_at``. ``error_logs`` gains ``logger`` and ``level``. Existing rows are kept with
their ids (the ``id`` sequences carry on): the plain table is set aside, partitions are
created for the days its rows fall on and for ``[today - MULTI_DB_LOG_RETENTION_DAYS,
today + 7]``, the rows are copied and the plain table dropped. The downgrade does the
same the other way (``event_id``, ``logger`` and ``level`` are lost).
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
from multidb.settings import LOG_RETENTION_DAYS

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("application_logs", "error_logs")
# The columns both forms have, copied across.
COLUMNS = {
    "application_logs": (
        "id",
        "level",
        "logger",
        "message",
        "context",
        "request_id",
        "created_at",
    ),
    "error_logs": (
        "id",
        "error_type",
        "message",
        "stack_trace",
        "request_id",
        "context",
        "resolved",
        "created_at",
    ),
}
# Each table's indexes: (name, columns or expressions).
Indexes = Mapping[str, Sequence[tuple[str, Sequence[sa.TextClause | str]]]]
PLAIN_INDEXES: Indexes = {
    "application_logs": (
        ("ix_application_logs_created_at", ["created_at"]),
        ("ix_application_logs_level_created_at", ["level", "created_at"]),
        ("ix_application_logs_request_id", ["request_id"]),
    ),
    "error_logs": (
        ("ix_error_logs_created_at", ["created_at"]),
        ("ix_error_logs_error_type", ["error_type"]),
        ("ix_error_logs_request_id", ["request_id"]),
        ("ix_error_logs_resolved_created_at", ["resolved", "created_at"]),
    ),
}
PARTITIONED_INDEXES: Indexes = {
    "application_logs": (
        ("ix_application_logs_created_at_id", [sa.text("created_at DESC"), sa.text("id DESC")]),
        (
            "ix_application_logs_level_created_at",
            ["level", sa.text("created_at DESC"), sa.text("id DESC")],
        ),
        ("ix_application_logs_logger_created_at", ["logger", sa.text("created_at DESC")]),
        ("ix_application_logs_request_id", ["request_id"]),
    ),
    "error_logs": (
        ("ix_error_logs_created_at_id", [sa.text("created_at DESC"), sa.text("id DESC")]),
        ("ix_error_logs_request_id", ["request_id"]),
        ("ix_error_logs_error_type_created_at", ["error_type", sa.text("created_at DESC")]),
    ),
}


def _execute(statements: Sequence[str]) -> None:
    for statement in statements:
        op.execute(statement)


def _created_at() -> sa.Column[object]:
    return sa.Column(
        "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
    )


def _context() -> sa.Column[object]:
    return sa.Column(
        "context", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
    )


def _create_partitioned_tables() -> None:
    op.create_table(
        "application_logs",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        _created_at(),
        sa.Column("event_id", sa.String(length=64), nullable=True),
        sa.Column("level", sa.String(length=20), nullable=False),
        sa.Column("logger", sa.String(length=255), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        _context(),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", "created_at", name=op.f("pk_application_logs")),
        sa.UniqueConstraint("event_id", "created_at", name=op.f("uq_application_logs_event_id")),
        postgresql_partition_by="RANGE (created_at)",
    )
    op.create_table(
        "error_logs",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        _created_at(),
        sa.Column("event_id", sa.String(length=64), nullable=True),
        sa.Column("logger", sa.String(length=255), nullable=True),
        sa.Column("level", sa.String(length=20), server_default="ERROR", nullable=False),
        sa.Column("error_type", sa.String(length=255), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("stack_trace", sa.Text(), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        _context(),
        sa.Column("resolved", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.PrimaryKeyConstraint("id", "created_at", name=op.f("pk_error_logs")),
        sa.UniqueConstraint("event_id", "created_at", name=op.f("uq_error_logs_event_id")),
        postgresql_partition_by="RANGE (created_at)",
    )


def _create_plain_tables() -> None:
    op.create_table(
        "application_logs",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("level", sa.String(length=20), nullable=False),
        sa.Column("logger", sa.String(length=255), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        _context(),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_application_logs")),
    )
    op.create_table(
        "error_logs",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("error_type", sa.String(length=255), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("stack_trace", sa.Text(), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        _context(),
        sa.Column("resolved", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_error_logs")),
    )


def _create_indexes(
    indexes: Mapping[str, Sequence[tuple[str, Sequence[sa.TextClause | str]]]],
) -> None:
    for table, listed in indexes.items():
        for name, columns in listed:
            op.create_index(name, table, list(columns), unique=False)


def upgrade() -> None:
    retention = retention_days_from_environment("MULTI_DB_LOG_RETENTION_DAYS", LOG_RETENTION_DAYS)
    window = set(days(*partition_window(utc_today(), retention)))
    for table in TABLES:
        _execute(set_aside_sql(table, drop_indexes=[name for name, _ in PLAIN_INDEXES[table]]))
    _create_partitioned_tables()
    bind = op.get_bind()
    for table in TABLES:
        _execute(take_sequence_sql(table))
        row_days = set(bind.execute(sa.text(row_days_sql(f"{table}_old", "created_at"))).scalars())
        for day in sorted(window | row_days):
            _execute(create_partition_sql(table, day))
        _execute(move_rows_sql(f"{table}_old", table, COLUMNS[table]))
    _create_indexes(PARTITIONED_INDEXES)


def downgrade() -> None:
    for table in TABLES:
        _execute(
            set_aside_sql(table, drop_indexes=[name for name, _ in PARTITIONED_INDEXES[table]])
        )
    _create_plain_tables()
    for table in TABLES:
        _execute(take_sequence_sql(table))
        _execute(move_rows_sql(f"{table}_old", table, COLUMNS[table]))
    _create_indexes(PLAIN_INDEXES)
