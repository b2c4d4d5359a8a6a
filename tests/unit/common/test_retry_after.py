"""One Retry-After parser for Graph, webhooks and the table client (their three copies differed)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.common.retry_after import parse_retry_after

pytestmark = pytest.mark.unit
NOW = datetime(2026, 11, 21, 10, 0, 0, tzinfo=UTC).timestamp()
DAY = 24 * 3600.0


@pytest.mark.parametrize(("value", "expected"), [
    ("7", 7.0),                # delta-seconds: every copy
    (" 7 ", 7.0),              # surrounding space: the webhook copy stripped it, so does this one
    ("1.5", 1.5),              # fractional: Graph and webhooks read it; the table copy (isdigit) ignored it
    ("0", 0.0),
    ("-3", 0.0),               # negative: never wait a negative time
    ("Sat, 21 Nov 2026 10:00:30 GMT", 30.0),   # HTTP-date: Graph and webhooks; the table copy ignored it
    ("Sat, 21 Nov 2026 10:00:30 -0000", 30.0),  # a date without a zone is UTC (Graph read it as local time)
    ("Sat, 21 Nov 2026 09:00:00 GMT", 0.0),    # a date in the past: now
    ("soon", None), ("", None), (None, None),
    ("nan", None),             # NaN: the Graph copy turned it into 0
])
def test_retry_after_forms(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, cap=DAY, now=NOW) == expected


def test_the_cap_is_the_callers():
    # GIVEN an answer asking for a week WHEN read with a one-day cap (webhooks) or a 2 s cap (table writes)
    # THEN each gets its cap (the Graph copy had none: "inf" came through as infinity)
    assert parse_retry_after("604800", cap=DAY) == DAY
    assert parse_retry_after("inf", cap=DAY) == DAY
    assert parse_retry_after("30", cap=2.0) == 2.0
