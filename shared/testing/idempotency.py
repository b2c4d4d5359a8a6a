"""The in-memory twin of the Azure Table idempotency store: the same claim rule, per process."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from shared.settings import setting_default
from shared.storage.idempotency import (
    COMPLETED,
    IN_PROGRESS,
    Claim,
    ClaimKind,
    StoredClaim,
    decide_claim,
    log_claim,
    row_key,
    utc_clock,
)

log = logging.getLogger(__name__)


class InMemoryIdempotencyStore:
    """Per-process store: records in a dict, ETags as version numbers."""

    def __init__(self, window_seconds: float | None = None, *, clock: Callable[[], datetime] = utc_clock) -> None:
        hours = float(setting_default("IDEMPOTENCY_WINDOW_HOURS"))
        self._window = timedelta(seconds=window_seconds if window_seconds is not None else hours * 3600)
        self._clock = clock
        self._records: dict[str, tuple[StoredClaim, str]] = {}
        self._version = 0

    def _etag(self) -> str:
        self._version += 1
        return f"v{self._version}"

    async def begin(self, key: str, stale_after_seconds: float) -> Claim:
        """Claim key; raise KeyInProgressError while another worker holds a fresh claim."""
        # No await in here: on one event loop the check-and-set is atomic, like the table's ETag test.
        now = self._clock()
        found = self._records.get(key)
        kind = decide_claim(found[0] if found else None, now, stale_after_seconds)
        if kind is ClaimKind.COMPLETED and found is not None:
            log_claim("completed", key)
            return Claim(ClaimKind.COMPLETED, key, found[1], found[0].result)
        etag = self._etag()
        self._records[key] = (StoredClaim(IN_PROGRESS, now, now + self._window), etag)
        log_claim(kind.value, key)
        return Claim(kind, key, etag)

    async def complete(self, key: str, result_json: str, claim: Claim) -> None:
        """Record the finished result for key, even if the claim was lost meanwhile (as the table store does)."""
        if not claim.owned:
            return
        now = self._clock()
        found = self._records.get(key)
        if found is None or found[1] != claim.etag:
            log.warning("idempotency %s: claim lost before completion; recording the result anyway",
                        row_key(key), extra={"idempotency_key": row_key(key)})
        started = found[0].started_at if found else now
        self._records[key] = (StoredClaim(COMPLETED, started, now + self._window, result_json), self._etag())

    async def release(self, key: str, claim: Claim) -> None:
        """Give up an owned claim so a retry starts fresh; a claim someone else took over is left alone."""
        found = self._records.get(key)
        if claim.owned and found is not None and found[1] == claim.etag:
            del self._records[key]

