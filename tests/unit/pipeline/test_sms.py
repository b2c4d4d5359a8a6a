"""Client SMS: which texts an event calls for, and that a failed text never touches the join link."""

from __future__ import annotations

import json

import pytest

from shared.exceptions import ForbiddenError, GraphUnavailableError
from shared.pipeline import sms
from shared.pipeline.join_url_resolver import JoinUrlResolver
from shared.pipeline.processor import AppointmentProcessor
from shared.testing.idempotency import InMemoryIdempotencyStore
from shared.testing.requeue import InMemoryRequeuer
from tests.fakes import FakeGraph, make_flow, make_rejections, no_sleep

pytestmark = pytest.mark.unit
ORG = "scheduler@contoso.test"
CLIENTS = [{"displayName": "Ann", "phone": "+14255550100", "timeZone": "America/New_York"},
           {"displayName": "Bob", "email": "bob@example.com"}]


def event(kind: str, sequence: int, **fields) -> str:
    body = {"id": f"e-{kind}-{sequence}", "type": f"appointment.{kind}", "appointmentId": "apt-1",
            "organizer": ORG, "sequence": sequence, "clients": CLIENTS, **fields}
    if kind in ("created", "rescheduled"):
        body.update(startDateTime=f"2026-12-0{sequence}T09:00:00Z", endDateTime=f"2026-12-0{sequence}T10:00:00Z")
    return json.dumps(body)


def processor(graph: FakeGraph, reminder: str | None = "mins15") -> AppointmentProcessor:
    resolver = JoinUrlResolver(graph, inline_throttle_budget=0.0, sleep=no_sleep)
    return AppointmentProcessor(make_flow(graph, resolver, management=True), InMemoryRequeuer(),
                                InMemoryIdempotencyStore(), rejections=make_rejections(),
                                max_requeues=3, sms=graph, sms_reminder=reminder)


async def test_created_queues_a_confirmation_and_the_reminder_for_clients_with_a_phone():
    graph = FakeGraph()
    outcome = await processor(graph).process(event("created", 1))
    assert outcome.kind == "ready" and outcome.result.join_url
    assert [job.message_type for job in outcome.sms] == ["confirmation", "reminder"]
    (job,) = outcome.sms[:1]
    # Graph takes Windows time-zone names; only clients with a phone are texted
    assert job.attendees == (("+14255550100", "Eastern Standard Time"),)
    assert not [c for c in graph.calls if c[0].startswith("sms:")]  # nothing sent inline: the link never waits
    assert sms.SmsJob.from_json(job.to_json()) == job


async def test_the_cancellation_text_goes_out_before_the_app_deletes_its_meeting():
    graph = FakeGraph()
    app = processor(graph)
    await app.process(event("created", 1))
    outcome = await app.process(event("cancelled", 2))
    kinds = [c[0] for c in graph.calls]
    assert kinds.index("sms:cancellation") < kinds.index("delete")
    assert outcome.sms == () and outcome.sms_failures == () and outcome.result.status == "cancelled"


@pytest.mark.parametrize("error", [ForbiddenError("Graph 403 Forbidden: no Teams Premium"),
                                   GraphUnavailableError("Graph 503")])
async def test_a_failed_cancellation_text_is_recorded_and_the_meeting_still_goes(error):
    graph = FakeGraph()
    app = processor(graph)
    await app.process(event("created", 1))
    original = graph.send_sms

    async def failing(*args, **kwargs):
        raise error

    graph.send_sms = failing  # type: ignore[method-assign]
    outcome = await app.process(event("cancelled", 2))
    graph.send_sms = original  # type: ignore[method-assign]
    assert outcome.kind == "ready" and outcome.result.status == "cancelled"
    assert "delete" in [c[0] for c in graph.calls]
    (failure,) = outcome.sms_failures
    record = json.loads(failure.record)
    assert record["messageType"] == "cancellation" and record["reason"] == error.reason
    hooks = [json.loads(message) for message in outcome.webhooks()]
    assert [h["type"] for h in hooks] == ["appointment.joinurl.cancelled", "appointment.joinurl.sms_failed"]
    assert hooks[1]["webhookId"] == "e-cancelled-2_sms_failed"


async def test_a_queued_text_that_fails_permanently_becomes_its_record_and_webhook():
    graph = FakeGraph()
    graph.failures.append(ForbiddenError("Graph 403 Forbidden: the tenant has no Teams Premium"))
    job = sms.SmsJob("apt-1", ORG, "e-1", "m1", "reminder", (("+14255550100", "UTC"),), remind_before="mins15")
    failure = await sms.send_job(graph, job.to_json())
    assert failure is not None and json.loads(failure.record)["reason"] == "forbidden"
    assert failure.webhook.webhook_id == "e-1-reminder_sms_failed"
    # A transient failure raises: the host retries the job, then parks it in sms-outbox-poison
    graph.failures.append(GraphUnavailableError("Graph 503"))
    with pytest.raises(GraphUnavailableError):
        await sms.send_job(graph, job.to_json())


async def test_no_texts_without_phones_or_for_a_replay():
    graph = FakeGraph()
    app = processor(graph)
    assert (await app.process(event("created", 1, clients=[{"displayName": "Bob"}]))).sms == ()
    replay = await app.process(event("created", 1, id="again", clients=CLIENTS))
    assert replay.kind == "ready" and replay.sms == ()
