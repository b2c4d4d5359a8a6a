"""Calendar sync against in-memory stores and fake Graph calls: the judgement of a change, the clientState check,
dedupe, a change met while the app writes, lifecycle events, resyncs, and the subscription's own states."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.calendar_sync.changes import OrganizerChanges, Verdict, judge
from shared.calendar_sync.keeper import ACTIVE, SubscriptionKeeper, organizer_key
from shared.calendar_sync.sync import CalendarSync, Connected
from shared.common.vocabulary import AppointmentStatus, MeetingKind, WebhookType
from shared.exceptions import (
    ForbiddenError,
    GraphUnavailableError,
    MeetingNotFoundError,
    OrganizerNotConnectedError,
    SubscriptionLimitError,
)
from shared.graph.calendar import CalendarEvent
from shared.graph.subscriptions import DeltaRound, MailboxLimiter, Subscription
from shared.identity.tokens import OrganizerIdentity
from shared.storage.appointments import AppointmentRecord
from shared.storage.subscriptions import SubscriptionRecord
from shared.testing.appointments import InMemoryAppointmentStore
from shared.testing.requeue import InMemoryRequeuer
from shared.testing.subscriptions import InMemorySubscriptionStore

NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
ORGANIZER = "staff@contoso.example"
TENANT = "7d0c2e5a-1b3f-4c8e-9a6d-0e5f4b3c2a10"
OID = "4c7e1d2a-9b3f-4e5d-8a6c-1f2e3d4c5b6a"
START, END = datetime(2026, 12, 3, 9, 0, tzinfo=UTC), datetime(2026, 12, 3, 9, 30, tzinfo=UTC)


class FakeSubscriptions:
    """Graph's subscriptions: made, renewed, reauthorized and deleted; failures raised in order."""

    def __init__(self) -> None:
        self.live: dict[str, datetime] = {}
        self.calls: list[str] = []
        self.failures: list[BaseException] = []
        self.delta_items: list[dict[str, Any]] = []
        self.made = 0

    def _fail(self) -> None:
        if self.failures:
            raise self.failures.pop(0)

    async def create(self, organizer: str, tenant: str | None, *, notification_url: str, lifecycle_url: str,
                     client_state: str, expires: datetime) -> Subscription:
        self.calls.append("create")
        self._fail()
        assert notification_url.endswith("/graph/notifications") and lifecycle_url.endswith("/graph/lifecycle")
        assert len(client_state) <= 128
        self.made += 1
        sub_id = f"sub-{self.made}"
        self.live[sub_id] = expires
        return Subscription(sub_id, expires)

    async def renew(self, organizer: str, tenant: str | None, subscription_id: str, expires: datetime) -> Subscription:
        self.calls.append("renew")
        self._fail()
        if subscription_id not in self.live:
            raise MeetingNotFoundError("Graph 404")
        self.live[subscription_id] = expires
        return Subscription(subscription_id, expires)

    async def reauthorize(self, organizer: str, tenant: str | None, subscription_id: str) -> None:
        self.calls.append("reauthorize")
        self._fail()
        if subscription_id not in self.live:
            raise MeetingNotFoundError("Graph 404")

    async def delete(self, organizer: str, tenant: str | None, subscription_id: str) -> bool:
        self.calls.append("delete")
        return self.live.pop(subscription_id, None) is not None

    async def delta(self, organizer: str, tenant: str | None, delta_link: str | None, *, start: datetime,
                    end: datetime) -> DeltaRound:
        self.calls.append(f"delta:{delta_link or 'first'}")
        return DeltaRound(list(self.delta_items), f"https://graph/delta?token={len(self.calls)}")


class FakeCalendar:
    """Events by immutable id."""

    def __init__(self) -> None:
        self.events: dict[str, CalendarEvent] = {}
        self.failures: dict[str, Exception] = {}  # the next read of that event fails so
        self.gets = 0

    async def get(self, organizer: str, event_id: str, *, tenant: str | None = None) -> CalendarEvent | None:
        self.gets += 1
        if event_id in self.failures:
            raise self.failures.pop(event_id)
        return self.events.get(event_id)


