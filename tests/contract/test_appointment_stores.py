"""The appointment record contract, run against the in-memory twin and the Azure Table store (on Azurite) alike:
the record operations themselves, and the lifecycle flow on top of them (out of order, at once, twice)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.exceptions import ForbiddenError, PermanentError, RecordConflictError, TransientError
from shared.graph.meetings import MeetingSpec, external_id
from shared.pipeline.appointment_flow import AppointmentFlow
from shared.pipeline.inbound import parse_event
from shared.pipeline.join_url_resolver import JoinUrlResolver
from shared.storage.appointments import AppointmentRecord, AppointmentStore, TableAppointmentStore
from shared.testing.appointments import InMemoryAppointmentStore
from tests.fakes import FakeGraph, make_flow, no_sleep

pytestmark = pytest.mark.contract
ORG = "scheduler@contoso.test"


@pytest.fixture(params=["memory", "table"])
async def workers(request: pytest.FixtureRequest, azurite_conn: Any) -> AsyncIterator[Callable[[], AppointmentStore]]:
    """A factory of 'workers' sharing one store: the same object in memory, separate clients on one table."""
    if request.param == "memory":
        shared = InMemoryAppointmentStore()
        yield lambda: shared
        return
    table = "apts" + uuid.uuid4().hex[:12]
    made: list[TableAppointmentStore] = []

    def make() -> AppointmentStore:
        store = TableAppointmentStore(azurite_conn, table)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.aclose()


def record(appointment_id: str = "apt-1", **fields: Any) -> AppointmentRecord:
    return AppointmentRecord(appointment_id, ORG, **fields)


async def test_a_record_round_trips_with_every_field(workers):
    store = workers()
    # GIVEN a record with every field set, a sequence beyond 32 bits and an id the table cannot key by
    full = record("apt/with#odd?chars", status="scheduled", tenant_id="7d0c2e5a-1b3f-4c8e-9a6d-0e5f4b3c2a10",
                  online_meeting_id="m1", meeting_created_by_app=True, external_id="va-x", join_url="https://j",
                  organizer_join_url="https://o", start="2026-12-01T08:00:00.000Z", end="2026-12-01T08:30:00.000Z",
                  subject="Follow-up", last_sequence=2**53 - 1, last_occurred_at="2026-11-21T09:00:00.000Z",
                  last_event_id="e1", last_event_type="appointment.created", updated_at="2026-11-21T09:00:01.000Z",
                  lease_owner="w1", lease_at=datetime(2026, 11, 21, 9, 0, 1, tzinfo=UTC),
                  writing_start="2026-12-02T08:00:00.000Z", writing_end="2026-12-02T08:30:00.000Z")
    stored = await store.insert(full)
    # WHEN it is read back THEN it is the same record, with an ETag
    found = await workers().get(full.appointment_id)
    assert found is not None and found.etag == stored.etag and found.etag
    assert replace(found, etag=None) == full


async def test_absent_is_none_and_insert_twice_conflicts(workers):
    store = workers()
    assert await store.get("nobody") is None
    await store.insert(record())
    with pytest.raises(RecordConflictError):
        await workers().insert(record())


async def test_replace_and_delete_need_the_etag_they_read(workers):
    store = workers()
    first = await store.insert(record(status="scheduled"))
    second = await workers().replace(replace(first, subject="moved"))
    assert second.etag != first.etag
    # A writer holding the old version loses, whatever it writes
    with pytest.raises(RecordConflictError):
        await store.replace(replace(first, subject="lost update"))
    with pytest.raises(RecordConflictError):
        await store.delete(first)
    assert (await store.get("apt-1")).subject == "moved"
    await store.delete(second)
    assert await store.get("apt-1") is None
    with pytest.raises(RecordConflictError):
        await store.replace(second)


async def test_of_two_racing_writers_exactly_one_wins(workers):
    base = await workers().insert(record(status="scheduled"))
    outcomes = await asyncio.gather(*(workers().replace(replace(base, subject=f"w{n}")) for n in range(2)),
                                    return_exceptions=True)
    assert sum(isinstance(o, RecordConflictError) for o in outcomes) == 1


# --- the lifecycle flow on each store ------------------------------------------------------------------------

def event(kind: str, sequence: int, event_id: str | None = None, **fields: Any):
    body = {"id": event_id or f"e-{kind}-{sequence}", "type": f"appointment.{kind}", "appointmentId": "apt-1",
            "organizer": ORG, "sequence": sequence, **fields}
    if kind == "rescheduled" and "startDateTime" not in fields:
        body.update(startDateTime=f"2026-12-0{sequence}T09:00:00Z", endDateTime=f"2026-12-0{sequence}T10:00:00Z")
    return parse_event(json.dumps(body))


def flows(workers, graph: FakeGraph, count: int = 2):
    resolver = JoinUrlResolver(graph, inline_throttle_budget=0.0, sleep=no_sleep)
    return [make_flow(graph, resolver, workers(), management=True) for _ in range(count)]


async def outcome(flow, evt) -> str:
    try:
        handled = await flow.handle(evt)
    except PermanentError as exc:
        return exc.reason
    except TransientError as exc:
        return exc.reason
    return f"{handled.action.value}:{handled.result.status}"


async def test_out_of_order_events_end_in_the_latest_state(workers):
    graph = FakeGraph()
    (flow,) = flows(workers, graph, 1)
    assert await outcome(flow, event("rescheduled", 2)) == "create:scheduled"
    assert await outcome(flow, event("created", 1)) == "replay:scheduled"  # a late create: answered, not applied
    assert await outcome(flow, event("rescheduled", 3)) == "update:scheduled"
    assert await outcome(flow, event("rescheduled", 2, "e-again")) == "stale_event"
    assert await outcome(flow, event("cancelled", 4)) == "delete:cancelled"
    assert await outcome(flow, event("rescheduled", 5)) == "appointment_cancelled"
    assert [c[0] for c in graph.calls].count("createOrGet") == 1
    assert [c[0] for c in graph.calls].count("delete") == 1
    assert graph.meetings == {}  # nothing left behind


LINK_1 = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_one%40thread.v2/0"
LINK_2 = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_two%40thread.v2/0"


async def test_a_reschedule_that_supplies_another_meeting_moves_the_appointment_to_it(workers):
    # GIVEN an appointment on a supplied meeting, then a reschedule bringing another one (Cal.com's Teams app
    # makes a new meeting per booking and sends the attendee its link)
    graph = FakeGraph(meetings={(ORG, "s1"): "https://visit/s1", (ORG, "s2"): "https://visit/s2"},
                      by_join_web_url={(ORG, LINK_1): "s1", (ORG, LINK_2): "s2"})
    (flow,) = flows(workers, graph, 1)
    assert await outcome(flow, event("created", 1, joinWebUrl=LINK_1)) == "resolve:scheduled"
    handled = await flow.handle(event("rescheduled", 2, joinWebUrl=LINK_2))
    # THEN the new meeting's link is resolved and reported; the old supplied meeting is never touched
    assert handled.action.value == "switch" and handled.result.join_url == "https://visit/s2"
    assert handled.result.organizer_join_url == LINK_2 and handled.result.meeting_created_by_app is False
    assert not [c for c in graph.calls if c[0] in ("delete", "patch")]
    # AND the same again is a plain reschedule; a late copy of the first is stale; the cancel deletes nothing
    assert await outcome(flow, event("rescheduled", 3, joinWebUrl=LINK_2)) == "acknowledge:scheduled"
    assert await outcome(flow, event("rescheduled", 2, "e-late", joinWebUrl=LINK_1)) == "stale_event"
    assert await outcome(flow, event("cancelled", 4)) == "tombstone:cancelled"
    assert set(graph.meetings) == {(ORG, "s1"), (ORG, "s2")}


async def test_an_app_meeting_replaced_by_a_supplied_one_is_deleted_after_the_new_link_resolves(workers):
    graph = FakeGraph(meetings={(ORG, "s2"): "https://visit/s2"}, by_join_web_url={(ORG, LINK_2): "s2"})
    (flow,) = flows(workers, graph, 1)
    assert await outcome(flow, event("created", 1)) == "create:scheduled"
    (made,) = graph.made
    handled = await flow.handle(event("rescheduled", 2, joinWebUrl=LINK_2))
    assert handled.action.value == "switch" and handled.result.online_meeting_id == "s2"
    assert (ORG, made.id) not in graph.meetings and (ORG, "s2") in graph.meetings
    assert [c[0] for c in graph.calls][-2:] == ["join", "delete"]  # the new link first, then the old meeting


async def test_a_failed_reschedule_leaves_the_times_it_was_writing_until_its_retry_records_them(workers):
    # GIVEN a booked appointment whose reschedule fails (its PATCH may have landed: Graph answered nothing)
    graph = FakeGraph()
    (flow,) = flows(workers, graph, count=1)
    assert (await outcome(flow, event("created", 1))).startswith("create:")
    booked = await workers().get("apt-1")
    assert booked is not None
    graph.failures = [TransientError("Graph did not answer", reason="graph_timeout")]
    assert await outcome(flow, event("rescheduled", 2)) == "graph_timeout"
    # THEN the record keeps its times, the lease is back, and what the app was writing is on it
    held = await workers().get("apt-1")
    assert held is not None and held.lease_owner is None and (held.start, held.end) == (booked.start, booked.end)
    assert (held.writing_start, held.writing_end) == ("2026-12-02T09:00:00.000Z", "2026-12-02T10:00:00.000Z")
    # WHEN the retry succeeds THEN the new times are recorded and nothing is left being written
    assert (await outcome(flow, event("rescheduled", 2))).startswith("update:")
    done = await workers().get("apt-1")
    assert done is not None and done.start == "2026-12-02T09:00:00.000Z"
    assert done.writing_start is None and done.writing_end is None


async def test_two_workers_at_once_never_make_two_meetings_nor_lose_an_update(workers):
    # GIVEN the same events handled by two workers at the same time, in every interleaving asyncio gives
    graph = FakeGraph()
    one, two = flows(workers, graph)
    events = [event("created", 1), event("rescheduled", 2), event("rescheduled", 3), event("cancelled", 4)]
    for _ in range(3):
        pending = list(events)
        while pending:
            await asyncio.gather(*(outcome(flow, evt) for flow, evt in zip((one, two), pending[:2], strict=False)))
            pending = pending[2:]
    for evt in events:  # whatever found the other worker mid-write is tried again, as a requeue would
        await outcome(one, evt)
    # THEN one meeting was ever made, and it is gone after the cancel
    assert len(graph.made) == 1 and graph.meetings == {}
    stored = await workers().get("apt-1")
    assert stored is not None and stored.status == "cancelled" and stored.last_sequence == 4
    assert stored.lease_owner is None


async def test_a_worker_that_died_around_its_delete_leaves_no_meeting_and_no_second_one(workers):
    # GIVEN an appointment whose create died before recording its meeting (a pending record, lease lapsed)
    graph = FakeGraph()
    (flow,) = flows(workers, graph, 1)
    store = workers()
    made = await graph.create_or_get(ORG, "va-test", MeetingSpec())
    await store.insert(AppointmentRecord("apt-1", ORG, status="pending", meeting_created_by_app=True,
                                         external_id="va-test", lease_owner="dead",
                                         lease_at=datetime(2026, 1, 1, tzinfo=UTC)))
    # WHEN the cancel comes, and then (out of order) the create and a retry of the cancel
    assert await outcome(flow, event("cancelled", 3)) == "delete:cancelled"
    assert await outcome(flow, event("created", 1)) == "appointment_cancelled"
    assert await outcome(flow, event("cancelled", 3, "e-cancel-again")) == "replay:cancelled"
    # THEN the meeting the dead create made is gone, and no other was ever made
    assert (ORG, made.id) not in graph.meetings and len(graph.made) == 1


async def test_a_create_that_timed_out_leaves_its_meeting_findable_by_the_cancel(workers):
    # GIVEN a create whose join-URL call timed out after its meeting was made (the record names the meeting),
    # and whose retry timed out on createOrGet itself, before any answer
    graph = FakeGraph()
    (flow,) = flows(workers, graph, 1)
    timeout = TransientError("Graph timed out", reason="graph_timeout")
    graph.failures = [None, timeout]  # createOrGet answers, the join-URL call after it times out
    assert await outcome(flow, event("created", 1)) == "graph_timeout"
    assert len(graph.made) == 1
    graph.failures = [timeout]
    assert await outcome(flow, event("created", 1)) == "graph_timeout"
    # WHEN the cancel comes THEN the meeting goes: the failed retry did not throw its pending record away
    assert await outcome(flow, event("cancelled", 2)) == "delete:cancelled"
    assert graph.meetings == {} and len(graph.made) == 1


async def test_a_create_whose_answer_was_lost_is_deleted_by_the_cancel(workers):
    # GIVEN a createOrGet that made the meeting in Graph but timed out before its answer arrived
    graph = FakeGraph()
    (flow,) = flows(workers, graph, 1)
    await graph.create_or_get(ORG, external_id("apt-1"), MeetingSpec())
    graph.failures = [TransientError("Graph timed out", reason="graph_timeout")]
    assert await outcome(flow, event("created", 1)) == "graph_timeout"
    # WHEN the cancel comes THEN it finds the meeting by its externalId and deletes it
    assert await outcome(flow, event("cancelled", 2)) == "delete:cancelled"
    assert graph.meetings == {} and len(graph.made) == 1


async def test_a_create_graph_refused_leaves_no_record_and_the_cancel_no_graph_call(workers):
    # GIVEN a first create that Graph refused for good (nothing can have been made)
    graph = FakeGraph()
    (flow,) = flows(workers, graph, 1)
    graph.failures = [ForbiddenError("Graph 403 Forbidden")]
    assert await outcome(flow, event("created", 1)) == "forbidden"
    assert await workers().get("apt-1") is None
    # WHEN the cancel comes THEN it is recorded without asking Graph
    graph.calls.clear()
    assert await outcome(flow, event("cancelled", 2)) == "tombstone:cancelled"
    assert graph.calls == []


class SlowFirstCreate(FakeGraph):
    """A Graph whose first createOrGet answers only when the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.gate = asyncio.Event(), asyncio.Event()

    async def create_or_get(self, *args: Any, **kwargs: Any) -> Any:
        if not self.entered.is_set():
            self.entered.set()
            await self.gate.wait()
        return await super().create_or_get(*args, **kwargs)


async def test_a_create_overtaken_by_a_cancel_deletes_the_meeting_it_made_after_the_delete(workers):
    # GIVEN a create whose createOrGet is slow enough for its lease to go stale (stale at once here)
    graph = SlowFirstCreate()
    resolver = JoinUrlResolver(graph, inline_throttle_budget=0.0, sleep=no_sleep)
    slow, canceller = (AppointmentFlow(resolver, graph, workers(), meeting_management=True, stale_after_seconds=0.0)
                       for _ in range(2))
    creating = asyncio.create_task(outcome(slow, event("created", 1)))
    await graph.entered.wait()
    # WHEN a cancel overtakes the lease and deletes the meeting it finds, and then the create's createOrGet answers
    assert await outcome(canceller, event("cancelled", 2)) == "delete:cancelled"
    graph.gate.set()
    # THEN the create, finding the appointment cancelled when it records, deletes the meeting it made after that
    assert await creating == "appointment_contention"
    assert len(graph.made) == 2 and graph.meetings == {}
    assert await outcome(slow, event("created", 1)) == "appointment_cancelled"
