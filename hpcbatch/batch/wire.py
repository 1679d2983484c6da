"""Wire shaping shared by every resource: Batch's times and eTags.

Batch's REST JSON carries times as ISO 8601 UTC with a ``Z``
(``2026-01-02T03:04:05.678901Z``) and eTags as hex strings
(``0x8DE...``). The store keeps naive UTC datetimes; these helpers are the
one place that converts between the two.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

__all__ = ["iso", "new_etag", "parse_iso", "utcnow"]


def utcnow() -> datetime:
    """Return the current time as a naive UTC datetime (the store's time format)."""
    return datetime.now(UTC).replace(tzinfo=None)


def new_etag() -> str:
    """Return a Batch-style ETag (``0x8DE...``): a hex of the current time in 100 ns units."""
    return f"0x{time.time_ns() // 100 + 0x8D000000000000:X}"


def iso(dt: datetime | None) -> str | None:
    """Format a time as Batch's REST JSON does: UTC, microseconds, ``Z``.

    Parameters
    ----------
    dt
        A naive datetime (taken as UTC, the store's format), an aware one (converted
        to UTC), or None.

    Returns
    -------
    str or None
        ``2026-01-02T03:04:05.678901Z``; None for None.
    """
    if dt is None:
        return None
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt.isoformat(timespec="microseconds") + "Z"


def parse_iso(text: str | None) -> datetime | None:
    """Parse a time written by :func:`iso` (or any ISO 8601 time) to a naive UTC datetime.

    Raises
    ------
    ValueError
        ``text`` is not an ISO 8601 time.
    """
    if text is None:
        return None
    dt = datetime.fromisoformat(text)
    return dt.astimezone(UTC).replace(tzinfo=None) if dt.tzinfo is not None else dt
