"""The Graph emulator's calendar events answer as Graph v1.0 documents them (../shared/FACTS.md, "Calendar-backed
meetings and change notifications"), and the app's CalendarWriter makes one event per appointment through them."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from shared.exceptions import AppointmentCancelledError, OnlineMeetingMissingError
from shared.graph.calendar import APPOINTMENT_PROPERTY, CalendarWriter, property_filter
from shared.graph.gateway import GraphGateway
from shared.graph.meetings import MeetingSpec
from shared.identity.tokens import OrganizerIdentity
from shared.settings import load_settings
from tests.devstack.test_graph_meeting_writes import SCHEDULER, _tls, token
from tests.unit.test_settings import sample_env

pytestmark = pytest.mark.e2e
SCOPES = " ".join("https://graph.microsoft.com/" + s for s in ("Calendars.ReadWrite", "OnlineMeetings.Read",
                                                                 "VirtualAppointment.Read"))
IMMUTABLE = {"Prefer": 'IdType="ImmutableId"'}
START, END = datetime(2027, 3, 1, 9, tzinfo=UTC), datetime(2027, 3, 1, 9, 30, tzinfo=UTC)


@pytest.fixture
def graph(stack: dict[str, Any]) -> Any:
    headers = {"Authorization": f"Bearer {token(stack, SCHEDULER, SCOPES)}"}
    with httpx.Client(base_url=stack["graph"]["base_url"], verify=_tls(stack), headers=headers) as client:
        yield client


@pytest.fixture
def admin(stack: dict[str, Any]) -> Any:
    with httpx.Client(base_url=stack["graph"]["admin_url"] + "/", verify=_tls(stack)) as client:
        client.post("reset").raise_for_status()
        yield client
        client.post("reset").raise_for_status()


def _event(appointment: str, **extra: Any) -> dict[str, Any]:
    return {"subject": "Consult", "start": {"dateTime": "2027-03-01T09:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2027-03-01T09:30:00", "timeZone": "UTC"}, "isOnlineMeeting": True,
            "onlineMeetingProvider": "teamsForBusiness",
            "singleValueExtendedProperties": [{"id": APPOINTMENT_PROPERTY, "value": appointment}], **extra}


def test_event_with_teams_meeting_found_by_property_moved_and_cancelled(graph, admin):
    appointment = uuid.uuid4().hex
    made = graph.post("/me/events", json=_event(appointment), headers=IMMUTABLE)
    assert made.status_code == 201, made.text
    event = made.json()
    assert event["isOnlineMeeting"] and event["onlineMeeting"]["joinUrl"].startswith("https://teams.microsoft.com/")
    # The join URL resolves through the $filter the app already uses, then to the virtual appointment link
    found = graph.get("/me/onlineMeetings", params={"$filter": f"JoinWebUrl eq '{event['onlineMeeting']['joinUrl']}'"})
    meeting = found.json()["value"][0]
    link = graph.get(f"/me/onlineMeetings/{meeting['id']}/getVirtualAppointmentJoinWebUrl()")
    assert link.status_code == 200
    # Found again by the extended property, with the property expanded
    by_property = graph.get("/me/events", headers=IMMUTABLE, params={
        "$filter": property_filter(appointment),
        "$expand": f"singleValueExtendedProperties($filter=id eq '{APPOINTMENT_PROPERTY}')"}).json()["value"]
    assert [e["id"] for e in by_property] == [event["id"]]
    assert by_property[0]["singleValueExtendedProperties"][0]["value"] == appointment
    # PATCH start/end only: the join URL holds
    moved = graph.patch(f"/me/events/{event['id']}", headers=IMMUTABLE, json={
        "start": {"dateTime": "2027-03-02T10:00:00", "timeZone": "UTC"},
        "end": {"dateTime": "2027-03-02T10:30:00", "timeZone": "UTC"}}).json()
    assert moved["onlineMeeting"]["joinUrl"] == event["onlineMeeting"]["joinUrl"]
    assert moved["start"]["dateTime"].startswith("2027-03-02T10:00:00")
    # Cancel: 202, marked cancelled, moved to Deleted Items (the immutable id still reads it; no longer listed)
    assert graph.post(f"/me/events/{event['id']}/cancel", json={"comment": "Ill"}).status_code == 202
    after = graph.get(f"/me/events/{event['id']}", headers=IMMUTABLE).json()
    assert after["isCancelled"] is True
    assert graph.get("/me/events", params={"$filter": property_filter(appointment)}).json()["value"] == []
    listed = {e["id"]: e for e in admin.get("events").json()}
    assert listed[event["id"]]["folder"] == "deleteditems" and listed[event["id"]]["comment"] == "Ill"


def test_rest_ids_change_on_a_move_to_deleted_items_immutable_ids_do_not(graph):
    made = graph.post("/me/events", json=_event(uuid.uuid4().hex)).json()  # no Prefer: a REST id
    assert graph.delete(f"/me/events/{made['id']}").status_code == 204
    assert graph.get(f"/me/events/{made['id']}").status_code == 404


def test_transaction_id_repeats_hand_back_the_first_event_and_scopes_are_checked(graph, stack):
    body = _event(uuid.uuid4().hex, transactionId=str(uuid.uuid4()))
    first, again = graph.post("/me/events", json=body).json(), graph.post("/me/events", json=body).json()
    assert first["id"] == again["id"]
    reader = httpx.post(stack["graph"]["base_url"] + "/me/events", json=body, verify=_tls(stack), headers={
        "Authorization": f"Bearer {token(stack, SCHEDULER, 'https://graph.microsoft.com/VirtualAppointment.Read')}"})
    assert reader.status_code == 403


class _Tokens:
    def __init__(self, access: str) -> None:
        self._access = access

    async def identify(self, organizer: str, tenant: str | None = None) -> OrganizerIdentity:
        return OrganizerIdentity(str(tenant), SCHEDULER["oid"])

    async def token_for(self, organizer: str, scopes: Any = (), tenant: str | None = None) -> str:
        return self._access

    def invalidate(self, organizer: str, tenant: str | None = None) -> None:
        return None


def _writer(stack: dict[str, Any]) -> tuple[GraphGateway, CalendarWriter]:
    env = {**sample_env(), "GRAPH_BASE_URL": stack["graph"]["base_url"], "TLS_CA_BUNDLE": stack["ca_bundle"]}
    gateway = GraphGateway(load_settings(env), _Tokens(token(stack, SCHEDULER, SCOPES)))  # type: ignore[arg-type]
    return gateway, CalendarWriter(gateway, sleep=lambda _: asyncio.sleep(0))


def test_the_writer_makes_one_event_per_appointment_resolves_it_and_keeps_the_link_on_a_move(stack, admin):
    admin.put("calendar", json={"meeting_lookup_lag": 2}).raise_for_status()

    async def run() -> None:
        gateway, writer = _writer(stack)
        appointment = uuid.uuid4().hex
        spec = MeetingSpec(start=START, end=END, subject="Consult")
        first, second = await asyncio.gather(writer.ensure(SCHEDULER["upn"], appointment, spec),
                                             writer.ensure(SCHEDULER["upn"], appointment, spec))
        again = await writer.ensure(SCHEDULER["upn"], appointment, spec)
        assert first.event_id == second.event_id == again.event_id and first.id == again.id
        moved = await writer.move(SCHEDULER["upn"], str(first.event_id),
                                  MeetingSpec(start=START.replace(day=2), end=END.replace(day=2)), first.join_web_url)
        assert moved.id == "" and moved.join_web_url == first.join_web_url and moved.start == START.replace(day=2)
        assert await writer.cancel(SCHEDULER["upn"], str(first.event_id), "Ill") is True
        assert (await writer.get(SCHEDULER["upn"], str(first.event_id))).cancelled  # type: ignore[union-attr]
        await gateway.aclose()

    asyncio.run(run())
    mine = [e for e in admin.get("events").json() if e["organizer"] == SCHEDULER["oid"]]
    assert all(e["attendees"] == [] for e in mine)
    assert admin.put("calendar", json={}).json()["invitations_sent"] == 0


def test_a_move_of_an_event_cancelled_in_outlook_first_is_the_appointment_cancelled(stack, graph, admin):
    # GIVEN an appointment's event, then cancelled on the organizer's side
    async def run() -> None:
        gateway, writer = _writer(stack)
        meeting = await writer.ensure(SCHEDULER["upn"], uuid.uuid4().hex, MeetingSpec(start=START, end=END))
        assert graph.post(f"/me/events/{meeting.event_id}/cancel", json={}).status_code == 202
        # WHEN the scheduler's reschedule comes after it
        later = MeetingSpec(start=START.replace(day=2), end=END.replace(day=2))
        # THEN Graph's refusal is the organizer's cancel (its notification tells it), not a bad request
        with pytest.raises(AppointmentCancelledError):
            await writer.move(SCHEDULER["upn"], str(meeting.event_id), later, meeting.join_web_url)
        await gateway.aclose()

    asyncio.run(run())


def test_an_event_without_a_teams_meeting_is_a_named_permanent_failure_and_is_removed(stack, admin):
    admin.put("calendar", json={"teams_online_meetings": False}).raise_for_status()

    async def run() -> None:
        gateway, writer = _writer(stack)
        with pytest.raises(OnlineMeetingMissingError):
            await writer.ensure(SCHEDULER["upn"], "apt-no-teams", MeetingSpec(start=START, end=END))
        assert await writer.find(SCHEDULER["upn"], "apt-no-teams") is None
        await gateway.aclose()

    asyncio.run(run())


def test_the_delta_link_points_at_the_service_that_answered(graph, stack):
    # Graph's deltaLink names graph.microsoft.com, the host the app sends its token to; here, the emulator's own
    round_ = graph.get("/me/calendarView/delta", headers=IMMUTABLE, params={
        "startDateTime": "2027-01-01T00:00:00Z", "endDateTime": "2027-12-31T00:00:00Z"}).json()
    link = round_["@odata.deltaLink"]
    assert link.startswith(stack["graph"]["base_url"].rstrip("/") + "/me/calendarView/delta?$deltatoken="), link
    assert graph.get(link).status_code == 200


def test_a_round_from_a_delta_link_lists_only_what_changed_since(graph, admin):
    window = {"startDateTime": "2027-02-01T00:00:00Z", "endDateTime": "2027-04-01T00:00:00Z"}
    first, second = (graph.post("/me/events", json=_event(uuid.uuid4().hex), headers=IMMUTABLE).json()
                     for _ in range(2))
    round_ = graph.get("/me/calendarView/delta", headers=IMMUTABLE, params=window).json()
    assert {first["id"], second["id"]} <= {item["id"] for item in round_["value"]}
    # nothing changed: an empty round; then one moved and one cancelled: just those two
    round_ = graph.get(round_["@odata.deltaLink"], headers=IMMUTABLE).json()
    assert round_["value"] == []
    moved = {"start": {"dateTime": "2027-03-02T09:00:00", "timeZone": "UTC"},
             "end": {"dateTime": "2027-03-02T09:30:00", "timeZone": "UTC"}}
    assert graph.patch(f"/me/events/{first['id']}", json=moved, headers=IMMUTABLE).status_code == 200
    assert graph.post(f"/me/events/{second['id']}/cancel", json={}, headers=IMMUTABLE).status_code == 202
    round_ = graph.get(round_["@odata.deltaLink"], headers=IMMUTABLE).json()
    by_id = {item["id"]: item for item in round_["value"]}
    assert set(by_id) == {first["id"], second["id"]}
    assert by_id[first["id"]]["start"]["dateTime"].startswith("2027-03-02T09:00:00")
    assert "@removed" in by_id[second["id"]]
    # a token Graph does not know (expired sync state): 410 syncStateNotFound, and the client starts over
    gone = graph.get("/me/calendarView/delta", params={"$deltatoken": "unknown"})
    assert gone.status_code == 410 and gone.json()["error"]["code"] == "syncStateNotFound"
