"""Event parsing: the three envelopes, validation reasons, and requeue wrapping."""

import base64
import json

import pytest

from shared.exceptions import InvalidEventError, UnsupportedEventTypeError
from shared.pipeline.inbound import EventIds, appointment_fields, best_effort_ids, parse_event

pytestmark = pytest.mark.unit
ORGANIZER = "4c7e1d2a-9b3f-4e5d-8a6c-1f2e3d4c5b6a"
FIELDS = {"appointmentId": "apt-1", "organizer": ORGANIZER, "onlineMeetingId": "MSo0abc=="}


def test_plain_json_event_is_parsed():
    # GIVEN a plain JSON event WHEN parsed THEN every field lands in the model
    event = parse_event(json.dumps({"id": "evt-1", "type": "appointment.created", **FIELDS,
                                    "occurredAt": "2026-11-21T10:00:00Z"}))
    assert (event.event_id, event.appointment_id, event.organizer) == ("evt-1", "apt-1", ORGANIZER)
    assert event.online_meeting_id == "MSo0abc==" and event.schema == "plain"
    assert event.occurred_at is not None and event.occurred_at.year == 2026


def test_cloudevent_takes_id_from_envelope_and_fields_from_data():
    doc = {"specversion": "1.0", "id": "ce-1", "source": "/scheduler", "type": "appointment.created",
           "time": "2026-11-21T10:00:00Z", "data": FIELDS}
    event = parse_event(json.dumps(doc))
    assert event.event_id == "ce-1" and event.schema == "cloudevents" and event.appointment_id == "apt-1"


def test_eventgrid_event_and_single_element_batch():
    doc = {"id": "eg-1", "eventType": "appointment.created", "subject": "apt-1", "dataVersion": "1.0",
           "eventTime": "2026-11-21T10:00:00Z", "data": FIELDS}
    assert parse_event(json.dumps(doc)).schema == "eventgrid"
    assert parse_event(json.dumps([doc])).event_id == "eg-1"


def test_join_web_url_instead_of_meeting_id():
    fields = {**FIELDS, "onlineMeetingId": None, "joinWebUrl": "https://teams.microsoft.com/l/meetup-join/x"}
    event = parse_event(json.dumps({"id": "e", **fields}))
    assert event.online_meeting_id is None and event.join_web_url is not None


@pytest.mark.parametrize(("message", "reason", "fragment"), [
    ("not json", "invalid_json", "not JSON"),
    ("[1, 2]", "invalid_event", "exactly one"),
    ('"text"', "invalid_event", "JSON object"),
    (json.dumps({"id": "e", "organizer": ORGANIZER, "onlineMeetingId": "m"}), "invalid_event", "appointmentId"),
    (json.dumps({"id": "e", "type": "appointment.rescheduled", "appointmentId": "a", "organizer": ORGANIZER}),
     "invalid_event", "startDateTime"),
    (json.dumps({"id": "e", **FIELDS, "organizer": "not a user"}), "invalid_event", "organizer"),
    (json.dumps({**FIELDS}), "invalid_event", "'id'"),
    (json.dumps({"id": "e", **FIELDS, "joinWebUrl": "http://teams/x", "onlineMeetingId": None}),
     "invalid_event", "https"),
    (json.dumps({"id": "e", **FIELDS, "appointmentId": 7}), "invalid_event", "string"),
    (json.dumps({"id": "e", **FIELDS, "occurredAt": "yesterday"}), "invalid_event", "ISO 8601"),
    (json.dumps({"specversion": "0.3", "id": "e", "source": "s", "type": "appointment.created"}),
     "invalid_event", "specversion"),
    (json.dumps({"specversion": "1.0", "id": "e", "source": "s", "type": "appointment.created", "data": 5}),
     "invalid_event", "data"),
])
def test_bad_messages_are_rejected_with_a_reason(message, reason, fragment):
    with pytest.raises(InvalidEventError) as caught:
        parse_event(message)
    assert caught.value.reason == reason and fragment in caught.value.detail


def test_unknown_event_type_has_its_own_reason():
    with pytest.raises(UnsupportedEventTypeError) as caught:
        parse_event(json.dumps({"id": "e", "type": "appointment.noshow", **FIELDS}))
    assert caught.value.reason == "unsupported_event_type"


@pytest.mark.parametrize("meeting_id", [".", ".."])
def test_dot_segments_are_not_meeting_ids(meeting_id):
    # Quoted or not, "." and ".." would change the Graph request's path.
    with pytest.raises(InvalidEventError, match="onlineMeetingId"):
        parse_event(json.dumps({"id": "e", **FIELDS, "onlineMeetingId": meeting_id}))


