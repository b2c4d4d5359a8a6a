"""The one Retry-After parser (RFC 9110 §10.2.3): delta-seconds or an HTTP-date, bounded by the caller's cap."""

from __future__ import annotations

import math
import time
from datetime import UTC
from email.utils import parsedate_to_datetime

# The longest Retry-After worth carrying from Graph or a webhook receiver: past a day, the host's own retry
# schedule and the 7-day limit on a hidden queue copy take over.
MAX_RETRY_AFTER_SECONDS = 24 * 3600.0


def parse_retry_after(value: str | None, *, cap: float, now: float | None = None) -> float | None:
    """Seconds to wait, between 0 and `cap`; None when absent or unreadable.

    `cap` is explicit because what is worth waiting for differs: a table write backs off for seconds,
    a webhook or a Graph requeue for up to a day. An HTTP-date without a zone is read as UTC (the RFC's
    only zone); a date in the past means now (0); NaN is unreadable.
    """
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), cap)
