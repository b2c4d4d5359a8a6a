"""Vendor bookings → contract-v1 events: payloads shaped as the vendors document them, output checked against
the published schema (contracts/schemas/appointment-event.json)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.exceptions import InvalidEventError, UnmappedOrganizerError
from shared.intake import calcom, calendly, standard
from shared.intake.events import Ignored, IntakeEvent
from shared.intake.organizers import OrganizerMap
from tests import intake_payloads as vendor
from tests.schemas import assert_valid

pytestmark = pytest.mark.unit
MAP = OrganizerMap({"pro@example.com": "scheduler@contoso.test", "reception@clinic.example": "dr.adams@contoso.test",
                    "calendly:event-type:https://api.calendly.com/event_types/team": "scheduler@contoso.test"},
                   ("contoso.test",))


def event_of(result: IntakeEvent | Ignored) -> dict:
    assert isinstance(result, IntakeEvent), result
    assert_valid("appointment-event.json", json.loads(result.to_message()))
    return result.event


def test_calcom_booking_created_becomes_appointment_created():
    event = event_of(calcom.translate(vendor.calcom(), MAP))
    assert event["type"] == "appointment.created"
    assert event["appointmentId"] == "calcom:bFJeNb2uX8ANpT3JL5EfXw@Cal.com"
    assert event["organizer"] == "scheduler@contoso.test"
    assert (event["startDateTime"], event["endDateTime"]) == ("2023-05-25T09:30:00Z", "2023-05-25T10:30:00Z")
    assert event["subject"] == "60min between Pro Example and John Doe"
    assert event["joinWebUrl"] == vendor.TEAMS_LINK
    assert event["clients"] == [{"displayName": "John Doe", "email": "john.doe@example.com",
                                 "timeZone": "Asia/Kolkata"}]
    assert event["occurredAt"] == "2023-05-24T09:30:00.538Z"


def test_calcom_reschedule_names_the_same_appointment_with_the_new_times():
    created = event_of(calcom.translate(vendor.calcom(), MAP))
    moved = event_of(calcom.translate(vendor.calcom("BOOKING_RESCHEDULED"), MAP))
    assert moved["type"] == "appointment.rescheduled" and moved["appointmentId"] == created["appointmentId"]
    assert moved["startDateTime"] == "2023-05-26T11:00:00Z" and moved["id"] != created["id"]
    # Without iCalUID (older Cal.com), the booking it replaces still names the appointment.
    legacy = event_of(calcom.translate(vendor.calcom("BOOKING_RESCHEDULED", iCalUID=None), MAP))
    assert legacy["appointmentId"] == "calcom:bFJeNb2uX8ANpT3JL5EfXw"


def test_calcom_cancel_and_other_triggers():
    cancelled = event_of(calcom.translate(vendor.calcom("BOOKING_CANCELLED"), MAP))
    assert cancelled["type"] == "appointment.cancelled" and "startDateTime" not in cancelled
    assert isinstance(calcom.translate(vendor.calcom("MEETING_ENDED"), MAP), Ignored)


def test_calcom_without_a_teams_link_asks_the_app_for_a_meeting():
    event = event_of(calcom.translate(vendor.calcom(metadata={"videoCallUrl": "https://app.cal.com/video/x"}), MAP))
    assert "joinWebUrl" not in event and "onlineMeetingId" not in event


def test_a_replayed_delivery_maps_to_the_same_event_id():
    first = calcom.translate(vendor.calcom(), MAP)
    again = calcom.translate(json.loads(vendor.body(vendor.calcom())), MAP)
    assert isinstance(first, IntakeEvent) and isinstance(again, IntakeEvent)
    assert first.event_id == again.event_id and first.event_id.startswith("calcom-")


@pytest.mark.parametrize(("changes", "why"), [
    ({"uid": None}, "no uid"),
    ({"startTime": "2023-05-25T09:30:00"}, "no offset"),
    ({"endTime": "2023-05-25T08:00:00Z"}, "ends before it starts"),
    ({"startTime": None}, "no start"),
])
def test_calcom_payload_that_cannot_be_mapped_is_invalid(changes, why):
    with pytest.raises(InvalidEventError) as raised:
        calcom.translate(vendor.calcom(**changes), MAP)
    assert raised.value.http_status == 400, why
    assert "john.doe" not in raised.value.detail


def test_organizer_mapping_order_and_unmapped_host():
    by_domain = vendor.calcom(organizer={"email": "Dr.Adams@contoso.test", "name": "Dr Adams"})
    assert event_of(calcom.translate(by_domain, MAP))["organizer"] == "dr.adams@contoso.test"
    by_type = OrganizerMap({"calcom:event-type:7": "scheduler@contoso.test"})
    assert event_of(calcom.translate(vendor.calcom(), by_type))["organizer"] == "scheduler@contoso.test"
    catch_all = OrganizerMap({"*": "4c7e1d2a-9b3f-4e5d-8a6c-1f2e3d4c5b6a"})
    assert event_of(calcom.translate(vendor.calcom(), catch_all))["organizer"].startswith("4c7e1d2a")
    with pytest.raises(UnmappedOrganizerError) as raised:
        calcom.translate(vendor.calcom(), OrganizerMap({}, ("contoso.test",)))
    assert raised.value.http_status == 422 and "pro@example.com" not in raised.value.detail


def test_calendly_invitee_created_becomes_appointment_created():
    event = event_of(calendly.translate(vendor.calendly(), MAP))
    assert event["type"] == "appointment.created" and event["organizer"] == "dr.adams@contoso.test"
    assert event["appointmentId"] == ("calendly:https://api.calendly.com/scheduled_events/GBGBDCAADAEDCRZ2/"
                                      "invitees/AAAAAAAAAAAAAAAA")
    assert event["joinWebUrl"] == vendor.TEAMS_LINK and event["subject"] == "15 Minute Meeting"
    assert event["clients"] == [{"displayName": "John Doe", "email": "test@example.com",
                                 "timeZone": "America/New_York", "phone": "+14155550100"}]


def test_calendly_reschedule_is_one_rescheduled_appointment():
    cancel_half = calendly.translate(vendor.calendly("invitee.canceled", rescheduled=True, new_invitee="BBBB"), MAP)
    assert isinstance(cancel_half, Ignored) and cancel_half.event_id
    create_half = event_of(calendly.translate(vendor.calendly(invitee="BBBB", old_invitee="AAAAAAAAAAAAAAAA"), MAP))
    original = event_of(calendly.translate(vendor.calendly(), MAP))
    assert create_half["type"] == "appointment.rescheduled"
    assert create_half["appointmentId"] == original["appointmentId"]


def test_calendly_cancel_and_non_teams_location():
    cancelled = event_of(calendly.translate(vendor.calendly("invitee.canceled"), MAP))
    assert cancelled["type"] == "appointment.cancelled"
    zoom = {"type": "zoom", "status": "pushed", "join_url": "https://calendly.zoom.us/j/123"}
    assert "joinWebUrl" not in event_of(calendly.translate(vendor.calendly(location=zoom), MAP))
    assert isinstance(calendly.translate({"event": "routing_form_submission.created", "payload": {}}, MAP), Ignored)


def test_calendly_event_type_mapping():
    team = vendor.calendly(event_type="https://api.calendly.com/event_types/team",
                           event_memberships=[{"user_email": "someone@elsewhere.example"}])
    assert event_of(calendly.translate(team, MAP))["organizer"] == "scheduler@contoso.test"


def test_standard_webhooks_body_plain_or_standard_shape():
    plain = {"id": "evt-9", "type": "appointment.created", "appointmentId": "apt-9",
             "organizer": "scheduler@contoso.test", "joinWebUrl": vendor.TEAMS_LINK, "sequence": 2}
    assert event_of(standard.translate(plain, "msg_1", MAP))["id"] == "evt-9"
    shaped = {"type": "appointment.cancelled", "timestamp": "2026-11-21T09:00:00Z",
              "data": {"appointmentId": "apt-9", "organizer": "pro@example.com"}}
    event = event_of(standard.translate(shaped, "msg_2", MAP))
    assert (event["id"], event["organizer"], event["type"]) == ("msg_2", "scheduler@contoso.test",
                                                                 "appointment.cancelled")
    with pytest.raises(InvalidEventError):
        standard.translate({"type": "appointment.created", "appointmentId": "a"}, "msg_3", MAP)


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                                max_size=5), max_leaves=20))
def test_any_json_is_translated_or_refused_with_a_reason(doc):
    for translate in (lambda d: calcom.translate(d, MAP), lambda d: calendly.translate(d, MAP),
                      lambda d: standard.translate(d, "msg", MAP)):
        try:
            result = translate(doc)
        except (InvalidEventError, UnmappedOrganizerError):
            continue
        if isinstance(result, IntakeEvent):
            assert_valid("appointment-event.json", json.loads(result.to_message()))


@pytest.mark.parametrize("doc", [
    vendor.calcom_scheduled("MEETING_ENDED"),  # Cal.com scheduleTrigger: the flat booking row, no payload
    vendor.calcom_scheduled("MEETING_STARTED"),
    {"triggerEvent": "RECORDING_READY", "payload": "not an object"},
    {"triggerEvent": "FORM_SUBMITTED_NO_EVENT", "responses": {}},
])
def test_calcom_triggers_the_app_does_not_use_are_ignored_whatever_their_shape(doc):
    assert isinstance(calcom.translate(doc, MAP), Ignored)


@pytest.mark.parametrize("doc", [[], {"payload": {}}, {"triggerEvent": 7, "payload": {}},
                                 {"triggerEvent": "BOOKING_CREATED"}, {"triggerEvent": "BOOKING_CANCELLED",
                                                                       "payload": []}])
def test_calcom_bodies_the_app_needs_but_cannot_read_are_400(doc):
    with pytest.raises(InvalidEventError) as raised:
        calcom.translate(doc, MAP)
    assert raised.value.http_status == 400


def test_calcom_request_reschedule_keeps_the_appointment():
    # Cal.com's requestReschedule handler: BOOKING_CANCELLED with requestReschedule / rescheduleRequested true
    # and "Please reschedule. <reason>"; the attendee's new booking is BOOKING_RESCHEDULED with rescheduleUid.
    created = event_of(calcom.translate(vendor.calcom(), MAP))
    asked = calcom.translate(vendor.calcom_request_reschedule(), MAP)
    assert isinstance(asked, Ignored) and asked.appointment_id == created["appointmentId"] and asked.event_id
    # Older Cal.com versions carry only the reason's prefix (and no iCalUID: the uid names it, as before)
    older = vendor.calcom_request_reschedule(requestReschedule=None, rescheduleRequested=None, iCalUID=None)
    assert isinstance(calcom.translate(older, MAP), Ignored)
    moved = event_of(calcom.translate(vendor.calcom("BOOKING_RESCHEDULED"), MAP))
    assert moved["type"] == "appointment.rescheduled" and moved["appointmentId"] == created["appointmentId"]
    # A real cancel still cancels
    real = event_of(calcom.translate(vendor.calcom("BOOKING_CANCELLED", requestReschedule=False), MAP))
    assert real["type"] == "appointment.cancelled"


@pytest.mark.parametrize("doc", [{"event": "routing_form_submission.created", "payload": {}},
                                 {"event": "invitee_no_show.created", "payload": "x"},
                                 {"event": "event_type.updated"}])
def test_calendly_events_the_app_does_not_use_are_ignored_whatever_their_shape(doc):
    assert isinstance(calendly.translate(doc, MAP), Ignored)


@pytest.mark.parametrize("location", [
    {"type": "custom", "location": vendor.TEAMS_LINK},  # Calendly's custom location: free text
    {"type": "custom", "location": f"Clinic room 3 - join online: {vendor.TEAMS_LINK}"},
    {"type": "custom", "location": f"Teams (<{vendor.TEAMS_LINK}>)."},
    {"type": "ask_invitee", "location": vendor.TEAMS_LINK},
    {"type": "physical", "location": vendor.TEAMS_LINK, "additional_info": "Reception desk"},
    {"type": "inbound_call", "location": "+14155550100", "additional_info": f"or Teams: {vendor.TEAMS_LINK}"},
    {"type": "microsoft_teams_conference", "status": "pushed", "join_url": vendor.TEAMS_LINK},
])
def test_a_teams_link_in_any_calendly_location_field_is_the_meeting(location):
    assert event_of(calendly.translate(vendor.calendly(location=location), MAP))["joinWebUrl"] == vendor.TEAMS_LINK


def test_a_link_with_its_context_unencoded_is_kept_whole():
    raw = 'https://teams.microsoft.com/l/meetup-join/19%3ameeting_x%40thread.v2/0?context={"Tid":"t","Oid":"o"}'
    found = event_of(calendly.translate(vendor.calendly(location={"type": "custom", "location": f'"{raw}"'}), MAP))
    assert found["joinWebUrl"] == raw


def test_a_custom_location_without_a_teams_link_asks_for_a_meeting():
    other = {"type": "custom", "location": "https://meet.example.com/teams.microsoft.com/l/meetup-join/x"}
    assert "joinWebUrl" not in event_of(calendly.translate(vendor.calendly(location=other), MAP))