class FakeLinks:
    async def links(self, organizer: str, join_url: str, tenant: str | None) -> tuple[str, str]:
        return "meeting-2", "https://visit.teams.microsoft.com/new"


async def identify(organizer: str, tenant: str | None) -> OrganizerIdentity:
    if organizer == "gone@contoso.example":
        raise OrganizerNotConnectedError("not connected")
    return OrganizerIdentity(TENANT, OID if organizer == ORGANIZER else organizer)


def record(**changes: Any) -> AppointmentRecord:
    base = AppointmentRecord("apt-1", ORGANIZER, status=AppointmentStatus.SCHEDULED, tenant_id=TENANT,
                             online_meeting_id="meeting-1", meeting_created_by_app=True,
                             join_url="https://visit.teams.microsoft.com/a", organizer_join_url="https://teams/l/1",
                             start="2026-12-03T09:00:00.000Z", end="2026-12-03T09:30:00.000Z",
                             meeting_kind=MeetingKind.CALENDAR, calendar_event_id="EV1", version=1,
                             callback_url="https://scheduler.example/hooks")
    return replace(base, **changes)


def event(**changes: Any) -> CalendarEvent:
    base = CalendarEvent("EV1", "https://teams/l/1", True, START, END, "Follow-up", False, "apt-1")
    return replace(base, **changes)


def verdict(rec: AppointmentRecord | None, ev: CalendarEvent | None, removed: bool = False) -> Verdict:
    return judge(rec, ev, removed=removed, now=NOW, stale_after_seconds=300).verdict


def test_the_judgement_of_a_change():
    assert verdict(record(), event()) is Verdict.IGNORE  # the times the app wrote
    assert verdict(record(), event(subject="Renamed")) is Verdict.IGNORE  # a subject alone is no move
    assert verdict(record(), event(start=START + timedelta(hours=1), end=END + timedelta(hours=1))) is Verdict.MOVE
    assert verdict(record(), event(cancelled=True)) is Verdict.CANCEL
    assert verdict(record(), event(), removed=True) is Verdict.CANCEL
    assert verdict(record(), None) is Verdict.CANCEL  # Graph no longer has it
    assert verdict(None, event()) is Verdict.IGNORE
    assert verdict(record(meeting_kind=None), event(cancelled=True)) is Verdict.IGNORE  # standalone
    assert verdict(record(calendar_event_id="OTHER"), event(cancelled=True)) is Verdict.IGNORE
    assert verdict(record(status=AppointmentStatus.CANCELLED), event(cancelled=True)) is Verdict.IGNORE
    # the app is writing this appointment (a live lease, or a create under way): look again later
    assert verdict(record(lease_owner="w", lease_at=NOW - timedelta(seconds=5)), event(cancelled=True)) \
        is Verdict.LATER
    assert verdict(record(status=AppointmentStatus.PENDING), event()) is Verdict.LATER
    # a lease left by a dead worker does not hold the change back
    assert verdict(record(lease_owner="w", lease_at=NOW - timedelta(hours=1)), event(cancelled=True)) \
        is Verdict.CANCEL
    # the organizer's change already on the record
    told = record(last_event_type=WebhookType.RESCHEDULED_BY_ORGANIZER)
    assert verdict(told, event()) is Verdict.RETELL


def test_the_times_a_failed_reschedule_was_writing_are_the_app_s_own():
    # The reschedule's PATCH landed, its read-back failed, the lease went back with the old times: the
    # notification of its own PATCH is no move in Outlook; the event's retry records the new times.
    later = (START + timedelta(hours=2), END + timedelta(hours=2))
    writing = record(writing_start=later[0].isoformat(), writing_end=later[1].isoformat())
    assert verdict(writing, event(start=later[0], end=later[1])) is Verdict.IGNORE
    assert verdict(writing, event(start=START + timedelta(hours=3), end=END + timedelta(hours=3))) is Verdict.MOVE
    assert verdict(writing, event(cancelled=True)) is Verdict.CANCEL


