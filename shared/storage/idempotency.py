"""Idempotency records per event id: one owner at a time, and a finished answer replayed without Graph."""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from shared.exceptions import KeyInProgressError, TransientError
from shared.settings import StorageConnection
from shared.storage.table_rest import LazyTable, TableRestClient

log = logging.getLogger(__name__)

# Records are spread over 256 partitions by a hash of the key. One partition would cap the whole app at
# Azure Table's per-partition target (about 2,000 entities/s, so 1,000 events/s across all instances),
# and Azurite's cost per write grows with the size of a partition (docs/performance.md).
PARTITION_PREFIX = "evt-"
IN_PROGRESS = "in_progress"
COMPLETED = "completed"
# Table keys forbid / \ # ? and control characters and are capped at 1 KiB; short safe keys are kept
# readable, anything else is hashed. The prefixes keep the two forms from ever colliding.
_SAFE_KEY = re.compile(r"^[A-Za-z0-9_\-.:@=+]{1,200}$")
# A result larger than this would not fit one string property (64 KiB of UTF-16).
_MAX_RESULT_CHARS = 30_000
_MAX_RACE_ROUNDS = 4


class ClaimKind(StrEnum):
    """How begin() left the key: we own it (new, taken over) or it was already done (completed)."""

    NEW = "new"
    COMPLETED = "completed"
    TAKEN_OVER = "taken_over"


@dataclass(frozen=True)
class Claim:
    """The outcome of begin(): ownership (with the record's ETag) or the stored result of a finished run."""

    kind: ClaimKind
    key: str
    etag: str | None = None
    result: str | None = None

    @property
    def owned(self) -> bool:
        """True when the caller must do the work and then complete() or release()."""
        return self.kind in (ClaimKind.NEW, ClaimKind.TAKEN_OVER)


class IdempotencyStore(Protocol):
    """Claims keys so a redelivered event is processed once and its answer reused."""

    async def begin(self, key: str, stale_after_seconds: float) -> Claim:
        """Claim key; raise KeyInProgressError while another worker holds a fresh claim."""

    async def complete(self, key: str, result_json: str, claim: Claim) -> None:
        """Record the finished result for key."""

    async def release(self, key: str, claim: Claim) -> None:
        """Give up an owned claim (transient failure) so a retry starts fresh."""


def partition_key(key: str, prefix: str = PARTITION_PREFIX) -> str:
    """The Table PartitionKey for a key: the prefix and two hex digits of its SHA-256 (256 partitions)."""
    return prefix + hashlib.sha256(key.encode()).hexdigest()[:2]


def row_key(key: str) -> str:
    """The Table RowKey for a key: readable when safe, a SHA-256 otherwise."""
    if _SAFE_KEY.match(key):
        return f"k_{key}"
    return f"h_{hashlib.sha256(key.encode()).hexdigest()}"


@dataclass(frozen=True)
class StoredClaim:
    """What a store holds for a key, as the claim decision needs it."""

    state: str
    started_at: datetime
    expires_at: datetime
    result: str | None = None


def decide_claim(existing: StoredClaim | None, now: datetime, stale_after_seconds: float) -> ClaimKind:
    """The one claim rule every store applies to what it read: NEW, COMPLETED or TAKEN_OVER.

    Absent or expired: new. Completed within the window: completed (the stored answer is replayed).
    In progress and younger than `stale_after_seconds`: KeyInProgressError, with how long until it is
    stale as retry_after. Older: the worker that claimed it died, so the caller takes it over.
    """
    if existing is None or existing.expires_at <= now:
        return ClaimKind.NEW
    if existing.state == COMPLETED:
        return ClaimKind.COMPLETED
    age = (now - existing.started_at).total_seconds()
    if age < stale_after_seconds:
        raise KeyInProgressError(f"another worker has been processing this event for {age:.0f}s",
                                 retry_after=max(stale_after_seconds - age, 1.0))
    return ClaimKind.TAKEN_OVER


def log_claim(kind: str, key: str, **fields: object) -> None:
    """One log line per claim outcome (a plain new claim only at DEBUG: its outcome line follows)."""
    level = logging.DEBUG if kind == ClaimKind.NEW and not fields else logging.INFO
    log.log(level, "idempotency %s: %s", row_key(key), kind,
            extra={"idempotency_key": row_key(key), "claim": kind, **fields})


def utc_clock() -> datetime:
    """The stores' default clock."""
    return datetime.now(UTC)


