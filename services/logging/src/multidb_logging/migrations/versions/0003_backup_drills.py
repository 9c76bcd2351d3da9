"""backup_drills: every role's restore drill results

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "backup_drills",
        sa.Column("drill_id", sa.String(length=96), nullable=False),
        sa.Column("role", sa.String(length=63), nullable=False),
        sa.Column("backup_id", sa.String(length=12), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column(
            "differences",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="[]",
            nullable=False,
        ),
        sa.Column(
            "recorded_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("drill_id", name=op.f("pk_backup_drills")),
    )
    op.create_index(
        "ix_backup_drills_role_finished_at",
        "backup_drills",
        ["role", sa.text("finished_at DESC")],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_backup_drills_role_finished_at", table_name="backup_drills")
    op.drop_table("backup_drills")
