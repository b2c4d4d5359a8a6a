"""The decorated functions called as the host would, with real azure.functions objects and fake Graph."""

import json

import azure.functions as func
import pytest
from azure.functions.queue import QueueMessage

from shared.exceptions import GraphUnavailableError, ThrottledError
from shared.pipeline.join_url_resolver import JoinUrlResolver
from shared.pipeline.processor import AppointmentProcessor
from shared.testing.idempotency import InMemoryIdempotencyStore
from shared.testing.requeue import InMemoryRequeuer
from tests.fakes import CapturingOut, FakeGraph, make_flow, make_rejections, no_sleep

pytestmark = pytest.mark.functional
ORG = "scheduler@contoso.test"
URL = "https://visit.teams.microsoft.com/webrtc-svc/api/route?convId=1"


@pytest.fixture
def graph(function_app_module, monkeypatch):
    """Swap the worker's services for fakes; the functions themselves are the real ones."""
    fake = FakeGraph({(ORG, "m1"): URL}, {(ORG, "https://teams.microsoft.com/l/x"): "m1"})
    resolver = JoinUrlResolver(fake, inline_throttle_budget=2.0, sleep=no_sleep)
    services = function_app_module.services
    monkeypatch.setitem(services.__dict__, "resolver", resolver)
    rejections = make_rejections()
    monkeypatch.setitem(services.__dict__, "processor",
                        AppointmentProcessor(make_flow(fake, resolver), InMemoryRequeuer(),
                                             InMemoryIdempotencyStore(), rejections=rejections, max_requeues=3))
    return fake


def queue_message(body: str, dequeue_count: int = 1) -> QueueMessage:
    return QueueMessage(id="m-1", body=body.encode(), dequeue_count=dequeue_count, pop_receipt="r")


def event(**fields) -> str:
    return json.dumps({"id": "evt-1", "type": "appointment.created", "appointmentId": "apt-1",
                       "organizer": ORG, "onlineMeetingId": "m1", **fields})


async def call_queue(indexed, body, dequeue_count=1):
    results, outbox, sms = (CapturingOut() for _ in range(3))
    import function_app

    function = indexed["process_appointment"].get_user_function()
    rejections = function_app.services.processor._rejections.sink
    written = len(rejections.sent)
    await function(msg=queue_message(body, dequeue_count), results=results, outbox=outbox, sms=sms)
    if results.get():  # a rejection without an appointment id has no one to notify
        assert json.loads(outbox.get()[0])["type"] == "appointment.joinurl.ready"
    # The rejection record is the processor's own write (before its webhook can exist), not an output binding.
    rejected = rejections.sent[written] if len(rejections.sent) > written else None
    return results.get(), rejected


async def test_event_becomes_a_result_on_join_urls(indexed, graph):
    result, rejected = await call_queue(indexed, event(id="evt-ok"))
    assert rejected is None and json.loads(result)["joinUrl"] == URL


async def test_bad_event_becomes_a_rejection_with_the_original(indexed, graph):
    result, rejected = await call_queue(indexed, "{oops", dequeue_count=1)
    record = json.loads(rejected)
    assert result is None and record["reason"] == "invalid_json" and record["originalMessage"] == "{oops"


async def test_transient_failure_raises_and_writes_nothing(indexed, graph):
    graph.failures.append(GraphUnavailableError("Graph 503"))
    with pytest.raises(GraphUnavailableError):
        await call_queue(indexed, event(id="evt-transient"))


def http_request(**params) -> func.HttpRequest:
    return func.HttpRequest("GET", "http://localhost/api/join-url", params=params, body=b"")


async def call_http(indexed, **params):
    response = await indexed["get_join_url"].get_user_function()(req=http_request(**params))
    body = json.loads(response.get_body() or b"null")
    return response, body


async def test_http_twin_by_meeting_id_and_by_join_web_url(indexed, graph):
    response, body = await call_http(indexed, organizer=ORG, meetingId="m1")
    assert response.status_code == 200 and body["joinUrl"] == URL
    response, body = await call_http(indexed, organizer=ORG, joinWebUrl="https://teams.microsoft.com/l/x")
    assert response.status_code == 200 and body["onlineMeetingId"] == "m1"


@pytest.mark.parametrize(("params", "status", "reason"), [
    ({"meetingId": "m1"}, 400, "invalid_event"),
    ({"organizer": ORG}, 400, "invalid_event"),
    ({"organizer": ORG, "meetingId": "m1", "joinWebUrl": "https://t/x"}, 400, "invalid_event"),
    ({"organizer": "nobody", "meetingId": "m1"}, 400, "invalid_event"),
    ({"organizer": ORG, "meetingId": "unknown"}, 404, "meeting_not_found"),
])
async def test_http_twin_errors_are_problem_json(indexed, graph, params, status, reason):
    response, body = await call_http(indexed, **params)
    assert response.status_code == status and response.mimetype == "application/problem+json"
    assert body["status"] == status and body["reason"] == reason and body["type"].endswith(reason)


async def test_http_twin_passes_throttling_back_with_retry_after(indexed, graph):
    graph.failures.append(ThrottledError("Graph 429", retry_after=1.2))
    response, _ = await call_http(indexed, organizer=ORG, meetingId="m1")
    assert response.status_code == 429 and response.headers["Retry-After"] == "2"


async def test_http_twin_maps_graph_outage_to_502(indexed, graph):
    graph.failures.append(GraphUnavailableError("Graph 503"))
    response, _ = await call_http(indexed, organizer=ORG, meetingId="m1")
    assert response.status_code == 502


def test_openapi_document_is_served_and_describes_the_twin(indexed):
    response = indexed["openapi"].get_user_function()(req=func.HttpRequest("GET", "http://x/api/openapi.json",
                                                                            body=b""))
    doc = json.loads(response.get_body())
    assert doc["openapi"].startswith("3.") and "/join-url" in doc["paths"]
