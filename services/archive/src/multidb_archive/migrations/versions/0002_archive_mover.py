"""archive mover: what moved with each row, the runs and the ledger

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 14:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ARCHIVED = ("archived_media", "archived_people", "archived_users")


def upgrade() -> None:
    for table in ARCHIVED:
        op.add_column(
            table,
            sa.Column(
                "dependents",
                postgresql.JSONB(astext_type=sa.Text()),
                server_default="{}",
                nullable=False,
            ),
        )
        op.add_column(
            table,
            sa.Column(
                "links",
                postgresql.JSONB(astext_type=sa.Text()),
                server_default="{}",
                nullable=False,
            ),
        )
        op.add_column(table, sa.Column("checksum", sa.String(length=32), nullable=True))
    op.create_table(
        "archive_runs",
        sa.Column("id", sa.String(length=12), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("trigger", sa.String(length=10), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column(
            "report", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
        sa.Column("requested_by", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_archive_runs")),
    )
    op.create_index(
        "ix_archive_runs_started_at", "archive_runs", [sa.text("started_at DESC")], unique=False
    )
    op.create_table(
        "archive_batches",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("run_id", sa.String(length=12), nullable=False),
        sa.Column("direction", sa.String(length=10), nullable=False),
        sa.Column("model", sa.String(length=63), nullable=False),
        sa.Column("ids", postgresql.ARRAY(sa.BigInteger()), nullable=False),
        sa.Column("checksum", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_archive_batches")),
    )
    op.create_index(op.f("ix_archive_batches_run_id"), "archive_batches", ["run_id"], unique=False)
    op.create_index(
        "ix_archive_batches_open",
        "archive_batches",
        ["state"],
        unique=False,
        postgresql_where=sa.text("state IN ('copied', 'copying')"),
    )


def downgrade() -> None:
    op.drop_index("ix_archive_batches_open", table_name="archive_batches")
    op.drop_index(op.f("ix_archive_batches_run_id"), table_name="archive_batches")
    op.drop_table("archive_batches")
    op.drop_index("ix_archive_runs_started_at", table_name="archive_runs")
    op.drop_table("archive_runs")
    for table in ARCHIVED:
        op.drop_column(table, "checksum")
        op.drop_column(table, "links")
        op.drop_column(table, "dependents")