class TableIdempotencyStore(LazyTable):
    """Azure Table store: create-if-absent and ETag-conditioned replace make ownership exclusive."""

    def __init__(self, conn: StorageConnection, table_name: str, window_seconds: float, *,
                 clock: Callable[[], datetime] = utc_clock, client: TableRestClient | None = None) -> None:
        super().__init__(conn, table_name, client)
        self._window = timedelta(seconds=window_seconds)
        self._clock = clock

    def _entity(self, key: str, state: str, started_at: datetime, now: datetime,
                result: str | None = None, owner: str = "") -> dict[str, Any]:
        entity: dict[str, Any] = {"PartitionKey": partition_key(key), "RowKey": row_key(key), "Key": key[:512],
                                  "State": state, "StartedAt": started_at, "ExpiresAt": now + self._window,
                                  "Owner": owner}
        if result is not None:
            entity["Result"] = result
            entity["CompletedAt"] = now
        return entity

    async def begin(self, key: str, stale_after_seconds: float) -> Claim:
        """Claim key; raise KeyInProgressError while another worker holds a fresh claim."""
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

        table = self._table()
        rk = row_key(key)
        # Names this attempt in the record: a write whose answer was lost and retried by the client
        # (409 or 412 the second time) is then recognised as ours rather than as another worker's.
        owner = uuid.uuid4().hex
        attempted = ClaimKind.NEW
        # Each round either wins a conditional write or learns the state that beat it; losing a race
        # only costs another round, and a handful of rounds means contention worth retrying later.
        for _ in range(_MAX_RACE_ROUNDS):
            now = self._clock()
            try:
                etag = await table.insert(self._entity(key, IN_PROGRESS, now, now, owner=owner))
            except ResourceExistsError:
                pass
            except ResourceNotFoundError:
                # The table itself is missing (first run against a fresh account): make it, try again.
                await self._ensure_table()
                continue
            else:
                log_claim("new", key)
                return Claim(ClaimKind.NEW, key, etag)
            try:
                existing = await table.get(partition_key(key), rk)
            except ResourceNotFoundError:
                continue  # released between our insert and read: insert again
            if existing.get("Owner") == owner and existing.get("State") == IN_PROGRESS:
                log_claim(attempted.value, key, recovered=True)
                return Claim(attempted, key, existing.etag)
            stored = StoredClaim(str(existing.get("State")), _as_utc(existing.get("StartedAt")),
                                 _as_utc(existing.get("ExpiresAt")), existing.get("Result"))
            kind = decide_claim(stored, now, stale_after_seconds)
            if kind is ClaimKind.COMPLETED:
                log_claim("completed", key)
                return Claim(ClaimKind.COMPLETED, key, existing.etag, stored.result)
            attempted = kind
            try:
                etag = await table.replace(self._entity(key, IN_PROGRESS, now, now, owner=owner), existing.etag)
            except (ResourceModifiedError, ResourceNotFoundError):
                continue  # someone else changed it first (or our retried write did): look again
            log_claim(kind.value, key, previous_state=existing.get("State"))
            return Claim(kind, key, etag)
        raise TransientError(f"idempotency record {rk} kept changing under contention",
                             reason="idempotency_contention", retry_after=1.0)

    async def complete(self, key: str, result_json: str, claim: Claim) -> None:
        """Record the finished result; if the claim was lost meanwhile, the result is still recorded."""
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        if not claim.owned:
            return
        if len(result_json) > _MAX_RESULT_CHARS:
            # Cannot be stored; forgetting the key only costs a repeated Graph call on a duplicate.
            log.warning("idempotency %s: result too large to store; releasing instead", row_key(key),
                        extra={"idempotency_key": row_key(key), "result_chars": len(result_json)})
            await self.release(key, claim)
            return
        now = self._clock()
        entity = self._entity(key, COMPLETED, now, now, result_json)
        table = self._table()
        try:
            await table.replace(entity, claim.etag)
        except (ResourceModifiedError, ResourceNotFoundError):
            # A worker took over a claim it thought stale; our answer is as good as theirs, and
            # recording it spares the next duplicate a Graph call.
            log.warning("idempotency %s: claim lost before completion; recording the result anyway",
                        row_key(key), extra={"idempotency_key": row_key(key)})
            await table.replace(entity, None)

    async def release(self, key: str, claim: Claim) -> None:
        """Delete an owned claim so a retry starts fresh; a claim someone else took over is left alone."""
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        if not claim.owned or claim.etag is None:
            return
        try:
            await self._table().delete(partition_key(key), row_key(key), claim.etag)
        except (ResourceModifiedError, ResourceNotFoundError):
            pass


def _as_utc(value: Any) -> datetime:
    if not isinstance(value, datetime):
        # A record without the field (written by hand, say) counts as long expired / long started.
        return datetime.min.replace(tzinfo=UTC)
    return value if value.tzinfo else value.replace(tzinfo=UTC)
