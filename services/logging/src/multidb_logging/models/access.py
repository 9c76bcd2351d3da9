from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column

from multidb.models import SYSTEM_TABLE, check_in
from multidb_logging.models.base import LoggingBase

AUTH_METHODS = ("jwt", "api_key", "anonymous")
ACCESS_OUTCOMES = ("allowed", "refused", "failed", "rejected")


class AccessLog(LoggingBase):
    """One access to the service, fit for auditing ``execute`` calls.

    ``principal`` is the caller's subject (``None`` when unauthenticated), ``target_role``
    the database role the query was for, ``query_fingerprint`` a hash of the normalised
    query (e.g. sha256 hex) so that identical statements group together; ``query_preview``
    an optional, possibly truncated, copy of the query. ``outcome``: ``allowed`` (ran),
    ``refused`` (403: a missing scope or a plugin vote), ``rejected`` (401: credentials
    refused, or a request invalid before it reached a service: bad body, unknown
    database) or ``failed`` (the service or the database refused or failed: SQL error,
    timeout, database down). ``event_id`` is the producer's
    idempotency key (uuid4 hex): a record sent twice is stored once.

    ``chain_writer``, ``chain_seq``, ``prev_hash`` and ``row_hash`` make the record a link
    of its writer's hash chain (:mod:`multidb_logging.chain`); all four are ``NULL`` on the
    records stored before the chain existed (migration 0002), never on later ones.
    """

    __tablename__ = "access_logs"
    __table_args__ = (
        CheckConstraint(check_in("outcome", ACCESS_OUTCOMES), name="outcome"),
        CheckConstraint(check_in("auth_method", AUTH_METHODS), name="auth_method"),
        Index("ix_access_logs_target_role_created_at", "target_role", "created_at"),
        Index("ix_access_logs_outcome_created_at", "outcome", "created_at"),
        # One record per position of a chain: a fork is refused by the table itself.
        UniqueConstraint("chain_writer", "chain_seq"),
        CheckConstraint(
            "(chain_writer IS NULL) = (chain_seq IS NULL)"
            " AND (chain_writer IS NULL) = (prev_hash IS NULL)"
            " AND (chain_writer IS NULL) = (row_hash IS NULL)",
            name="chain_link",
        ),
        # The audit trail: written by the logging service's own login, never through execute.
        {"info": SYSTEM_TABLE},
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(32), unique=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), index=True
    )
    request_id: Mapped[str | None] = mapped_column(String(64), index=True)
    principal: Mapped[str | None] = mapped_column(String(255), index=True)
    auth_method: Mapped[str] = mapped_column(String(20), server_default="anonymous")
    method: Mapped[str | None] = mapped_column(String(10))
    path: Mapped[str | None] = mapped_column(String(2048))
    target_role: Mapped[str | None] = mapped_column(String(63))
    query_fingerprint: Mapped[str | None] = mapped_column(String(64), index=True)
    query_preview: Mapped[str | None] = mapped_column(Text)
    read_only: Mapped[bool] = mapped_column(Boolean, server_default=true())
    outcome: Mapped[str] = mapped_column(String(20))
    status_code: Mapped[int] = mapped_column(Integer)
    row_count: Mapped[int | None] = mapped_column(Integer)
    duration_ms: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    client_ip: Mapped[str | None] = mapped_column(String(45))
    chain_writer: Mapped[str | None] = mapped_column(String(255))
    chain_seq: Mapped[int | None] = mapped_column(BigInteger)
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    row_hash: Mapped[str | None] = mapped_column(String(64))


class AccessLogChain(LoggingBase):
    """The head of one writer's chain: its last ``chain_seq`` and that record's ``row_hash``.

    Updated in the same transaction as the records it counts, so records cut off the end of
    a chain (which leave no gap behind them) still show: the head names a record that is
    gone. Not one of the role's spec models: the chain's bookkeeping, not an audit record.
    """

    __tablename__ = "access_log_chains"
    __table_args__ = ({"info": SYSTEM_TABLE},)

    writer: Mapped[str] = mapped_column(String(255), primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger)
    last_hash: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