class World:
    """A CalendarSync over in-memory stores and fakes, one organizer subscribed."""

    def __init__(self) -> None:
        self.appointments = InMemoryAppointmentStore()
        self.rows = InMemorySubscriptionStore()
        self.graph = FakeSubscriptions()
        self.calendar = FakeCalendar()
        self.requeuer = InMemoryRequeuer()
        self.now = NOW
        self.keeper = SubscriptionKeeper(self.graph, self.rows, identify, base_url="https://app.example/api",  # type: ignore[arg-type]
                                         minutes=4320, clock=lambda: self.now)
        changes = OrganizerChanges(self.appointments, FakeLinks(), stale_after_seconds=300, clock=lambda: self.now,
                                   reader=CalendarSync.reader(self.calendar, MailboxLimiter()))  # type: ignore[arg-type]
        self.changes = changes
        self.sync = CalendarSync(self.keeper, self.graph, self.rows, changes, self.calendar,  # type: ignore[arg-type]
                                 MailboxLimiter(), self.requeuer, resync_hours=6, clock=lambda: self.now)

    async def booked(self) -> SubscriptionRecord:
        await self.appointments.insert(record())
        self.calendar.events["EV1"] = event()
        return await self.keeper.ensure(ORGANIZER)

    def message(self, sub: SubscriptionRecord, *, change: str = "updated", state: str | None = None,
                etag: str = 'W/"1"', kind: str = "change", **extra: Any) -> str:
        item = {"subscriptionId": sub.subscription_id, "clientState": state or sub.client_state,
                "changeType": change, "resource": "Users/x/Events/EV1",
                "resourceData": {"id": "EV1", "@odata.etag": etag}, **extra}
        return json.dumps({"kind": kind, "notification": item, "attempt": 0})


async def test_an_event_read_before_the_apps_own_reschedule_is_read_again_and_tells_nothing():
    # GIVEN a notification's event read at the old times, then the scheduler's reschedule landing (the event and
    # the record both at the new times) before the record is read
    world = World()
    await world.booked()
    stale = event()
    later = (START + timedelta(days=1), END + timedelta(days=1))
    world.calendar.events["EV1"] = event(start=later[0], end=later[1])
    current = await world.appointments.get("apt-1")
    assert current is not None
    await world.appointments.replace(replace(current, start=later[0].isoformat(), end=later[1].isoformat(),
                                             version=2))
    # THEN the event is read again after the record, and the app's own write is not told as a move
    judgement, hook = await world.changes.apply("apt-1", stale, removed=False)
    assert judgement.verdict is Verdict.IGNORE and hook is None


async def test_a_move_in_outlook_updates_the_record_and_tells_it_once():
    world = World()
    sub = await world.booked()
    assert sub.state == ACTIVE and sub.client_state and len(sub.client_state) >= 40
    world.calendar.events["EV1"] = event(start=START + timedelta(days=1), end=END + timedelta(days=1))
    outcome = await world.sync.handle(world.message(sub))
    (hook,) = outcome.webhooks
    body = json.loads(json.loads(hook)["body"])
    assert body["type"] == WebhookType.RESCHEDULED_BY_ORGANIZER
    assert body["data"]["startDateTime"] == "2026-12-04T09:00:00.000Z" and body["data"]["version"] == 2
    assert body["data"]["joinUrl"] == "https://visit.teams.microsoft.com/a"
    assert json.loads(hook)["callbackUrl"] == "https://scheduler.example/hooks"
    stored = await world.appointments.get("apt-1")
    assert stored.start == "2026-12-04T09:00:00.000Z" and stored.version == 2
    # Graph's duplicate (same etag): dropped before any Graph call; another copy (new etag): told nothing new
    gets = world.calendar.gets
    assert (await world.sync.handle(world.message(sub))).dropped == "duplicate" and world.calendar.gets == gets
    assert (await world.sync.handle(world.message(sub, etag='W/"2"'))).webhooks == []
    # a redelivery of one message (its first attempt may have died before its webhook): the same webhook again
    again = await world.sync.handle(world.message(sub, etag='W/"3"'), dequeue_count=2)
    assert [json.loads(h)["webhookId"] for h in again.webhooks] == [json.loads(hook)["webhookId"]]


