"""The appointment state machine (pure): what each event does to each stored state, and the lifecycle fields."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.exceptions import InvalidEventError
from shared.pipeline.inbound import parse_event
from shared.pipeline.lifecycle import Action, MeetingFacts, decide, lease_wait, record_after
from shared.storage.appointments import AppointmentRecord

pytestmark = pytest.mark.unit
ORG = "scheduler@contoso.test"
TIMES = {"startDateTime": "2026-12-01T09:00:00+01:00", "endDateTime": "2026-12-01T09:30:00+01:00"}


def event(kind: str = "created", **fields: Any):
    body = {"id": fields.pop("id", f"e-{kind}"), "type": f"appointment.{kind}", "appointmentId": "apt-1",
            "organizer": ORG, **fields}
    if kind == "rescheduled":
        body = {**TIMES, **body}
    return parse_event(json.dumps(body))


def stored(status: str = "scheduled", **fields: Any) -> AppointmentRecord:
    return AppointmentRecord("apt-1", ORG, status=status, **fields)


APP_MEETING = {"online_meeting_id": "m1", "meeting_created_by_app": True, "external_id": "va-1"}
SUPPLIED = {"online_meeting_id": "m9", "meeting_created_by_app": False}
LINK = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_a%40thread.v2/0?context=%7b%22Tid%22%3a%22t%22%7d"
OTHER_LINK = LINK.replace("meeting_a", "meeting_b")


@pytest.mark.parametrize(("record", "evt", "management", "expected"), [
    # Never seen
    (None, event(onlineMeetingId="m9"), False, Action.RESOLVE),
    (None, event(), True, Action.CREATE),
    (None, event("rescheduled"), True, Action.CREATE),  # the reschedule overtook its create
    (None, event("cancelled"), True, Action.TOMBSTONE),  # remembered, so a late create makes nothing
    # Known
    (stored(**APP_MEETING, last_sequence=1), event("rescheduled", sequence=2), True, Action.UPDATE),
    (stored(**SUPPLIED, last_sequence=1), event("rescheduled", sequence=2), True, Action.ACKNOWLEDGE),
    (stored(**APP_MEETING), event("cancelled"), True, Action.DELETE),
    (stored(**SUPPLIED), event("cancelled"), False, Action.TOMBSTONE),
    (stored(**APP_MEETING), event("created", id="another-id"), True, Action.REPLAY),  # same appointment, same meeting
    (stored("cancelled", **APP_MEETING), event("cancelled"), True, Action.REPLAY),
    # A late create (a scheduler's retry arriving after the reschedule that followed it) is answered, not applied
    (stored(**APP_MEETING, last_occurred_at="2026-11-21T10:00:00.000Z"),
     event("created", occurredAt="2026-11-21T09:00:00Z"), True, Action.REPLAY),
    (stored(**SUPPLIED, last_sequence=4), event("created", sequence=1, onlineMeetingId="m1"), True, Action.REPLAY),
    # A reschedule that supplies another meeting (Cal.com's Teams app makes one per booking) moves to it
    (stored(**SUPPLIED), event("rescheduled", onlineMeetingId="m10"), False, Action.SWITCH),
    (stored(**SUPPLIED, organizer_join_url=LINK), event("rescheduled", joinWebUrl=OTHER_LINK), False, Action.SWITCH),
    (stored(**APP_MEETING, organizer_join_url=LINK), event("rescheduled", joinWebUrl=OTHER_LINK), True, Action.SWITCH),
    # ... and the same meeting again (another copy of its link) is a plain reschedule
    (stored(**SUPPLIED), event("rescheduled", onlineMeetingId="m9"), False, Action.ACKNOWLEDGE),
    (stored(**SUPPLIED, organizer_join_url=LINK), event("rescheduled", joinWebUrl=LINK.replace("%3a", "%3A")
                                                        .replace("context=%7b", "context=%7B")), False,
     Action.ACKNOWLEDGE),
    (stored(**APP_MEETING, organizer_join_url=LINK), event("rescheduled", joinWebUrl=LINK), True, Action.UPDATE),
    (stored(**APP_MEETING, organizer_join_url=LINK, join_url="https://visit.teams.microsoft.com/x?convId=1"),
     event("rescheduled", joinWebUrl="https://visit.teams.microsoft.com/x?convId=1"), True, Action.UPDATE),
    (stored(**SUPPLIED, join_url="https://visit.teams.microsoft.com/x?convId=1"),
     event("rescheduled", joinWebUrl="https://visit.teams.microsoft.com/x?convId=2"), False, Action.SWITCH),
    (stored(**APP_MEETING, last_sequence=3, last_event_id="e-x"), event("rescheduled", sequence=3, id="e-x"), True,
     Action.REPLAY),
    # A create that died half-way left a pending record: a cancel deletes what it may have made
    (stored("pending", meeting_created_by_app=True, external_id="va-1"), event("cancelled"), True, Action.DELETE),
    (stored("pending", meeting_created_by_app=True, external_id="va-1"), event(), True, Action.CREATE),
    # A worker died around its DELETE (the cancel recorded, the lease left): the next cancel deletes again
    (stored("cancelled", **APP_MEETING, lease_owner="dead", lease_at=datetime(2026, 1, 1, tzinfo=UTC)),
     event("cancelled", id="retry"), True, Action.DELETE),
])
def test_each_event_in_each_state_has_one_action(record, evt, management, expected):
    assert decide(record, evt, meeting_management=management).action is expected


@pytest.mark.parametrize(("record", "evt", "reason"), [
    (None, event(), "meeting_required"),
    (stored("cancelled"), event(), "appointment_cancelled"),
    (stored("cancelled"), event("rescheduled", sequence=9), "appointment_cancelled"),
    (stored(**APP_MEETING, last_sequence=3), event("rescheduled", sequence=2), "stale_event"),
    (stored(**APP_MEETING, last_sequence=3), event("cancelled", sequence=2), "stale_event"),
    (stored(**APP_MEETING, last_occurred_at="2026-11-21T10:00:00.000Z"),
     event("rescheduled", occurredAt="2026-11-21T09:59:59Z"), "stale_event"),
    (stored(**APP_MEETING), event("rescheduled", organizer="dr.adams@contoso.test"), "invalid_event"),
])
def test_rejections_name_their_reason(record, evt, reason):
    decision = decide(record, evt, meeting_management=False)
    assert decision.action is Action.REJECT and decision.error is not None and decision.error.reason == reason
    assert decision.error.detail


def test_a_switch_records_the_new_meeting_as_supplied():
    before = stored(**APP_MEETING, organizer_join_url=LINK)
    moved = event("rescheduled", joinWebUrl=OTHER_LINK)
    after = record_after(before, moved, Action.SWITCH, MeetingFacts("m2", "https://visit/2", OTHER_LINK, None, None))
    assert (after.online_meeting_id, after.meeting_created_by_app, after.join_url) == ("m2", False, "https://visit/2")
    # so a later cancel never deletes the supplied meeting
    assert decide(after, event("cancelled", id="c"), meeting_management=True).action is Action.TOMBSTONE


def test_without_a_common_order_key_arrival_order_applies():
    # The record knows a sequence, the event only a time: neither can be compared, so the event applies
    record = stored(**APP_MEETING, last_sequence=5)
    assert decide(record, event("rescheduled", occurredAt="2020-01-01T00:00:00Z"),
                  meeting_management=True).action is Action.UPDATE


def test_record_after_keeps_links_until_the_cancel_and_advances_the_order():
    created = record_after(None, event(sequence=1, **TIMES), Action.CREATE,
                           MeetingFacts("m1", "https://join", "https://staff", "a", "b"), external_id="va-1")
    assert (created.status, created.meeting_created_by_app, created.last_sequence) == ("scheduled", True, 1)
    cancelled = record_after(created, event("cancelled", sequence=2), Action.DELETE,
                             MeetingFacts("m1", None, None, "a", "b"))
    assert (cancelled.status, cancelled.join_url, cancelled.online_meeting_id) == ("cancelled", None, "m1")
    assert cancelled.meeting_created_by_app and cancelled.last_sequence == 2 and cancelled.lease_owner is None


def test_a_live_lease_of_another_worker_bars_it_and_a_stale_one_does_not():
    now = datetime(2026, 11, 21, 9, tzinfo=UTC)
    held = stored(**APP_MEETING).leased("other", now - timedelta(seconds=10))
    assert lease_wait(held, "me", now, 300) == pytest.approx(290)
    assert lease_wait(held, "other", now, 300) is None
    assert lease_wait(replace(held, lease_at=now - timedelta(seconds=301)), "me", now, 300) is None


@pytest.mark.parametrize(("fields", "named"), [
    ({"startDateTime": "2026-12-01T09:00:00"}, "UTC offset"),
    ({"endDateTime": "2026-12-01T09:00:00Z"}, "'endDateTime' needs 'startDateTime'"),
    ({"startDateTime": "2026-12-01T10:00:00Z", "endDateTime": "2026-12-01T09:00:00Z"}, "after"),
    ({"sequence": -1}, "sequence"),
    ({"sequence": 2**53}, "sequence"),
    ({"sequence": 1.5}, "sequence"),
    ({"sequence": True}, "sequence"),
    ({"subject": "x" * 256}, "subject"),
    ({"participants": [{"user": "not a user"}]}, "participants[0].user"),
    ({"participants": [{"user": ORG, "role": "boss"}]}, "participants[0].role"),
    ({"participants": [{"user": ORG}] * 51}, "participants"),
    ({"clients": [{"email": "a@b.c"}]}, "clients[0].displayName"),
    ({"clients": [{"displayName": "Ann", "phone": "555-0100"}]}, "clients[0].phone"),
    ({"clients": [{"displayName": "Ann", "timeZone": "Mars/Olympus"}]}, "clients[0].timeZone"),
    ({"clients": [{"displayName": "Ann", "email": "not-an-address"}]}, "clients[0].email"),
    ({"tenantId": "contoso"}, "tenantId"),
])
def test_bad_lifecycle_fields_are_invalid_event_naming_the_field(fields, named):
    with pytest.raises(InvalidEventError) as raised:
        event(**fields)
    assert raised.value.reason == "invalid_event" and named in raised.value.detail


def test_lifecycle_fields_are_read_in_every_envelope():
    data = {"appointmentId": "apt-1", "organizer": ORG, "sequence": 7, "subject": "Follow-up", **TIMES,
            "participants": [{"user": "dr.adams@contoso.test", "role": "presenter"}],
            "clients": [{"displayName": "Ann", "phone": "+14255550100", "timeZone": "America/New_York"}]}
    envelopes = [
        {"id": "e", "type": "appointment.rescheduled", **data},
        {"specversion": "1.0", "id": "e", "source": "/s", "type": "appointment.rescheduled", "data": data},
        {"id": "e", "eventType": "appointment.rescheduled", "subject": "s", "dataVersion": "1.0",
         "eventTime": "2026-11-21T09:00:00Z", "data": data},
    ]
    for envelope in envelopes:
        parsed = parse_event(json.dumps(envelope))
        assert parsed.event_type == "appointment.rescheduled" and parsed.schedule.sequence == 7
        assert parsed.schedule.participants[0].role == "presenter" and parsed.schedule.clients[0].phone
        assert parsed.schedule.start == datetime(2026, 12, 1, 8, tzinfo=UTC)
