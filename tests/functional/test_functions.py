"""The functions invoked through Azure's Python worker as the host would, with fake Graph behind them."""

import json

import pytest

from devstack.harness import InvocationFailed, call_http, call_queue
from shared.exceptions import GraphUnavailableError, ThrottledError
from shared.pipeline.join_url_resolver import JoinUrlResolver
from shared.pipeline.processor import AppointmentProcessor
from shared.testing.idempotency import InMemoryIdempotencyStore
from shared.testing.requeue import InMemoryRequeuer
from tests.fakes import FakeGraph, make_flow, make_rejections, no_sleep

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


def event(**fields) -> str:
    return json.dumps({"id": "evt-1", "type": "appointment.created", "appointmentId": "apt-1",
                       "organizer": ORG, "onlineMeetingId": "m1", **fields})


async def process(worker, body, dequeue_count=1):
    import function_app

    rejections = function_app.services.processor._rejections.sink
    written = len(rejections.sent)
    called = await call_queue(worker, "process_appointment", body, dequeue_count=dequeue_count)
    results = called.texts("results")
    if results:  # a rejection without an appointment id has no one to notify
        assert json.loads(called.texts("outbox")[0])["type"] == "appointment.joinurl.ready"
    # The rejection record is the processor's own write (before its webhook can exist), not an output binding.
    rejected = rejections.sent[written] if len(rejections.sent) > written else None
    return (results[0] if results else None), rejected


async def test_event_becomes_a_result_on_join_urls(worker, graph):
    result, rejected = await process(worker, event(id="evt-ok"))
    assert rejected is None and json.loads(result)["joinUrl"] == URL


async def test_bad_event_becomes_a_rejection_with_the_original(worker, graph):
    result, rejected = await process(worker, "{oops", dequeue_count=1)
    record = json.loads(rejected)
    assert result is None and record["reason"] == "invalid_json" and record["originalMessage"] == "{oops"


async def test_transient_failure_raises_and_writes_nothing(worker, graph):
    graph.failures.append(GraphUnavailableError("Graph 503"))
    with pytest.raises(InvocationFailed, match="GraphUnavailableError"):
        await process(worker, event(id="evt-transient"))


async def lookup(worker, **params):
    response = (await call_http(worker, "get_join_url", path="/api/join-url", params=params)).http
    body = json.loads(response.get_body() or b"null")
    return response, body


async def test_http_twin_by_meeting_id_and_by_join_web_url(worker, graph):
    response, body = await lookup(worker, organizer=ORG, meetingId="m1")
    assert response.status_code == 200 and body["joinUrl"] == URL
    response, body = await lookup(worker, organizer=ORG, joinWebUrl="https://teams.microsoft.com/l/x")
    assert response.status_code == 200 and body["onlineMeetingId"] == "m1"


@pytest.mark.parametrize(("params", "status", "reason"), [
    ({"meetingId": "m1"}, 400, "invalid_event"),
    ({"organizer": ORG}, 400, "invalid_event"),
    ({"organizer": ORG, "meetingId": "m1", "joinWebUrl": "https://t/x"}, 400, "invalid_event"),
    ({"organizer": "nobody", "meetingId": "m1"}, 400, "invalid_event"),
    ({"organizer": ORG, "meetingId": "unknown"}, 404, "meeting_not_found"),
])
async def test_http_twin_errors_are_problem_json(worker, graph, params, status, reason):
    response, body = await lookup(worker, **params)
    assert response.status_code == status and response.mimetype == "application/problem+json"
    assert body["status"] == status and body["reason"] == reason and body["type"].endswith(reason)


async def test_http_twin_passes_throttling_back_with_retry_after(worker, graph):
    graph.failures.append(ThrottledError("Graph 429", retry_after=1.2))
    response, _ = await lookup(worker, organizer=ORG, meetingId="m1")
    assert response.status_code == 429 and response.headers["Retry-After"] == "2"


async def test_http_twin_maps_graph_outage_to_502(worker, graph):
    graph.failures.append(GraphUnavailableError("Graph 503"))
    response, _ = await lookup(worker, organizer=ORG, meetingId="m1")
    assert response.status_code == 502


async def test_openapi_document_is_served_and_describes_the_twin(worker):
    # A sync function: the worker runs it in its thread pool.
    response = (await call_http(worker, "openapi", path="/api/openapi.json")).http
    doc = json.loads(response.get_body())
    assert doc["openapi"].startswith("3.") and "/join-url" in doc["paths"]
