"""The lifecycle's functions invoked through Azure's Python worker: the appointment twin and send_sms."""

from __future__ import annotations

import json

import pytest

from devstack.harness import call_http, call_queue
from shared.exceptions import ForbiddenError
from shared.pipeline.sms import SmsJob
from shared.storage.appointments import AppointmentRecord
from shared.testing.appointments import InMemoryAppointmentStore
from tests.fakes import FakeGraph

pytestmark = pytest.mark.functional
ORG = "scheduler@contoso.test"


async def lookup(worker, appointment_id: str):
    called = await call_http(worker, "get_appointment", path=f"/api/appointments/{appointment_id}",
                             route_params={"appointmentId": appointment_id})
    return called.http


async def test_the_appointment_twin_answers_from_the_record_and_404s_as_problem_json(worker, function_app_module,
                                                                                    monkeypatch):
    store = InMemoryAppointmentStore()
    await store.insert(AppointmentRecord("apt-1", ORG, status="cancelled", online_meeting_id="m1",
                                         meeting_created_by_app=True, join_url="https://visit/x",
                                         start="2026-12-01T08:00:00.000Z", end="2026-12-01T08:30:00.000Z"))
    monkeypatch.setitem(function_app_module.services.__dict__, "appointments", store)
    found = await lookup(worker, "apt-1")
    body = json.loads(found.get_body())
    assert found.status_code == 200 and body["status"] == "cancelled" and body["joinUrl"] is None
    assert body["meetingCreatedByApp"] is True and body["startDateTime"] == "2026-12-01T08:00:00.000Z"
    missing = await lookup(worker, "apt-2")
    assert missing.status_code == 404 and missing.mimetype == "application/problem+json"
    assert json.loads(missing.get_body())["reason"] == "appointment_not_found"


async def test_send_sms_records_a_failed_text_and_tells_the_scheduler(worker, function_app_module, monkeypatch):
    graph = FakeGraph()
    graph.failures.append(ForbiddenError("Graph 403 Forbidden: the tenant has no Teams Premium"))
    monkeypatch.setitem(function_app_module.services.__dict__, "meetings", graph)
    job = SmsJob("apt-1", ORG, "e-1", "m1", "confirmation", (("+14255550100", "UTC"),))
    called = await call_queue(worker, "send_sms", job.to_json())
    [failed], [outbox] = called.texts("sms_failed"), called.texts("outbox")
    assert json.loads(failed)["reason"] == "forbidden"
    assert json.loads(outbox)["type"] == "appointment.joinurl.sms_failed"


async def test_the_appointment_twin_takes_any_id_in_the_query(worker, function_app_module, monkeypatch):
    # A Calendly-derived id is an invitee URI: its slashes cannot travel in a path segment through Azure's host
    calendly_id = "calendly:https://api.calendly.com/scheduled_events/GBGB/invitees/AAAA"
    store = InMemoryAppointmentStore()
    await store.insert(AppointmentRecord(calendly_id, ORG, status="scheduled", online_meeting_id="m1",
                                         join_url="https://visit/x"))
    monkeypatch.setitem(function_app_module.services.__dict__, "appointments", store)
    found = (await call_http(worker, "get_appointment", path="/api/appointments",
                             params={"appointmentId": calendly_id})).http
    assert found.status_code == 200 and json.loads(found.get_body())["appointmentId"] == calendly_id
    neither = (await call_http(worker, "get_appointment", path="/api/appointments")).http
    assert neither.status_code == 400 and json.loads(neither.get_body())["reason"] == "invalid_request"
