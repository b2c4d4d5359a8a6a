"""The queue logic: outcomes, classification, and the throttling policy (no I/O)."""

import base64
import json

import pytest

from shared.exceptions import (
    AppOnlyTokenError,
    ForbiddenError,
    GraphUnavailableError,
    OrganizerNotConnectedError,
    TableStoreUnavailableError,
    ThrottledError,
    TransientError,
)
from shared.pipeline.join_url_resolver import JoinUrlResolver
from shared.pipeline.processor import AppointmentProcessor
from shared.redaction import hash_tenant
from shared.storage.requeue import unwrap_requeued
from shared.testing.idempotency import InMemoryIdempotencyStore
from shared.testing.requeue import InMemoryRequeuer
from tests.fakes import FakeGraph, make_flow, make_rejections

pytestmark = pytest.mark.unit
ORG = "scheduler@contoso.test"
URL = "https://visit.teams.microsoft.com/webrtc-svc/api/route?convId=1"


def event(**overrides):
    return json.dumps({"id": "evt-1", "type": "appointment.created", "appointmentId": "apt-1",
                       "organizer": ORG, "onlineMeetingId": "m1", **overrides})


def make(graph=None, budget=2.0, max_requeues=3):
    slept = []

    async def sleep(seconds):
        slept.append(seconds)

    graph = graph or FakeGraph({(ORG, "m1"): URL})
    requeuer = InMemoryRequeuer()
    resolver = JoinUrlResolver(graph, inline_throttle_budget=budget, sleep=sleep)
    processor = AppointmentProcessor(make_flow(graph, resolver), requeuer, InMemoryIdempotencyStore(),
                                     rejections=make_rejections(), max_requeues=max_requeues)
    return processor, graph, requeuer, slept


async def test_success_produces_a_result_record():
    processor, graph, _, _ = make()
    outcome = await processor.process(event())
    assert outcome.kind == "ready"
    assert outcome.result.to_dict()["joinUrl"] == URL
    assert outcome.result.to_dict()["eventId"] == "evt-1"
    assert len(graph.calls) == 1


async def test_join_web_url_is_resolved_to_a_meeting_id_first():
    graph = FakeGraph({(ORG, "m1"): URL}, {(ORG, "https://teams.microsoft.com/l/x"): "m1"})
    processor, _, _, _ = make(graph)
    outcome = await processor.process(event(onlineMeetingId=None, joinWebUrl="https://teams.microsoft.com/l/x"))
    assert outcome.result.online_meeting_id == "m1"
    assert [c[0] for c in graph.calls] == ["find", "join"]


@pytest.mark.parametrize("error", [
    ForbiddenError("Graph 403"), AppOnlyTokenError("app-only"), OrganizerNotConnectedError("reconnect")])
async def test_permanent_failures_are_rejected_on_first_attempt(error):
    processor, graph, requeuer, _ = make()
    graph.failures.append(error)
    outcome = await processor.process(event())
    assert outcome.kind == "rejected"
    record = outcome.rejection.to_dict()
    assert record["reason"] == error.reason and record["originalMessage"] == event()
    assert record["eventId"] == "evt-1" and not requeuer.sent


async def test_unknown_meeting_and_invalid_messages_are_rejected_with_ids_kept():
    processor, _, _, _ = make()
    assert (await processor.process(event(onlineMeetingId="nope"))).rejection.reason == "meeting_not_found"
    bad = json.dumps({"id": "evt-9", "appointmentId": "apt-9", "organizer": ORG})
    rejection = (await processor.process(bad, dequeue_count=1)).rejection
    # No meeting and meeting management off (the default): the event needs its meeting.
    assert (rejection.reason, rejection.event_id, rejection.appointment_id) == ("meeting_required", "evt-9", "apt-9")


async def test_a_refused_cloudevent_with_binary_data_keeps_its_ids():
    # The processor's own reader looked only at `data`: a data_base64 CloudEvent's record had no ids.
    data = base64.b64encode(json.dumps({"appointmentId": "apt-7", "organizer": "not an organizer"}).encode())
    text = json.dumps({"specversion": "1.0", "id": "ce-7", "source": "/s", "type": "appointment.created",
                       "data_base64": data.decode()})
    processor, _, _, _ = make()
    rejection = (await processor.process(text)).rejection
    assert (rejection.reason, rejection.event_id, rejection.appointment_id) == ("invalid_event", "ce-7", "apt-7")


