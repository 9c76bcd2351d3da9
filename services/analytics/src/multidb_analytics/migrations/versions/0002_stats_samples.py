"""stats_samples: the fleet's stats history

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "stats_samples",
        sa.Column("sample_id", sa.String(length=96), nullable=False),
        sa.Column("role", sa.String(length=63), nullable=False),
        sa.Column("sampled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("table_count", sa.Integer(), nullable=True),
        sa.Column("database_size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("connections", sa.Integer(), nullable=True),
        sa.Column("commits", sa.BigInteger(), nullable=True),
        sa.Column("rollbacks", sa.BigInteger(), nullable=True),
        sa.Column("cache_hit_ratio", sa.Float(), nullable=True),
        sa.Column("deadlocks", sa.BigInteger(), nullable=True),
        sa.Column("temp_bytes", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "status IN ('available', 'unavailable')", name=op.f("ck_stats_samples_status")
        ),
        sa.PrimaryKeyConstraint("sample_id", name=op.f("pk_stats_samples")),
    )
    op.create_index(
        "ix_stats_samples_role_sampled_at", "stats_samples", ["role", "sampled_at"], unique=False
    )
    op.create_index("ix_stats_samples_sampled_at", "stats_samples", ["sampled_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_stats_samples_sampled_at", table_name="stats_samples")
    op.drop_index("ix_stats_samples_role_sampled_at", table_name="stats_samples")
    op.drop_table("stats_samples")