async def test_a_new_join_url_is_resolved_again():
    world = World()
    sub = await world.booked()
    world.calendar.events["EV1"] = event(start=START + timedelta(days=1), end=END + timedelta(days=1),
                                         join_url="https://teams/l/2")
    (hook,) = (await world.sync.handle(world.message(sub))).webhooks
    data = json.loads(json.loads(hook)["body"])["data"]
    assert data["joinUrl"] == "https://visit.teams.microsoft.com/new" and data["onlineMeetingId"] == "meeting-2"
    assert data["organizerJoinUrl"] == "https://teams/l/2"


async def test_a_cancel_or_delete_in_outlook_cancels_the_record():
    world = World()
    sub = await world.booked()
    world.calendar.events["EV1"] = event(cancelled=True)
    (hook,) = (await world.sync.handle(world.message(sub))).webhooks
    body = json.loads(json.loads(hook)["body"])
    assert body["type"] == WebhookType.CANCELLED_BY_ORGANIZER and body["data"]["status"] == "cancelled"
    assert body["data"]["joinUrl"] is None and body["data"]["version"] == 2
    assert (await world.appointments.get("apt-1")).status == AppointmentStatus.CANCELLED
    # the move to Deleted Items that follows tells nothing more
    assert (await world.sync.handle(world.message(sub, change="deleted"))).webhooks == []


async def test_an_event_gone_for_good_is_matched_by_the_event_it_was_seen_as():
    world = World()
    sub = await world.booked()
    assert (await world.sync.handle(world.message(sub, etag='W/"0"'))).webhooks == []  # seen: remembered
    del world.calendar.events["EV1"]  # purged: 404, no property to read
    (hook,) = (await world.sync.handle(world.message(sub, change="deleted"))).webhooks
    assert json.loads(hook)["type"] == WebhookType.CANCELLED_BY_ORGANIZER


async def test_a_wrong_client_state_or_unknown_subscription_is_dropped_unread():
    world = World()
    sub = await world.booked()
    world.calendar.events["EV1"] = event(cancelled=True)
    assert (await world.sync.handle(world.message(sub, state="guess"))).dropped == "client_state_mismatch"
    assert (await world.sync.handle(world.message(replace(sub, subscription_id="nope")))).dropped == \
        "unknown_subscription"
    other_tenant = world.message(sub, tenantId="00000000-0000-0000-0000-000000000001")
    assert (await world.sync.handle(other_tenant)).dropped == "tenant_mismatch"
    assert world.calendar.gets == 0 and (await world.appointments.get("apt-1")).status == "scheduled"
    assert world.sync.dropped == {"client_state_mismatch": 1, "unknown_subscription": 1, "tenant_mismatch": 1}


async def test_a_change_met_while_the_app_writes_is_looked_at_again_then_left_to_the_resync():
    world = World()
    sub = await world.booked()
    held = await world.appointments.get("apt-1")
    await world.appointments.replace(held.leased("worker", NOW))
    world.calendar.events["EV1"] = event(start=START + timedelta(hours=2), end=END + timedelta(hours=2))
    message = world.message(sub)
    for delay in (5, 10, 20, 40):
        assert (await world.sync.handle(message)).webhooks == []
        message, waited = world.requeuer.sent[-1]
        assert waited == delay
    await world.sync.handle(message)
    assert len(world.requeuer.sent) == 4  # no fifth: the resync has it


