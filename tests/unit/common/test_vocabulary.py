"""One vocabulary: the enums are the only spelling of event types, statuses and webhook types, and the
published schemas list exactly their members."""

from __future__ import annotations

import json

import pytest

from shared.common.vocabulary import AppointmentStatus, EventType, WebhookKind, WebhookType
from shared.contracts import load_schema

pytestmark = pytest.mark.unit


def test_members_are_their_wire_text() -> None:
    assert EventType.CANCELLED == "appointment.cancelled"
    assert json.dumps({"t": EventType.CANCELLED, "s": AppointmentStatus.CANCELLED}) == \
        '{"t": "appointment.cancelled", "s": "cancelled"}'
    assert f"{AppointmentStatus.PENDING}" == "pending"


def test_every_webhook_type_has_its_kind() -> None:
    assert {t.kind for t in WebhookType} == set(WebhookKind)
    assert WebhookType.RESCHEDULED_BY_ORGANIZER.kind == "rescheduled_by_organizer"


def test_schemas_list_the_vocabulary() -> None:
    assert load_schema("common.json")["$defs"]["eventType"]["enum"] == [str(t) for t in EventType]
    assert load_schema("webhook-body.json")["properties"]["type"]["enum"] == [str(t) for t in WebhookType]


def test_the_old_constants_are_gone() -> None:
    import shared.intake.events as intake
    import shared.pipeline.inbound as inbound
    import shared.storage.appointments as store
    import shared.webhooks.outbound as outbound

    for module, names in ((inbound, ("CREATED", "CANCELLED", "EVENT_TYPES")), (intake, ("CANCELLED",)),
                          (store, ("PENDING", "CANCELLED", "STATUSES")), (outbound, ("EVENT_READY",))):
        assert not any(hasattr(module, name) for name in names), module.__name__


def test_meeting_kind_setting_and_the_scopes_each_kind_asks_for() -> None:
    from shared.exceptions import SettingsError
    from shared.identity.vault_acquirer import connect_scopes
    from shared.settings import load_settings
    from tests.unit.test_settings import sample_env

    calendar = load_settings({**sample_env(), "MEETING_MANAGEMENT": "true", "MEETING_KIND": "calendar"})
    names = {scope.rsplit("/", 1)[-1] for scope in connect_scopes(calendar)}
    assert {"Calendars.ReadWrite", "OnlineMeetings.Read", "VirtualAppointment.Read"} <= names
    assert "OnlineMeetings.ReadWrite" not in names
    standalone = load_settings({**sample_env(), "MEETING_MANAGEMENT": "true"})
    assert "Calendars.ReadWrite" not in {s.rsplit("/", 1)[-1] for s in connect_scopes(standalone)}
    with pytest.raises(SettingsError, match="MEETING_KIND"):
        load_settings({**sample_env(), "MEETING_KIND": "outlook"})
