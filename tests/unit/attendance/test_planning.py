"""Which appointments get an attendance check, and the scope the connection asks for (no I/O)."""

from __future__ import annotations

import json

import pytest

from shared.attendance.check import AttendanceCheck
from shared.identity.vault_acquirer import connect_scopes
from shared.pipeline.join_url_resolver import JoinUrlResolver
from shared.pipeline.processor import AppointmentProcessor
from shared.settings import load_settings
from shared.testing.idempotency import InMemoryIdempotencyStore
from shared.testing.requeue import InMemoryRequeuer
from tests.fakes import FakeGraph, make_flow, make_rejections
from tests.unit.test_settings import sample_env

pytestmark = pytest.mark.unit
ORG = "scheduler@contoso.test"
URL = "https://visit.teams.microsoft.com/webrtc-svc/api/route?convId=1"


def processor(grace: float | None) -> AppointmentProcessor:
    graph = FakeGraph({(ORG, "m1"): URL})
    resolver = JoinUrlResolver(graph, inline_throttle_budget=0)
    return AppointmentProcessor(make_flow(graph, resolver), InMemoryRequeuer(), InMemoryIdempotencyStore(),
                                rejections=make_rejections(), max_requeues=1, attendance_grace_minutes=grace)


def created(**fields: object) -> str:
    return json.dumps({"id": "evt-1", "type": "appointment.created", "appointmentId": "apt-1", "organizer": ORG,
                       "onlineMeetingId": "m1", "startDateTime": "2026-12-01T09:00:00Z",
                       "endDateTime": "2026-12-01T09:30:00Z", "clients": [{"displayName": "Pat",
                                                                           "email": "Pat@Example.org"}], **fields})


async def test_a_scheduled_appointment_gets_its_check_due_after_the_grace_and_again_for_a_duplicate():
    app = processor(10)
    first = await app.process(created())
    again = await app.process(created())
    assert first.attendance_check is not None and again.attendance_check == first.attendance_check
    check = AttendanceCheck.from_json(first.attendance_check)
    assert check.due == "2026-12-01T09:40:00.000Z" and check.client_emails == ("pat@example.org",)


async def test_no_check_when_off_or_without_an_end():
    assert (await processor(None).process(created())).attendance_check is None
    no_end = created(startDateTime=None, endDateTime=None)
    assert (await processor(10).process(no_end)).attendance_check is None


def test_the_connection_asks_for_the_artifact_scope_only_when_attendance_is_on():
    scope = "https://graph.microsoft.com/OnlineMeetingArtifact.Read.All"
    assert scope not in connect_scopes(load_settings(sample_env()))
    assert scope in connect_scopes(load_settings(sample_env() | {"ATTENDANCE_REPORTS": "true"}))
