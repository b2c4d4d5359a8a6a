"""One change-notification subscription per connected organizer: made, renewed, reauthorized, made again, removed.

Each subscription gets its own random clientState (32 bytes, URL-safe: Graph allows 128 characters), kept in
the organizer's row beside the subscription id, and `lifecycleNotificationUrl` at creation (it cannot be added
later). Its expiry is GRAPH_SUBSCRIPTION_MINUTES ahead (Graph allows 10,080 for Outlook events); the timer
renews once less than half of that is left, and makes it again when Graph no longer has it. What happened is
the row's state, read by the timer's log, `python -m shared.diagnose` and the organizers command: `active`, or
why not, each a stable code:

- `subscription_limit`: Graph refused a new one, the mailbox has 1,000 subscriptions across all apps (a
  person frees some; the timer tries again only after a day, never in a loop);
- `organizer_not_connected` / `missing_scope` / `forbidden`: the organizer's token cannot do it (reconnect);
- `notification_url_missing`: GRAPH_NOTIFICATION_BASE_URL is unset and WEBSITE_HOSTNAME too;
- `graph_unavailable` (or another transient reason): tried again on the next round.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from shared.common.clock import format_timestamp, parse_timestamp_or_none
from shared.exceptions import (
    JoinLinkError,
    MeetingNotFoundError,
    PermanentError,
    RecordConflictError,
    SubscriptionLimitError,
)
from shared.graph.subscriptions import SubscriptionClient
from shared.identity.tokens import OrganizerIdentity
from shared.redaction import hash_user
from shared.storage.subscriptions import SubscriptionRecord, SubscriptionStore

log = logging.getLogger(__name__)
NOTIFICATIONS_ROUTE = "graph/notifications"
LIFECYCLE_ROUTE = "graph/lifecycle"
ACTIVE = "active"
REMOVED = "removed"
# A full mailbox is not retried on every round: a person has to free subscriptions first.
LIMIT_RETRY = timedelta(hours=24)
_MAX_ROUNDS = 3

Identify = Callable[[str, "str | None"], Awaitable[OrganizerIdentity]]


def organizer_key(identity: OrganizerIdentity) -> str:
    """The row key of an organizer: tenant and object id, as the token vault keys them."""
    return f"{identity.tenant_id.lower()}/{identity.oid.lower()}"


class SubscriptionKeeper:
    """Keeps the organizers' subscriptions in Graph and their rows in the store in step."""

    def __init__(self, client: SubscriptionClient, store: SubscriptionStore, identify: Identify, *,
                 base_url: str | None, minutes: int,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._client = client
        self._store = store
        self._identify = identify
        self._base = base_url.rstrip("/") if base_url else None
        self._lifetime = timedelta(minutes=minutes)
        self._clock = clock

    async def aclose(self) -> None:
        """Release the store's connections."""
        await self._store.aclose()

    @property
    def client(self) -> SubscriptionClient:
        """The Graph side of the subscriptions (the resyncs use it too)."""
        return self._client

    @property
    def store(self) -> SubscriptionStore:
        """Where the rows are."""
        return self._store

    async def identify(self, organizer: str, tenant: str | None = None) -> OrganizerIdentity:
        """Who the organizer is (tenant and object id)."""
        return await self._identify(organizer, tenant)

    async def ensure(self, organizer: str, tenant: str | None = None) -> SubscriptionRecord:
        """The organizer's subscription, made if missing or lapsed, renewed if due; its row says how it stands."""
        identity = await self._identify(organizer, tenant)
        key = organizer_key(identity)
        for _ in range(_MAX_ROUNDS):
            record = await self._store.get(key) or SubscriptionRecord(key, organizer, tenant_id=identity.tenant_id)
            try:
                return await self.keep(replace(record, organizer=organizer))
            except RecordConflictError:
                continue
        raise RecordConflictError("the organizer's subscription row kept changing")

    async def keep(self, record: SubscriptionRecord) -> SubscriptionRecord:
        """One round for one row: renew when due, make again when gone or never made; the row written."""
        now = self._clock()
        if record.state == REMOVED:
            return record
        if record.state == SubscriptionLimitError.reason and not self._due_again(record, now):
            return record
        if record.subscription_id and record.client_state:
            expires = parse_timestamp_or_none(record.expires_at)
            if record.state == ACTIVE and expires is not None and expires - now > self._lifetime / 2:
                return record
            # Due, or the last renewal failed (a token or Graph problem since fixed): renew, never a second one.
            try:
                renewed = await self._client.renew(record.organizer, record.tenant_id, record.subscription_id,
                                                   now + self._lifetime)
            except MeetingNotFoundError:
                return await self.recreate(record, "gone in Graph")
            except JoinLinkError as exc:
                return await self._failed(record, exc)
            expiry = renewed.expires_at or now + self._lifetime
            return await self._write(record, state=ACTIVE, detail=None, expires_at=format_timestamp(expiry))
        return await self.recreate(record, "none yet" if not record.subscription_id else record.state)

    async def recreate(self, record: SubscriptionRecord, why: str) -> SubscriptionRecord:
        """A new subscription with a new clientState (the old one, if Graph still has it, is deleted first)."""
        if self._base is None:
            return await self._write(record, state="notification_url_missing",
                                     detail="set GRAPH_NOTIFICATION_BASE_URL (or run where WEBSITE_HOSTNAME is set)")
        if record.subscription_id:
            try:
                await self._client.delete(record.organizer, record.tenant_id, record.subscription_id)
            except JoinLinkError as exc:
                log.info("old subscription not deleted before a new one: %s", exc.reason)
        now = self._clock()
        client_state = secrets.token_urlsafe(32)
        try:
            made = await self._client.create(
                record.organizer, record.tenant_id, notification_url=f"{self._base}/{NOTIFICATIONS_ROUTE}",
                lifecycle_url=f"{self._base}/{LIFECYCLE_ROUTE}", client_state=client_state,
                expires=now + self._lifetime)
        except JoinLinkError as exc:
            return await self._failed(replace(record, subscription_id=None, client_state=None), exc)
        _log(record, "subscription_created", why)
        return await self._write(record, subscription_id=made.id, client_state=client_state, state=ACTIVE,
                                 detail=None, expires_at=format_timestamp(made.expires_at or now + self._lifetime))

    async def reauthorize(self, record: SubscriptionRecord) -> SubscriptionRecord:
        """Answer reauthorizationRequired: reauthorize, and renew too (Graph's docs allow either)."""
        if not record.subscription_id:
            return await self.recreate(record, "reauthorization without a subscription")
        try:
            await self._client.reauthorize(record.organizer, record.tenant_id, record.subscription_id)
        except MeetingNotFoundError:
            return await self.recreate(record, "gone in Graph")
        except JoinLinkError as exc:
            return await self._failed(record, exc)
        _log(record, "subscription_reauthorized", "reauthorizationRequired")
        return await self.keep(replace(await self._write(record, state=ACTIVE, detail=None), expires_at=None))

    async def remove(self, organizer: str, tenant: str | None = None) -> bool:
        """The organizer disconnected: delete the subscription in Graph (while the token still works) and the row."""
        identity = await self._identify(organizer, tenant)
        record = await self._store.get(organizer_key(identity))
        if record is None:
            return False
        if record.subscription_id:
            try:
                await self._client.delete(record.organizer, record.tenant_id, record.subscription_id)
            except JoinLinkError as exc:
                # Without a token Graph ends it by itself at its expiry; its notifications find no row and are dropped.
                log.warning("subscription of a disconnected organizer not deleted in Graph: %s", exc.reason,
                            extra={"organizer_hash": hash_user(organizer), "reason": exc.reason})
        await self._store.delete(record.organizer_key)
        _log(record, "subscription_removed", "organizer disconnected")
        return True

    async def forget(self, record: SubscriptionRecord) -> None:
        """Drop the row of an organizer no longer connected (their token is gone, so Graph cannot be asked)."""
        await self._store.delete(record.organizer_key)
        _log(record, "subscription_removed", "organizer no longer connected")

    async def write(self, record: SubscriptionRecord, **changes: object) -> SubscriptionRecord:
        """The row with `changes`, written under its ETag."""
        return await self._write(record, **changes)

    def _due_again(self, record: SubscriptionRecord, now: datetime) -> bool:
        updated = parse_timestamp_or_none(record.updated_at)
        return updated is None or now - updated >= LIMIT_RETRY

    async def _failed(self, record: SubscriptionRecord, exc: JoinLinkError) -> SubscriptionRecord:
        kind = "permanent" if isinstance(exc, PermanentError) else "transient"
        log.warning("subscription of an organizer not kept: %s (%s)", exc.reason, kind,
                    extra={"organizer_hash": hash_user(record.organizer), "reason": exc.reason,
                           "outcome": "subscription_failed"})
        return await self._write(record, state=exc.reason, detail=str(exc)[:300])

    async def _write(self, record: SubscriptionRecord, **changes: object) -> SubscriptionRecord:
        changed = replace(record, **changes, updated_at=format_timestamp(self._clock()))  # type: ignore[arg-type]
        return await self._store.put(changed)


def _log(record: SubscriptionRecord, outcome: str, why: str) -> None:
    log.info("%s for an organizer (%s)", outcome.replace("_", " "), why,
             extra={"organizer_hash": hash_user(record.organizer), "outcome": outcome, "reason": why})
