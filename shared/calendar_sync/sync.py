"""The calendar-sync functions' logic: notifications, lifecycle events and resyncs in, webhooks out.

Every queued notification is checked first against its subscription's stored clientState (compared in constant
time): an unknown subscription or a wrong clientState is dropped, logged and counted with its reason, and
never read further. A change notification is then deduplicated on the event id and its `@odata.etag` (Graph
delivers at least once and several times per edit), the event read by its immutable id, and judged as
`changes` says. A change the app is writing right now is looked at again a few seconds later, then left to
the next resync. Lifecycle events: `reauthorizationRequired` reauthorizes, `subscriptionRemoved` makes the
subscription again and resyncs, `missed` resyncs. A resync reads `calendarView/delta` from the organizer's
kept delta link and runs every changed event through the same judgement, so a lost notification is repaired.
Every Graph call here goes through the organizer's MailboxLimiter (4 at once per mailbox).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.calendar_sync.changes import EventReader, OrganizerChanges, Verdict
from shared.calendar_sync.keeper import ACTIVE, SubscriptionKeeper
from shared.calendar_sync.notifications import CHANGE, LIFECYCLE, etag_of, event_id_of
from shared.common.clock import format_timestamp, parse_timestamp_or_none
from shared.exceptions import GraphRequestError, JoinLinkError, MeetingNotFoundError, RecordConflictError
from shared.graph.calendar import CalendarEvent, CalendarWriter, event_from_json
from shared.graph.subscriptions import MailboxLimiter, SubscriptionClient
from shared.pipeline.join_url_resolver import JoinUrlResolver
from shared.redaction import hash_user
from shared.storage.requeue import Requeuer
from shared.storage.subscriptions import SubscriptionRecord, SubscriptionStore

log = logging.getLogger(__name__)
# A change the app is writing is looked at again after 5, 10, 20, 40 s; after that the next resync has it.
LATER_DELAYS = (5, 10, 20, 40)
# The window a first delta round covers: appointments from a week ago to a little over a year ahead.
WINDOW_BEFORE = timedelta(days=7)
WINDOW_AFTER = timedelta(days=400)
_SEEN = 4096


@dataclass
class SyncOutcome:
    """The webhooks to send (outbox messages) and, for a dropped notification, why."""

    webhooks: list[str] = field(default_factory=list)
    dropped: str | None = None


@dataclass(frozen=True)
class Connected:
    """An organizer the token vault has connected (the timer's round makes their subscription when missing)."""

    organizer: str
    tenant_id: str | None
    key: str | None = None  # the vault's tenant/object id, when known without asking Graph


class _Links:
    """The links of an event whose join URL changed: its meeting found by the URL, then the client's link."""

    def __init__(self, calendar: CalendarWriter, resolver: JoinUrlResolver, limiter: MailboxLimiter) -> None:
        self._calendar = calendar
        self._resolver = resolver
        self._limiter = limiter

    async def links(self, organizer: str, join_url: str, tenant: str | None) -> tuple[str, str]:
        """(meeting id, virtual-appointment link)."""
        async with self._limiter.slot(organizer):
            meeting_id = await self._calendar.meeting_id(organizer, join_url, tenant=tenant)
            return await self._resolver.resolve(organizer, meeting_id, None, tenant=tenant)


class CalendarSync:
    """Notifications, lifecycle events and the timer's round, against the stores and Graph."""

    def __init__(self, keeper: SubscriptionKeeper, client: SubscriptionClient, store: SubscriptionStore,
                 changes: OrganizerChanges, calendar: CalendarWriter, limiter: MailboxLimiter, requeuer: Requeuer, *,
                 resync_hours: float, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._keeper = keeper
        self._client = client
        self._store = store
        self._changes = changes
        self._calendar = calendar
        self._limiter = limiter
        self._requeuer = requeuer
        self._resync_every = timedelta(hours=resync_hours)
        self._clock = clock
        # Per worker: notifications already handled (id + etag + change type), events already indexed.
        self._seen: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self._indexed: set[str] = set()
        self.dropped: dict[str, int] = {}

    @staticmethod
    def links(calendar: CalendarWriter, resolver: JoinUrlResolver, limiter: MailboxLimiter) -> _Links:
        """The link resolver OrganizerChanges needs, over the calendar and the join-URL resolver."""
        return _Links(calendar, resolver, limiter)

    @staticmethod
    def reader(calendar: CalendarWriter, limiter: MailboxLimiter) -> EventReader:
        """The event reader OrganizerChanges needs: one GET by immutable id, under the mailbox's limiter."""
        async def read(organizer: str, event_id: str, tenant: str | None) -> CalendarEvent | None:
            return await limiter.run(organizer, lambda: calendar.get(organizer, event_id, tenant=tenant))

        return read

    async def aclose(self) -> None:
        """Release the requeuer's connections (the keeper closes the store)."""
        await self._requeuer.aclose()

    async def handle(self, text: str, dequeue_count: int = 1) -> SyncOutcome:
        """One `calendar-notifications` message (written only by the app: an unreadable one raises, to poison).

        A redelivered message (`dequeue_count` > 1) tells again a change its earlier attempt recorded."""
        doc = json.loads(text)
        notification: dict[str, Any] = doc["notification"]
        record = await self._store.by_subscription(str(notification.get("subscriptionId") or ""))
        if record is None:
            return self._drop("unknown_subscription")
        if not record.client_state or not hmac.compare_digest(str(notification.get("clientState") or "").encode(),
                                                              record.client_state.encode()):
            return self._drop("client_state_mismatch", record)
        tenant = notification.get("tenantId")
        if isinstance(tenant, str) and record.tenant_id and tenant.lower() != record.tenant_id.lower():
            return self._drop("tenant_mismatch", record)
        if doc.get("kind") == LIFECYCLE:
            return await self._lifecycle(record, str(notification.get("lifecycleEvent") or ""), dequeue_count > 1)
        if doc.get("kind") != CHANGE:
            return self._drop("unknown_kind", record)
        event_id = event_id_of(notification)
        if event_id is None:
            return self._drop("no_event_id", record)
        change_type = str(notification.get("changeType") or "")
        seen = (event_id, etag_of(notification), change_type)
        if seen in self._seen:
            return self._drop("duplicate", record)
        hooks, later = await self._one(record, event_id, removed=change_type == "deleted", retell=dequeue_count > 1)
        if later:
            attempt = int(doc.get("attempt") or 0)
            if attempt < len(LATER_DELAYS):
                await self._requeuer.requeue(json.dumps({**doc, "attempt": attempt + 1}), LATER_DELAYS[attempt])
            else:
                log.info("calendar change left to the next resync (the app kept writing the appointment)",
                         extra={"organizer_hash": hash_user(record.organizer), "outcome": "organizer_change_later"})
            return SyncOutcome(hooks)
        self._remember(seen)
        return SyncOutcome(hooks)

    async def run(self, connected: Iterable[Connected] | None) -> SyncOutcome:
        """The timer's round: a subscription for every connected organizer, each renewed or made again when due, the
        rows of organizers no longer connected dropped, and each calendar resynced when its last resync is old.

        `connected` is None when the app cannot list its organizers (CREDENTIAL_MODE=dev_password): then only the
        rows already made are kept.
        """
        rows = {row.organizer_key: row for row in await self._store.all()}
        outcome = SyncOutcome()
        keys: set[str] | None = None if connected is None else set()
        for organizer in connected or []:
            if organizer.key and keys is not None:
                keys.add(organizer.key)
            try:
                made = await self._keeper.ensure(organizer.organizer, organizer.tenant_id)
            except JoinLinkError as exc:
                _health(organizer.organizer, exc.reason)
                continue
            rows[made.organizer_key] = made
            if keys is not None:
                keys.add(made.organizer_key)
        for key, row in rows.items():
            try:
                if keys is not None and key not in keys:
                    await self._keeper.forget(row)
                    continue
                row = await self._keeper.keep(row)
                _health(row.organizer, row.state)
                if row.state == ACTIVE and self._resync_due(row):
                    outcome.webhooks.extend(await self.resync(row))
            except JoinLinkError as exc:  # one organizer's trouble never stops the round
                _health(row.organizer, exc.reason)
        return outcome

    async def resync(self, record: SubscriptionRecord, *, retell: bool = False) -> list[str]:
        """One calendarView delta round from the kept link, every changed event judged; the new link kept."""
        now = self._clock()
        try:
            round_ = await self._client.delta(record.organizer, record.tenant_id, record.delta_link,
                                              start=now - WINDOW_BEFORE, end=now + WINDOW_AFTER)
        except (GraphRequestError, MeetingNotFoundError):
            if record.delta_link is None:
                raise
            # The delta link lapsed (Graph forgets sync state): a full round instead.
            round_ = await self._client.delta(record.organizer, record.tenant_id, None,
                                              start=now - WINDOW_BEFORE, end=now + WINDOW_AFTER)
        items = [item for item in round_.items if item.get("id")]
        results = await asyncio.gather(*(self._one(record, str(item["id"]), removed="@removed" in item,
                                                   listed=item, retell=retell) for item in items),
                                       return_exceptions=True)
        hooks: list[str] = []
        handed_on = 0
        for item, result in zip(items, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result
            if isinstance(result, Exception) or result[1]:
                # One event's failed read (or a write of the app's under way) must not fail the round: under
                # Graph's faults a round of many events would then rarely finish, and its delta link never
                # move. The event goes on the notification queue alone, with its retries and its poison queue.
                await self._requeuer.requeue(json.dumps(_look_again(record, str(item["id"]), "@removed" in item)),
                                             LATER_DELAYS[0])
                handed_on += 1
                continue
            hooks.extend(result[0])
        for attempt in range(3):
            current = record if attempt == 0 else await self._store.get(record.organizer_key)
            if current is None:
                break
            try:
                await self._keeper.write(current, delta_link=round_.delta_link or current.delta_link,
                                         last_resync_at=format_timestamp(now))
                break
            except RecordConflictError:
                continue
        log.info("calendar resynced: %d changed events, %d webhooks, %d looked at again alone", len(items),
                 len(hooks), handed_on,
                 extra={"organizer_hash": hash_user(record.organizer), "outcome": "calendar_resynced"})
        return hooks

    async def _lifecycle(self, record: SubscriptionRecord, event: str, retell: bool) -> SyncOutcome:
        log.info("lifecycle notification %s for an organizer", event,
                 extra={"organizer_hash": hash_user(record.organizer), "outcome": f"lifecycle_{event}"})
        if event == "reauthorizationRequired":
            await self._keeper.reauthorize(record)
            return SyncOutcome()
        if event == "subscriptionRemoved":
            made = await self._keeper.recreate(record, "subscriptionRemoved")
            return SyncOutcome(await self.resync(made, retell=retell) if made.state == ACTIVE else [])
        if event == "missed":
            return SyncOutcome(await self.resync(record, retell=retell))
        return self._drop("unknown_lifecycle_event", record)

    async def _one(self, record: SubscriptionRecord, event_id: str, *, removed: bool,
                   listed: dict[str, Any] | None = None, retell: bool = False) -> tuple[list[str], bool]:
        """One event of the organizer's judged against its appointment: (webhooks, to look at again later).

        A delta round's item (`listed`) of an event seen before is judged from the item itself: its times and
        cancellation are there, and the index says whose it is, so the round costs no Graph read per event. Any
        other event is read by its immutable id for the app's property (delta items carry none)."""
        known = await self._store.appointment_of(event_id) if listed is not None else None
        if listed is not None and known is not None and not removed and _has_times(listed):
            return await self._judged(known, _listed_event(listed, known), removed=False, retell=retell)
        if listed is not None and not removed and listed.get("isOnlineMeeting") is False and known is None:
            return [], False  # never the app's: its events all have a Teams meeting
        # A removed item names only the id, and an event is in the index only once a notification or a round has
        # read it (its `created` notification may have been lost, or come before there was a subscription): read
        # it, as Deleted Items keeps it with its property; one gone for good matches nothing.
        event = await self._limiter.run(record.organizer, lambda: self._calendar.get(
            record.organizer, event_id, tenant=record.tenant_id))
        appointment = event.appointment_id if event is not None else None
        if event is not None and appointment is not None:
            await self._index(event, appointment)
        elif appointment is None:
            # Gone for good (404), or an event without the app's property: only one seen before can be matched.
            appointment = known or (await self._store.appointment_of(event_id) if event is None else None)
        if appointment is None:
            return [], False
        return await self._judged(appointment, event, removed=removed, retell=retell)

    async def _judged(self, appointment: str, event: CalendarEvent | None, *, removed: bool,
                      retell: bool) -> tuple[list[str], bool]:
        judgement, hook = await self._changes.apply(appointment, event, removed=removed, retell=retell)
        return ([hook.to_message()] if hook is not None else []), judgement.verdict is Verdict.LATER

    async def _index(self, event: CalendarEvent, appointment_id: str) -> None:
        if event.id not in self._indexed:
            await self._store.remember_event(event.id, appointment_id)
            self._indexed.add(event.id)

    def _resync_due(self, record: SubscriptionRecord) -> bool:
        last = parse_timestamp_or_none(record.last_resync_at)
        return last is None or self._clock() - last >= self._resync_every

    def _remember(self, seen: tuple[str, str, str]) -> None:
        self._seen[seen] = None
        while len(self._seen) > _SEEN:
            self._seen.popitem(last=False)

    def _drop(self, reason: str, record: SubscriptionRecord | None = None) -> SyncOutcome:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        log.warning("calendar notification dropped: %s", reason,
                    extra={"outcome": "notification_dropped", "reason": reason,
                           "organizer_hash": hash_user(record.organizer) if record is not None else None})
        return SyncOutcome(dropped=reason)


def _look_again(record: SubscriptionRecord, event_id: str, removed: bool) -> dict[str, Any]:
    """A queued change of one event from a resync, in the shape of Graph's (its subscription's clientState)."""
    return {"kind": CHANGE, "notification": {
        "subscriptionId": record.subscription_id, "clientState": record.client_state, "tenantId": record.tenant_id,
        "changeType": "deleted" if removed else "updated", "resourceData": {"id": event_id}}}


def _has_times(item: dict[str, Any]) -> bool:
    return all(isinstance(item.get(name), dict) and item[name].get("dateTime") for name in ("start", "end"))


def _listed_event(item: dict[str, Any], appointment_id: str) -> CalendarEvent:
    """A delta item of a known event as the event, its appointment from the index."""
    return replace(event_from_json(item), appointment_id=appointment_id)


def _health(organizer: str, state: str) -> None:
    log.info("calendar subscription of an organizer: %s", state,
             extra={"organizer_hash": hash_user(organizer), "outcome": "subscription_health", "state": state})