async def test_missed_resyncs_from_the_kept_delta_link_and_repairs_a_lost_change():
    world = World()
    sub = await world.booked()
    world.calendar.events["EV1"] = event(start=START + timedelta(hours=3), end=END + timedelta(hours=3))
    world.graph.delta_items = [{"id": "EV1", "isOnlineMeeting": True},
                               {"id": "PRIVATE", "isOnlineMeeting": False}]  # not the app's: never read
    missed = world.message(sub, kind="lifecycle", lifecycleEvent="missed")
    (hook,) = (await world.sync.handle(missed)).webhooks
    # read for its property, and again after the record: a move is judged on an event no older than the record
    assert json.loads(hook)["type"] == WebhookType.RESCHEDULED_BY_ORGANIZER and world.calendar.gets == 2
    kept = await world.rows.get(sub.organizer_key)
    assert kept.delta_link and kept.last_resync_at
    # the next round: the event is known, judged from the delta item itself; it moved again, so it is read once
    world.graph.delta_items = [{"id": "EV1", "isOnlineMeeting": True, "isCancelled": False,
                                "onlineMeeting": {"joinUrl": "https://teams/l/1"},
                                "start": {"dateTime": "2026-12-05T10:00:00.0000000", "timeZone": "UTC"},
                                "end": {"dateTime": "2026-12-05T10:30:00.0000000", "timeZone": "UTC"}}]
    world.calendar.events["EV1"] = event(start=datetime(2026, 12, 5, 10, 0, tzinfo=UTC),
                                         end=datetime(2026, 12, 5, 10, 30, tzinfo=UTC))
    (hook,) = (await world.sync.handle(missed)).webhooks
    assert world.graph.calls[-1] == f"delta:{kept.delta_link}" and world.calendar.gets == 3
    assert json.loads(json.loads(hook)["body"])["data"]["startDateTime"] == "2026-12-05T10:00:00.000Z"
    # a removed item of a known event: read (Deleted Items) or, gone for good, cancelled by the index
    del world.calendar.events["EV1"]
    world.graph.delta_items = [{"id": "EV1", "@removed": {"reason": "deleted"}}]
    (hook,) = (await world.sync.handle(missed)).webhooks
    assert json.loads(hook)["type"] == WebhookType.CANCELLED_BY_ORGANIZER


async def test_a_resync_round_finishes_when_one_event_cannot_be_read_and_that_event_is_looked_at_alone():
    world = World()
    sub = await world.booked()
    await world.appointments.insert(record(appointment_id="apt-2", calendar_event_id="EV2"))
    world.calendar.events["EV1"] = event(start=START + timedelta(hours=3), end=END + timedelta(hours=3))
    world.calendar.events["EV2"] = event(id="EV2", appointment_id="apt-2", cancelled=True)
    world.calendar.failures["EV1"] = GraphUnavailableError("Graph answered 503", reason="graph_unavailable")
    world.graph.delta_items = [{"id": "EV1", "isOnlineMeeting": True}, {"id": "EV2", "isOnlineMeeting": True}]
    missed = world.message(sub, kind="lifecycle", lifecycleEvent="missed")
    # the round tells what it could read and keeps its delta link
    (hook,) = (await world.sync.handle(missed)).webhooks
    assert json.loads(hook)["type"] == WebhookType.CANCELLED_BY_ORGANIZER
    assert (await world.rows.get(sub.organizer_key)).delta_link
    # the event it could not read is queued alone, as a change of its subscription, and told from there
    ((alone, delay),) = world.requeuer.sent
    assert delay == 5 and json.loads(alone)["notification"]["resourceData"] == {"id": "EV1"}
    (hook,) = (await world.sync.handle(alone)).webhooks
    assert json.loads(hook)["type"] == WebhookType.RESCHEDULED_BY_ORGANIZER


async def test_lifecycle_reauthorize_and_removed():
    world = World()
    sub = await world.booked()
    await world.sync.handle(world.message(sub, kind="lifecycle", lifecycleEvent="reauthorizationRequired"))
    assert "reauthorize" in world.graph.calls
    await world.sync.handle(world.message(sub, kind="lifecycle", lifecycleEvent="subscriptionRemoved"))
    again = await world.rows.get(sub.organizer_key)
    assert again.subscription_id == "sub-2" and again.client_state != sub.client_state
    assert await world.rows.by_subscription("sub-1") is None


async def test_the_timer_renews_when_half_the_lifetime_is_gone_and_makes_a_lost_one_again():
    world = World()
    sub = await world.booked()
    await world.sync.run(None)
    assert "renew" not in world.graph.calls  # fresh: nothing to do
    world.now = NOW + timedelta(hours=37)
    await world.sync.run(None)
    assert world.graph.calls.count("renew") == 1
    world.graph.live.clear()  # Graph lost it
    world.now = NOW + timedelta(hours=80)
    await world.sync.run(None)
    row = await world.rows.get(sub.organizer_key)
    assert row.subscription_id == "sub-2" and row.state == ACTIVE


async def test_the_timer_subscribes_connected_organizers_and_drops_the_rest():
    world = World()
    sub = await world.booked()
    await world.sync.run([Connected("other@contoso.example", TENANT), Connected("gone@contoso.example", TENANT)])
    keys = {row.organizer_key for row in await world.rows.all()}
    assert keys == {organizer_key(OrganizerIdentity(TENANT, "other@contoso.example"))}  # the first was dropped
    assert sub.organizer_key not in keys