def test_a_cloudevent_with_binary_json_data_is_read():
    data = base64.b64encode(json.dumps(FIELDS).encode()).decode()
    event = parse_event(json.dumps({"specversion": "1.0", "id": "ce", "source": "/s", "type": "appointment.created",
                                    "data_base64": data}))
    assert event.appointment_id == FIELDS["appointmentId"] and event.schema == "cloudevents"


@pytest.mark.parametrize(("envelope", "why"), [
    ({"data_base64": "not base64!"}, "base64"),
    ({"data_base64": base64.b64encode(b"<xml/>").decode(), "datacontenttype": "application/xml"}, "JSON"),
])
def test_unusable_binary_data_is_invalid(envelope, why):
    doc = {"specversion": "1.0", "id": "ce", "source": "/s", "type": "appointment.created", **envelope}
    with pytest.raises(InvalidEventError, match=why):
        parse_event(json.dumps(doc))


def test_a_repeated_identifying_field_is_refused():
    text = '{"id": "e", "appointmentId": "a", "organizer": "x@contoso.test", "organizer": "y@contoso.test", ' \
           '"onlineMeetingId": "m"}'
    with pytest.raises(InvalidEventError) as caught:
        parse_event(text)
    assert caught.value.reason == "invalid_json" and "'organizer' appears twice" in caught.value.detail


# The best-effort reader beside the parser: what a refused message was about. Each case below is one the
# three earlier readers (processor, replay, the Standard Webhooks intake) read differently or not at all.
TENANT = "72F988BF-86F1-41AF-91AB-2D7CD011DB47"
IDS = {"appointmentId": "apt-1", "organizer": "x@contoso.test", "tenantId": TENANT}


def _cloudevent(**envelope):
    return {"specversion": "1.0", "id": "ce-1", "source": "/s", "type": "appointment.created", **envelope}


@pytest.mark.parametrize("doc", [
    pytest.param({"id": "ce-1", **IDS}, id="plain"),
    pytest.param(_cloudevent(data=IDS), id="cloudevent"),
    pytest.param(_cloudevent(data_base64=base64.b64encode(json.dumps(IDS).encode()).decode()),
                 id="cloudevent data_base64"),
    pytest.param(_cloudevent(data=json.dumps(IDS)), id="cloudevent data as JSON text"),
    pytest.param([_cloudevent(data=IDS)], id="a batch of one"),
    pytest.param({"id": "ce-1", "eventType": "appointment.created", "dataVersion": "1", "data": IDS},
                 id="event grid"),
    pytest.param({"type": "appointment.created", "timestamp": "2026-12-06T10:00:00Z", "data": {"id": "ce-1", **IDS}},
                 id="standard webhooks shape"),
])
def test_best_effort_ids_read_every_envelope(doc):
    ids = best_effort_ids(json.dumps(doc))
    assert ids == EventIds("ce-1", "apt-1", "x@contoso.test", TENANT.lower())
    assert best_effort_ids(json.dumps(doc).encode()) == ids


def test_best_effort_ids_of_a_refused_cloudevent_with_binary_data():
    # Refused (no organizer check passes for "not an organizer"), yet its rejection record names the event.
    data = base64.b64encode(json.dumps({**IDS, "organizer": "not an organizer"}).encode()).decode()
    text = json.dumps(_cloudevent(data_base64=data))
    with pytest.raises(InvalidEventError):
        parse_event(text)
    assert best_effort_ids(text).appointment_id == "apt-1" and best_effort_ids(text).tenant_id == TENANT.lower()


def test_best_effort_ids_survive_a_repeated_field_and_cut_long_texts():
    text = '{"id": "e", "appointmentId": "a", "appointmentId": "' + "b" * 300 + '"}'
    with pytest.raises(InvalidEventError):
        parse_event(text)
    assert best_effort_ids(text).appointment_id == "b" * 256


@pytest.mark.parametrize("text", ["not json", "[]", "[1, 2]", '"text"', "NaN", b"\xff\xfe"])
def test_best_effort_ids_of_nothing_readable(text):
    assert best_effort_ids(text) == EventIds()


def test_best_effort_ids_of_unreadable_binary_data():
    assert best_effort_ids(json.dumps(_cloudevent(data_base64="not base64!"))) == EventIds(event_id="ce-1")


def test_appointment_fields_is_the_plain_document_or_its_data():
    plain = {"id": "e", **IDS, "data": {"appointmentId": "other"}}
    assert appointment_fields(plain) is plain
    assert appointment_fields({"data": IDS}) == IDS
    assert appointment_fields(_cloudevent(data="not an object")) is None