async def test_transient_failures_raise_for_the_host_to_retry():
    processor, graph, _, _ = make()
    graph.failures.append(GraphUnavailableError("Graph 503"))
    with pytest.raises(TransientError):
        await processor.process(event())


async def test_short_retry_after_is_retried_in_process_within_the_budget():
    processor, graph, requeuer, slept = make(budget=2.0)
    graph.failures += [ThrottledError("429", retry_after=1), ThrottledError("429", retry_after=1)]
    outcome = await processor.process(event())
    assert outcome.kind == "ready" and slept == [1, 1] and not requeuer.sent


async def test_long_retry_after_requeues_a_hidden_copy_and_completes():
    processor, graph, requeuer, slept = make(budget=2.0)
    graph.failures.append(ThrottledError("429", retry_after=30))
    outcome = await processor.process(event())
    assert outcome.kind == "requeued" and slept == []
    (text, delay), = requeuer.sent
    assert delay == 30
    delivery = unwrap_requeued(text)
    assert delivery.text == event() and delivery.attempt == 1


async def test_budget_is_shared_so_an_invocation_never_sleeps_long():
    processor, graph, requeuer, slept = make(budget=2.0)
    graph.failures += [ThrottledError("429", retry_after=1.5), ThrottledError("429", retry_after=1.5)]
    outcome = await processor.process(event())
    assert outcome.kind == "requeued" and sum(slept) <= 2.0 and len(requeuer.sent) == 1


async def test_requeue_cap_turns_throttling_into_a_transient_failure():
    processor, graph, requeuer, _ = make(max_requeues=2)
    graph.failures.append(ThrottledError("429", retry_after=60))
    requeued = json.dumps({"$requeue": {"attempt": 2, "reason": "throttled"}, "message": event()})
    with pytest.raises(TransientError) as caught:
        await processor.process(requeued)
    assert caught.value.reason == "throttled_too_often" and not requeuer.sent


async def test_duplicate_event_makes_no_second_graph_call_and_keeps_its_webhook_id():
    processor, graph, _, _ = make()
    first = await processor.process(event())
    second = await processor.process(event())
    assert len(graph.calls) == 1
    assert second.kind == "ready" and second.result == first.result
    assert second.webhook.webhook_id == first.webhook.webhook_id == "evt-1_ready"


async def test_rejection_and_success_each_carry_a_webhook():
    processor, _, _, _ = make()
    failed = await processor.process(event(onlineMeetingId="nope"))
    assert json.loads(failed.webhook.body)["type"] == "appointment.joinurl.failed"
    assert json.loads(failed.webhook.body)["data"]["reason"] == "meeting_not_found"
    ready = await processor.process(event(id="evt-2"))
    assert json.loads(ready.webhook.body)["data"]["joinUrl"] == URL


async def test_transient_failure_releases_the_claim_so_the_retry_calls_graph_again():
    processor, graph, _, _ = make()
    graph.failures.append(GraphUnavailableError("Graph 503"))
    with pytest.raises(TransientError):
        await processor.process(event())
    assert (await processor.process(event())).kind == "ready" and len(graph.calls) == 2


async def test_bytes_that_are_not_utf8_are_rejected_with_the_bytes_kept_exactly():
    # GIVEN a message whose bytes are not UTF-8 (the host hands the function bytes)
    processor, graph, _, _ = make()
    body = b'{"id": "e-1", "appointmentId": "apt-\xff"}'
    # WHEN processed on its first attempt
    outcome = await processor.process(body, dequeue_count=1)
    # THEN it is rejected at once, nothing called Graph, and the record carries the exact bytes
    record = json.loads(outcome.rejection.to_json())
    assert outcome.kind == "rejected" and record["reason"] == "invalid_encoding" and graph.calls == []
    assert base64.b64decode(record["originalMessageBase64"]) == body and outcome.webhook is None


# --- tenants -------------------------------------------------------------------------------------------

TENANT = "7d0c2e5a-1b3f-4c8e-9a6d-0e5f4b3c2a10"
FABRIKAM = "3f9a7c21-6b4d-4e8a-a1c5-9d2e8f7b6a40"


