"""A Calendly booking chain comes out as one appointment whatever order its deliveries arrive in.

The deliveries are Calendly's own (tests/intake_payloads.py: its invitee webhook payload reference), a reschedule
being two of them: invitee.canceled (rescheduled, new_invitee) and invitee.created (old_invitee). Calendly retries
a failed delivery for up to 24 hours, so every order can happen; each is delivered twice. Each event the intake
enqueues is then applied at once by the lifecycle flow (fake Graph, in-memory stores).
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from shared.exceptions import PermanentError
from shared.intake import calendly
from shared.intake.chains import through_chain
from shared.intake.organizers import OrganizerMap
from shared.pipeline.inbound import parse_event
from shared.pipeline.join_url_resolver import JoinUrlResolver
from shared.testing.aliases import InMemoryAliasStore
from shared.testing.appointments import InMemoryAppointmentStore
from tests import intake_payloads as vendor
from tests.fakes import FakeGraph, make_flow, no_sleep

pytestmark = pytest.mark.unit
MAP = OrganizerMap({"reception@clinic.example": "dr.adams@contoso.test"})
ORG = "dr.adams@contoso.test"
PHONE = {"type": "outbound_call", "location": "+14155550100"}


def link(name: str) -> str:
    return vendor.TEAMS_LINK.replace("meeting_cardiology", f"meeting_{name}")


def chain(supplied: bool) -> list[dict[str, Any]]:
    """A booked at 09:00, rescheduled to B at 10:00, then to C at 11:00 (Calendly's created_at orders them)."""
    def where(name: str) -> dict[str, Any]:
        return ({"type": "microsoft_teams_conference", "status": "pushed", "join_url": link(name)} if supplied
                else PHONE)

    def at(doc: dict[str, Any], minute: int) -> dict[str, Any]:
        doc["created_at"] = f"2026-11-20T08:{minute:02d}:00.000000Z"
        return doc

    times = {name: {"start_time": f"2026-12-01T{hour}:00:00Z", "end_time": f"2026-12-01T{hour}:30:00Z"}
             for name, hour in (("A", "09"), ("B", "10"), ("C", "11"))}
    return [
        at(vendor.calendly(invitee="A", location=where("A"), **times["A"]), 0),
        at(vendor.calendly("invitee.canceled", invitee="A", rescheduled=True, new_invitee="B", location=where("A"),
                           **times["A"]), 1),
        at(vendor.calendly(invitee="B", old_invitee="A", location=where("B"), **times["B"]), 1),
        at(vendor.calendly("invitee.canceled", invitee="B", rescheduled=True, new_invitee="C", location=where("B"),
                           **times["B"]), 2),
        at(vendor.calendly(invitee="C", old_invitee="B", location=where("C"), **times["C"]), 2),
    ]


async def run(order: list[dict[str, Any]], *, supplied: bool) -> tuple[Any, FakeGraph]:
    graph = FakeGraph(meetings={(ORG, f"m{n}"): f"https://visit/{n}" for n in "ABC"},
                      by_join_web_url={(ORG, link(n)): f"m{n}" for n in "ABC"}) if supplied else FakeGraph()
    store, aliases = InMemoryAppointmentStore(), InMemoryAliasStore()
    flow = make_flow(graph, JoinUrlResolver(graph, inline_throttle_budget=0.0, sleep=no_sleep), store,
                     management=True)
    for doc in order:
        chained = await through_chain(calendly.translate(doc, MAP), aliases)
        for event in chained if isinstance(chained, list) else []:
            try:
                await flow.handle(parse_event(event.to_message()))
            except PermanentError as exc:  # no event of the chain is refused: a late retry is ignored at the door
                raise AssertionError(f"{event.type} refused: {exc.reason}") from exc
    return store, graph


ORDERS = list(itertools.permutations(range(5)))


@pytest.mark.parametrize("supplied", [False, True], ids=["app-meeting", "calendly-teams-link"])
async def test_every_order_of_a_twice_rescheduled_booking_ends_as_one_appointment_at_the_latest_time(supplied):
    deliveries = chain(supplied)
    for order in ORDERS:
        docs = [deliveries[i] for i in order]
        store, graph = await run(docs + docs[::-1], supplied=supplied)  # every delivery twice
        live = [r for r in store.records() if r.status == "scheduled"]
        assert len(live) == 1, (order, live)
        (appointment,) = live
        assert appointment.appointment_id.endswith("/invitees/A"), order
        assert appointment.start == "2026-12-01T11:00:00.000Z", (order, appointment)
        if supplied:
            # the meeting the attendee was sent for the latest booking; no supplied meeting ever deleted
            assert appointment.online_meeting_id == "mC" and not appointment.meeting_created_by_app, order
            assert not [c for c in graph.calls if c[0] in ("delete", "patch", "createOrGet")], order
        else:
            # one meeting of the app's left, the appointment's own; any other it made for a cut part is gone
            assert appointment.meeting_created_by_app and list(graph.meetings) == [
                (ORG, appointment.online_meeting_id)], order


@pytest.mark.parametrize("supplied", [False, True], ids=["app-meeting", "calendly-teams-link"])
async def test_every_order_of_a_rescheduled_then_cancelled_booking_ends_cancelled_with_no_app_meeting(supplied):
    deliveries = chain(supplied)
    final = vendor.calendly("invitee.canceled", invitee="C", location=PHONE)
    final["created_at"] = "2026-11-20T08:03:00.000000Z"
    deliveries.append(final)
    for order in itertools.permutations(range(6)):
        docs = [deliveries[i] for i in order]
        store, graph = await run(docs + docs, supplied=supplied)
        assert [r for r in store.records() if r.status == "scheduled"] == [], order
        if supplied:  # a meeting the scheduler made is never deleted by the app
            assert not [c for c in graph.calls if c[0] in ("delete", "patch", "createOrGet")], order
        else:
            assert graph.meetings == {}, order  # nothing the app made is left behind


async def test_a_link_that_comes_in_while_a_later_booking_is_being_keyed_is_not_missed():
    # GIVEN B's delivery (link B → A) running at the same moment as C's (old_invitee B): B's fold looked for a
    # note on B just before C wrote it
    deliveries = chain(supplied=False)
    booked, second_move = deliveries[0], deliveries[4]

    class Racing(InMemoryAliasStore):
        async def put_note(self, key: str, text: str) -> None:
            await super().put_note(key, text)
            if key.endswith("/invitees/B"):
                self.links[key] = key.replace("/invitees/B", "/invitees/A")  # B's put, after B's note lookup

    aliases = Racing()
    assert isinstance(await through_chain(calendly.translate(booked, MAP), aliases), list)
    (event,) = await through_chain(calendly.translate(second_move, MAP), aliases)
    # THEN C's event is keyed by the first booking, not by the B its own walk had reached
    assert event.appointment_id.endswith("/invitees/A")