async def test_a_full_mailbox_is_a_named_state_not_retried_for_a_day():
    world = World()
    world.graph.failures = [SubscriptionLimitError("Maximum number of subscriptions has been reached")]
    row = await world.keeper.ensure(ORGANIZER)
    assert row.state == "subscription_limit" and row.subscription_id is None
    await world.keeper.keep(row)
    assert world.graph.calls == ["create"]
    world.now = NOW + timedelta(hours=25)
    assert (await world.keeper.keep(await world.rows.get(row.organizer_key))).state == ACTIVE


@pytest.mark.parametrize("failure, state", [(OrganizerNotConnectedError("token gone"), "organizer_not_connected"),
                                            (ForbiddenError("403"), "forbidden")])
async def test_a_token_that_cannot_do_it_is_reported_not_raised(failure, state):
    world = World()
    sub = await world.booked()
    world.now = NOW + timedelta(hours=40)
    world.graph.failures = [failure]
    await world.sync.run(None)
    row = await world.rows.get(sub.organizer_key)
    assert row.state == state and row.subscription_id == sub.subscription_id
    # once the token works again, the next round renews the same subscription (no second one)
    await world.sync.run(None)
    assert (await world.rows.get(sub.organizer_key)).state == ACTIVE and world.graph.made == 1


async def test_disconnect_deletes_the_subscription_and_the_row():
    world = World()
    sub = await world.booked()
    assert await world.keeper.remove(ORGANIZER)
    assert world.graph.live == {} and await world.rows.get(sub.organizer_key) is None
    assert not await world.keeper.remove(ORGANIZER)


async def test_without_a_notification_url_the_state_says_so():
    world = World()
    world.keeper = SubscriptionKeeper(world.graph, world.rows, identify, base_url=None, minutes=4320)  # type: ignore[arg-type]
    assert (await world.keeper.ensure(ORGANIZER)).state == "notification_url_missing"
    assert world.graph.calls == []


async def test_at_most_four_requests_at_once_per_mailbox_and_others_not_held_back():
    import asyncio

    limiter = MailboxLimiter()
    running: dict[str, int] = {}
    peak: dict[str, int] = {}

    async def call(name: str) -> None:
        organizer = name.lower()
        running[organizer] = running.get(organizer, 0) + 1
        peak[organizer] = max(peak.get(organizer, 0), running[organizer])
        await asyncio.sleep(0.01)
        running[organizer] -= 1

    await asyncio.gather(*(limiter.run(o, lambda o=o: call(o)) for o in ["A@x"] * 10 + ["a@X"] * 5 + ["b@x"] * 3))
    assert peak == {"a@x": 4, "b@x": 3}  # one mailbox whatever the case of its name


async def test_a_notification_without_client_state_or_with_an_unknown_lifecycle_event_is_dropped():
    world = World()
    sub = await world.booked()
    bare = json.dumps({"kind": "change", "notification": {"subscriptionId": sub.subscription_id}, "attempt": 0})
    assert (await world.sync.handle(bare)).dropped == "client_state_mismatch"
    odd = world.message(sub, kind="lifecycle", lifecycleEvent="somethingNew")
    assert (await world.sync.handle(odd)).dropped == "unknown_lifecycle_event"


async def test_a_removed_item_of_an_event_no_notification_ever_named_is_read_and_told():
    # GIVEN an appointment's event whose notifications were all lost (it is in no index), then cancelled in Outlook
    world = World()
    sub = await world.booked()
    world.calendar.events["EV1"] = event(cancelled=True)
    world.graph.delta_items = [{"id": "EV1", "@removed": {"reason": "deleted"}}]
    # WHEN a resync lists it as removed
    (hook,) = (await world.sync.handle(world.message(sub, kind="lifecycle", lifecycleEvent="missed"))).webhooks
    # THEN it is read (Deleted Items keeps its property) and its cancel is told
    assert json.loads(hook)["type"] == WebhookType.CANCELLED_BY_ORGANIZER and world.calendar.gets == 1
