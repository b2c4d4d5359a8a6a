"""Graph's POSTs to graph_notifications and graph_lifecycle, through Azure's Python worker as the host invokes them:
the validation echo at once, a notification batch split onto calendar-notifications with a 202, junk refused."""

from __future__ import annotations

import json
import time

import pytest

from devstack.harness import call_http

pytestmark = pytest.mark.functional
CHANGE = {"subscriptionId": "sub-1", "clientState": "s3cret", "changeType": "updated",
          "resource": "Users/u/Events/AAMk=", "subscriptionExpirationDateTime": "2026-12-09T00:00:00Z",
          "resourceData": {"@odata.type": "#Microsoft.Graph.Event", "@odata.etag": 'W/"x"', "id": "AAMk="},
          "tenantId": "7d0c2e5a-1b3f-4c8e-9a6d-0e5f4b3c2a10"}


@pytest.fixture(autouse=True)
def calendar_mode(function_app_module):
    """The app's services with MEETING_KIND=calendar for each test (the sample settings are standalone)."""
    from shared.services import Services
    from shared.settings import load_settings
    from tests.sample_settings import sample_env

    before = function_app_module.services
    function_app_module.services = Services(load_settings(sample_env(MEETING_KIND="calendar",
                                                                     MEETING_MANAGEMENT="true")))
    yield
    function_app_module.services = before


async def post(worker, name: str, *, body: bytes = b"", params: dict[str, str] | None = None):
    route = "graph/notifications" if name == "graph_notifications" else "graph/lifecycle"
    return await call_http(worker, name, method="POST", path=f"/api/{route}", params=params, body=body,
                           headers={"content-type": "application/json"})


@pytest.mark.parametrize("name", ["graph_notifications", "graph_lifecycle"])
async def test_the_validation_request_is_echoed_as_plain_text_at_once_with_nothing_queued(worker, name):
    token = "Validation: Testing client application reachability for subscription Request-Id: 1+2 &x"
    started = time.perf_counter()
    called = await post(worker, name, params={"validationToken": token})
    assert time.perf_counter() - started < 1.0  # Graph allows 10 s; no storage call on this path
    assert called.http.status == 200 and called.http.body.decode() == token
    assert called.http.headers["content-type"].startswith("text/plain")
    assert called.texts("notifications") == []


async def test_a_batch_becomes_one_message_per_notification_and_202(worker):
    other = {**CHANGE, "changeType": "deleted", "resourceData": {**CHANGE["resourceData"], "id": "AAMl="}}
    started = time.perf_counter()
    called = await post(worker, "graph_notifications", body=json.dumps({"value": [CHANGE, other]}).encode())
    assert time.perf_counter() - started < 1.0  # Graph wants a 2xx within 3 s
    assert called.http.status == 202
    messages = [json.loads(text) for text in called.texts("notifications")]
    assert [m["kind"] for m in messages] == ["change", "change"]
    assert [m["notification"]["changeType"] for m in messages] == ["updated", "deleted"]


async def test_a_lifecycle_notification_is_queued_as_such(worker):
    item = {"subscriptionId": "sub-1", "clientState": "s3cret", "lifecycleEvent": "missed",
            "subscriptionExpirationDateTime": "2026-12-09T00:00:00Z", "tenantId": CHANGE["tenantId"]}
    called = await post(worker, "graph_lifecycle", body=json.dumps({"value": [item]}).encode())
    assert called.http.status == 202
    (message,) = [json.loads(text) for text in called.texts("notifications")]
    assert message["kind"] == "lifecycle" and message["notification"]["lifecycleEvent"] == "missed"


@pytest.mark.parametrize("body", [b"not json", b"{}", b'{"value": []}', b'{"value": [{"changeType": "updated"}]}',
                                  b'{"value": ["x"]}'])
async def test_anything_but_a_notification_collection_is_refused_and_nothing_queued(worker, body):
    called = await post(worker, "graph_notifications", body=body)
    assert called.http.status == 400
    assert called.http.headers["content-type"].startswith("application/problem+json")
    assert called.texts("notifications") == []


async def test_an_item_without_its_client_state_is_queued_to_be_dropped_there_not_failing_the_batch(worker):
    item = {"subscriptionId": "sub-1"}
    called = await post(worker, "graph_lifecycle", body=json.dumps({"value": [item, {**item, "clientState": "s"}]}
                                                                   ).encode())
    assert called.http.status == 202 and len(called.texts("notifications")) == 2


async def test_in_standalone_mode_the_routes_answer_404_and_queue_nothing(worker, function_app_module):
    from shared.services import Services
    from shared.settings import load_settings
    from tests.sample_settings import sample_env

    function_app_module.services = Services(load_settings(sample_env()))
    called = await post(worker, "graph_notifications", body=json.dumps({"value": [CHANGE]}).encode())
    assert called.http.status == 404 and called.texts("notifications") == []
