"""Timestamps on the wire: one way to write them, one way to read them."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> str:
    """The current time as an ISO 8601 UTC timestamp with milliseconds (`2026-11-21T09:00:01.234Z`)."""
    return format_timestamp(datetime.now(UTC))


def format_timestamp(value: datetime) -> str:
    """An aware datetime as ISO 8601 UTC with milliseconds and a `Z`."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_timestamp(value: str) -> datetime:
    """ISO 8601 text as a datetime (`Z` or an offset; up to 7 fractional digits); ValueError otherwise.

    Naive text stays naive: whether that is acceptable is the caller's rule, not the parser's.
    """
    # Python 3.11's fromisoformat reads `Z`, offsets and any number of fractional digits (it keeps six).
    return datetime.fromisoformat(value)


def parse_timestamp_or_none(value: str | None) -> datetime | None:
    """parse_timestamp, with None for an empty or unreadable value (stored fields written by older versions)."""
    if not value:
        return None
    try:
        return parse_timestamp(value)
    except ValueError:
        return None
