"""Argyle's timestamps: parsed into aware UTC datetimes, rendered back as ISO 8601 with a 'Z'.

Argyle mostly sends "2019-03-07T20:12:09Z", but its own overview page shows naive values
("2017-07-15T00:00:00"); those are read as UTC, the zone Argyle documents for every date.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator


def as_utc(value: datetime) -> datetime:
    """`value` in UTC; a naive value is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


# A datetime field that is always aware and in UTC, whatever offset (or none) the text had.
UtcDateTime = Annotated[datetime, AfterValidator(as_utc)]


def iso_z(value: datetime) -> str:
    """'2019-03-07T20:12:09Z' (microseconds only when present): the form Argyle's filters take."""
    return as_utc(value).isoformat().replace("+00:00", "Z")


def parse_timestamp(text: str) -> datetime:
    """An ISO 8601 date or datetime ('Z', offset or naive) as an aware UTC datetime.

    A bare date means midnight UTC. Raises ValueError for anything else.
    """
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    return as_utc(datetime.fromisoformat(value))


# Bounds of "every dated activity": Argyle's start filters are inclusive, whole seconds.
EARLIEST = 0  # 1970-01-01T00:00:00Z
LATEST = 4_102_444_800  # 2100-01-01T00:00:00Z


def iso_seconds(epoch: int) -> str:
    """An instant as Argyle's filters take it: whole seconds, UTC, 'Z'."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
