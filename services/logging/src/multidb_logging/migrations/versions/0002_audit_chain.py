"""audit chain: access_logs records linked by hash, one chain per writer

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 10:00:00.000000

Records already in ``access_logs`` stay outside any chain (their four chain columns
``NULL``): nothing vouches for what they held before this revision, so hashing them now
would certify content nobody can check. Their set is sealed instead: a row of
``access_log_chains`` with the empty writer holds how many there are and a sha256 over
their ids, so ``multidb audit verify`` reports a chain-less row added among them (whatever
its id) or one of them deleted; one stored after the first chained record without a link
is reported as inserted. What they hold is not covered.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("access_logs", sa.Column("chain_writer", sa.String(length=255), nullable=True))
    op.add_column("access_logs", sa.Column("chain_seq", sa.BigInteger(), nullable=True))
    op.add_column("access_logs", sa.Column("prev_hash", sa.String(length=64), nullable=True))
    op.add_column("access_logs", sa.Column("row_hash", sa.String(length=64), nullable=True))
    op.create_unique_constraint(
        op.f("uq_access_logs_chain_writer"), "access_logs", ["chain_writer", "chain_seq"]
    )
    op.create_check_constraint(
        op.f("ck_access_logs_chain_link"),
        "access_logs",
        "(chain_writer IS NULL) = (chain_seq IS NULL)"
        " AND (chain_writer IS NULL) = (prev_hash IS NULL)"
        " AND (chain_writer IS NULL) = (row_hash IS NULL)",
    )
    op.create_table(
        "access_log_chains",
        sa.Column("writer", sa.String(length=255), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("writer", name=op.f("pk_access_log_chains")),
    )
    # The pre-chain seal (multidb_logging.chain.PRE_CHAIN_WRITER, PRE_CHAIN_DIGEST).
    op.execute(
        "INSERT INTO access_log_chains (writer, last_seq, last_hash) "
        "SELECT '', count(*), "
        "encode(sha256(convert_to(coalesce(string_agg(id::text, ',' ORDER BY id), ''), 'UTF8')), 'hex') "
        "FROM access_logs"
    )


def downgrade() -> None:
    op.drop_table("access_log_chains")
    op.drop_constraint(op.f("ck_access_logs_chain_link"), "access_logs", type_="check")
    op.drop_constraint(op.f("uq_access_logs_chain_writer"), "access_logs", type_="unique")
    op.drop_column("access_logs", "row_hash")
    op.drop_column("access_logs", "prev_hash")
    op.drop_column("access_logs", "chain_seq")
    op.drop_column("access_logs", "chain_writer")