async def test_results_carry_the_organizers_tenant_and_graph_is_asked_in_it():
    processor, graph, _, _ = make()
    outcome = await processor.process(event())
    assert outcome.result.to_dict()["tenantId"] == TENANT and graph.tenants_used == [TENANT]
    assert json.loads(outcome.webhook.body)["data"]["tenantId"] == TENANT


async def test_an_event_of_the_organizers_own_tenant_resolves():
    processor, _, _, _ = make()
    outcome = await processor.process(event(tenantId=TENANT.upper()))
    assert outcome.kind == "ready" and outcome.result.tenant_id == TENANT


async def test_a_cross_tenant_event_is_rejected_before_graph_with_its_tenant_on_record_and_webhook(caplog):
    processor, graph, _, _ = make()
    with caplog.at_level("WARNING", logger="shared.pipeline.processor"):
        outcome = await processor.process(event(tenantId=FABRIKAM))
    record = outcome.rejection.to_dict()
    assert outcome.kind == "rejected" and record["reason"] == "organizer_not_connected"
    assert record["tenantId"] == FABRIKAM and graph.calls == []
    assert json.loads(outcome.webhook.body)["data"]["tenantId"] == FABRIKAM
    [line] = [r for r in caplog.records if getattr(r, "outcome", None) == "rejected"]
    assert line.tenant_hash == hash_tenant(FABRIKAM) and FABRIKAM not in line.getMessage()


async def test_a_tenant_id_must_be_a_guid():
    processor, _, _, _ = make()
    rejection = (await processor.process(event(tenantId="contoso.onmicrosoft.com"))).rejection
    assert rejection.reason == "invalid_event" and "tenantId" in rejection.detail


async def test_a_stored_result_from_before_tenancy_is_still_read():
    store = InMemoryIdempotencyStore()
    old = {"appointmentId": "apt-1", "organizer": ORG, "onlineMeetingId": "m1", "joinUrl": URL, "eventId": "evt-1",
           "resolvedAt": "2026-11-21T09:00:01.234Z"}
    claim = await store.begin("evt:evt-1", stale_after_seconds=300)
    await store.complete("evt:evt-1", json.dumps(old), claim)
    processor = AppointmentProcessor(JoinUrlResolver(FakeGraph(), inline_throttle_budget=0), InMemoryRequeuer(),
                                     store, rejections=make_rejections(), max_requeues=1)
    outcome = await processor.process(event())
    assert outcome.kind == "ready" and outcome.result.tenant_id is None


async def test_a_rejection_is_written_before_its_webhook_is_handed_back_and_once_per_message():
    # GIVEN a processor whose rejection records go to an in-memory queue
    rejections = make_rejections()
    processor = AppointmentProcessor(make_flow(FakeGraph(), JoinUrlResolver(FakeGraph(), inline_throttle_budget=0)),
                                     InMemoryRequeuer(), InMemoryIdempotencyStore(), rejections=rejections,
                                     max_requeues=1)
    bad = event(onlineMeetingId=".")
    # WHEN a bad event is processed (the host retries the same message once: the outbox write had failed)
    first = await processor.process(bad, dequeue_count=1, message_id="m-1")
    again = await processor.process(bad, dequeue_count=2, message_id="m-1")
    # THEN its record was written by the time the webhook came back, and only once for that message
    assert first.webhook is not None and again.webhook is not None
    assert first.webhook.webhook_id == again.webhook.webhook_id
    assert [json.loads(text)["reason"] for text in rejections.sink.sent] == ["invalid_event"]
    # AND a second copy of the event (another message) gets its own record
    await processor.process(bad, dequeue_count=1, message_id="m-2")
    assert len(rejections.sink.sent) == 2


async def test_a_rejection_record_that_cannot_be_written_raises_so_no_webhook_goes_out():
    rejections = make_rejections()

    async def unavailable(text, *, delay_seconds=0):
        raise TableStoreUnavailableError("queue PUT failed")

    rejections.sink.send = unavailable
    processor = AppointmentProcessor(make_flow(FakeGraph(), JoinUrlResolver(FakeGraph(), inline_throttle_budget=0)),
                                     InMemoryRequeuer(), InMemoryIdempotencyStore(), rejections=rejections,
                                     max_requeues=1)
    with pytest.raises(TableStoreUnavailableError):
        await processor.process(event(onlineMeetingId="."), message_id="m-1")
