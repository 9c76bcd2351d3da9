"""The limits of one batch, and the window a record's timestamp must fall in."""

from __future__ import annotations

import datetime as dt

import msgspec

from multidb.errors import BadRequestError
from multidb.settings import Settings

# A clock a little ahead of ours is tolerated; a record from further in the future is a
# producer's bug (and would land in a partition far ahead).
FUTURE = dt.timedelta(days=1)


class IngestLimits(msgspec.Struct, frozen=True, kw_only=True):
    """``max_records`` per batch and ``max_bytes`` per body (more: 413);
    ``max_field_bytes`` per message, stack trace or JSON object (more: 400)."""

    max_records: int
    max_bytes: int
    max_field_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> IngestLimits:
        return cls(
            max_records=settings.ingest_max_records,
            max_bytes=settings.ingest_max_bytes,
            max_field_bytes=settings.ingest_max_field_bytes,
        )


class TimeWindow(msgspec.Struct, frozen=True):
    """The timestamps a batch may hold: ``[earliest, latest]``, both inclusive."""

    earliest: dt.datetime
    latest: dt.datetime
    # The setting that sets ``earliest``, for the message.
    retention: str = ""

    @classmethod
    def around(cls, now: dt.datetime, retention_days: int, retention: str = "") -> TimeWindow:
        """``[now - retention_days, now + 1 day]``: older records would be dropped by the
        retention at once, newer ones come from a clock that is wrong."""
        return cls(now - dt.timedelta(days=retention_days), now + FUTURE, retention)

    def check(self, value: dt.datetime, index: int, field: str) -> None:
        """A 400 naming the record ``index`` and ``field`` when ``value`` is outside."""
        if self.earliest <= value <= self.latest:
            return
        if value < self.earliest:
            kept = f" ({self.retention})" if self.retention else ""
            why = f"older than the {(self.latest - FUTURE - self.earliest).days} days kept{kept}"
        else:
            why = "more than 1 day in the future"
        msg = (
            f"record {index}, field '{field}': {value.isoformat()} is {why}; it must be "
            f"between {_stamp(self.earliest)} and {_stamp(self.latest)}"
        )
        raise BadRequestError(msg, index=index, field=field)


def _stamp(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="seconds")
