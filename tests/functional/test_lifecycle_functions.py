"""The lifecycle's functions called as the host calls them: the appointment twin and send_sms."""

from __future__ import annotations

import json

import azure.functions as func
import pytest
from azure.functions.queue import QueueMessage

from shared.exceptions import ForbiddenError
from shared.pipeline.sms import SmsJob
from shared.storage.appointments import AppointmentRecord
from shared.testing.appointments import InMemoryAppointmentStore
from shared.testing.requeue import InMemoryQueueWriter
from tests.fakes import CapturingOut, FakeGraph

pytestmark = pytest.mark.functional
ORG = "scheduler@contoso.test"


def request(appointment_id: str) -> func.HttpRequest:
    return func.HttpRequest("GET", f"http://localhost/api/appointments/{appointment_id}", body=b"",
                            route_params={"appointmentId": appointment_id})


async def test_the_appointment_twin_answers_from_the_record_and_404s_as_problem_json(indexed, function_app_module,
                                                                                    monkeypatch):
    store = InMemoryAppointmentStore()
    await store.insert(AppointmentRecord("apt-1", ORG, status="cancelled", online_meeting_id="m1",
                                         meeting_created_by_app=True, join_url="https://visit/x",
                                         start="2026-12-01T08:00:00.000Z", end="2026-12-01T08:30:00.000Z"))
    monkeypatch.setitem(function_app_module.services.__dict__, "appointments", store)
    handler = indexed["get_appointment"].get_user_function()
    found = await handler(req=request("apt-1"))
    body = json.loads(found.get_body())
    assert found.status_code == 200 and body["status"] == "cancelled" and body["joinUrl"] is None
    assert body["meetingCreatedByApp"] is True and body["startDateTime"] == "2026-12-01T08:00:00.000Z"
    missing = await handler(req=request("apt-2"))
    assert missing.status_code == 404 and missing.mimetype == "application/problem+json"
    assert json.loads(missing.get_body())["reason"] == "appointment_not_found"


async def test_send_sms_records_a_failed_text_and_tells_the_scheduler(indexed, function_app_module, monkeypatch):
    graph = FakeGraph()
    graph.failures.append(ForbiddenError("Graph 403 Forbidden: the tenant has no Teams Premium"))
    monkeypatch.setitem(function_app_module.services.__dict__, "meetings", graph)
    failed = InMemoryQueueWriter()
    monkeypatch.setitem(function_app_module.services.__dict__, "sms_failures", failed)
    job = SmsJob("apt-1", ORG, "e-1", "m1", "confirmation", (("+14255550100", "UTC"),))
    outbox = CapturingOut()
    message = QueueMessage(id="s-1", body=job.to_json().encode(), dequeue_count=1, pop_receipt="r")
    await indexed["send_sms"].get_user_function()(msg=message, outbox=outbox)
    (record,) = failed.sent
    assert json.loads(record)["reason"] == "forbidden"
    assert json.loads(outbox.get())["type"] == "appointment.joinurl.sms_failed"
