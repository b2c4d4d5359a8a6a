"""Hypothesis strategies for appointment events: anything at all, JSON of any shape, near-valid events."""

from __future__ import annotations

import json

from hypothesis import strategies as st

ORG = "scheduler@contoso.test"
FIELDS = ("id", "type", "appointmentId", "organizer", "onlineMeetingId", "joinWebUrl", "callbackUrl", "occurredAt",
          "specversion", "source", "eventType", "dataVersion", "data", "time", "eventTime", "$requeue", "message")

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=40))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=12)
# Values a field plausibly gets, and some it should not: control characters, long strings, wrong types.
field_values = st.one_of(
    json_values,
    st.sampled_from(["appointment.created", "appointment.deleted", "1.0", "0.3", ORG, "m1", "",
                     "4c7e1d2a-9b3f-4e5d-8a6c-1f2e3d4c5b6a", "https://teams.microsoft.com/l/x", "http://x/",
                     "javascript:alert(1)", "2026-11-21T09:00:00Z", "not a date", "a\r\nb", "\x00", "x" * 3000]),
)


@st.composite
def near_valid_documents(draw: st.DrawFn) -> dict[str, object]:
    """A valid event in one of the three envelopes, with fields dropped, replaced or added at random."""
    fields: dict[str, object] = {"appointmentId": "apt-1", "organizer": ORG, "onlineMeetingId": "m1"}
    envelope = draw(st.sampled_from(["plain", "cloudevents", "eventgrid"]))
    if envelope == "plain":
        doc: dict[str, object] = {"id": "evt-1", "type": "appointment.created", **fields}
        target = doc
    elif envelope == "cloudevents":
        doc = {"specversion": "1.0", "id": "evt-1", "source": "/s", "type": "appointment.created", "data": fields}
        target = fields
    else:
        doc = {"id": "evt-1", "eventType": "appointment.created", "dataVersion": "1.0", "subject": "s",
               "data": fields}
        target = fields
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=4)):
        where = draw(st.sampled_from([doc, target]))
        if draw(st.booleans()):
            where.pop(name, None)
        else:
            where[name] = draw(field_values)
    return doc


messages = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200).map(lambda b: b.decode("utf-8", "replace")),
    json_values.map(json.dumps),
    near_valid_documents().map(json.dumps),
    near_valid_documents().map(lambda d: json.dumps([d])),
    near_valid_documents().map(lambda d: json.dumps({"$requeue": {"attempt": 1, "reason": "throttled"},
                                                     "message": json.dumps(d)})),
)
