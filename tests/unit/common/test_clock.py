"""One way to write timestamps, one way to read them (events, the vault, the table client)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from shared.common.clock import format_timestamp, parse_timestamp, parse_timestamp_or_none, utc_now

pytestmark = pytest.mark.unit


def test_utc_now_is_milliseconds_and_z():
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", utc_now())


def test_format_converts_to_utc():
    value = datetime(2026, 11, 21, 10, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert format_timestamp(value) == "2026-11-21T09:00:00.123Z"


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-11-21T09:00:00Z", datetime(2026, 11, 21, 9, tzinfo=UTC)),
    # The table service writes seven fractional digits; six are kept.
    ("2026-11-21T09:00:01.1234567Z", datetime(2026, 11, 21, 9, 0, 1, 123456, tzinfo=UTC)),
    ("2026-11-21T10:00:00+01:00", datetime(2026, 11, 21, 9, tzinfo=UTC)),
    ("2026-11-21T09:00:00", datetime(2026, 11, 21, 9)),  # naive stays naive: the caller decides
])
def test_parse(text: str, expected: datetime) -> None:
    assert parse_timestamp(text) == expected


def test_unreadable():
    with pytest.raises(ValueError):
        parse_timestamp("yesterday")
    assert parse_timestamp_or_none("yesterday") is None and parse_timestamp_or_none(None) is None
