"""End to end on the local stack: Azurite queues → harness → real function → msgraph-sdk → Graph emulator."""

from __future__ import annotations

import base64
import json
import ssl
import time
from typing import Any

import httpx
import pytest
from azure.eventgrid import EventGridEvent
from cloudevents.v1.conversion import to_structured
from cloudevents.v1.http import CloudEvent

from shared import queues
from tests.e2e.conftest import read_all, send, send_bytes

pytestmark = pytest.mark.e2e
SCHEDULER = "4c7e1d2a-9b3f-4e5d-8a6c-1f2e3d4c5b6a"
SCHEDULER_UPN = "scheduler@contoso.test"
CARDIOLOGY = "MSo0YzdlMWQyYS05YjNmLTRlNWQtOGE2Yy0xZjJlM2Q0YzViNmEqMCoqMTk6bWVldGluZ19jYXJkaW9sb2d5QHRocmVhZC52Mg=="
DERMATOLOGY = "MSo0YzdlMWQyYS05YjNmLTRlNWQtOGE2Yy0xZjJlM2Q0YzViNmEqMCoqMTk6bWVldGluZ19kZXJtYXRvbG9neUB0aHJlYWQudjI="
PHYSIO = "MSo4ZTJmM2E0Yi01YzZkLTRlN2YtOWEwYi0xYzJkM2U0ZjVhNmIqMCoqMTk6bWVldGluZ19waHlzaW9AdGhyZWFkLnYy"
CARDIOLOGY_JOIN_WEB_URL = ("https://teams.microsoft.com/l/meetup-join/19%3ameeting_cardiology%40thread.v2/0?context="
                           "%7b%22Tid%22%3a%227d0c2e5a-1b3f-4c8e-9a6d-0e5f4b3c2a10%22%7d")


def appointment(appointment_id: str, meeting_id: str | None = CARDIOLOGY, organizer: str = SCHEDULER,
                **extra: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"appointmentId": appointment_id, "organizer": organizer, **extra}
    if meeting_id:
        fields["onlineMeetingId"] = meeting_id
    return fields


def plain(event_id: str, **fields: Any) -> str:
    return json.dumps({"id": event_id, "type": "appointment.created", **appointment(**fields)})


async def results(client) -> list[dict[str, Any]]:
    return [json.loads(text) for text in await read_all(client, queues.JOIN_URLS)]


async def test_each_envelope_ends_in_join_urls(host, queues_client, stack):
    # GIVEN one event per envelope, made by the real producer libraries
    _, cloud_body = to_structured(CloudEvent({"type": "appointment.created", "source": "/scheduler",
                                              "id": "ce-1"}, appointment("apt-ce")))
    grid = EventGridEvent(subject="appointments/apt-eg", event_type="appointment.created", data_version="1.0",
                          data=appointment("apt-eg", DERMATOLOGY))
    await send(queues_client, plain("plain-1", appointment_id="apt-plain", organizer=SCHEDULER_UPN))
    await send(queues_client, cloud_body.decode())
    await send(queues_client, json.dumps(grid.serialize()))
    # WHEN the host drains the queue
    await host.drain(timeout=60)
    # THEN each has its join URL, from Graph, on join-urls
    by_appointment = {r["appointmentId"]: r for r in await results(queues_client)}
    assert set(by_appointment) == {"apt-plain", "apt-ce", "apt-eg"}
    assert "meeting_cardiology" in by_appointment["apt-ce"]["joinUrl"]
    assert "meeting_dermatology" in by_appointment["apt-eg"]["joinUrl"]
    assert by_appointment["apt-ce"]["eventId"] == "ce-1"
    assert await read_all(queues_client, queues.APPOINTMENTS_REJECTED) == []


async def test_join_web_url_is_resolved_through_graph(host, queues_client):
    await send(queues_client, plain("jwu-1", appointment_id="apt-jwu", meeting_id=None,
                                    joinWebUrl=CARDIOLOGY_JOIN_WEB_URL))
    await host.drain(timeout=30)
    (result,) = await results(queues_client)
    assert result["onlineMeetingId"] == CARDIOLOGY and "meeting_cardiology" in result["joinUrl"]


@pytest.mark.parametrize(("message", "reason"), [
    ("{not json", "invalid_json"),
    (plain("bad-1", appointment_id="apt-x", meeting_id="MSpub3RoZXJl"), "meeting_not_found"),
    (plain("bad-2", appointment_id="apt-y", meeting_id=PHYSIO), "forbidden"),
    (plain("bad-3", appointment_id="apt-z", organizer="nobody@contoso.test"), "organizer_not_connected"),
])
async def test_bad_event_is_rejected_on_its_first_attempt(host, queues_client, graph_admin, message, reason):
    await send(queues_client, message, contract_valid=reason != "invalid_json")
    await host.drain(timeout=30)
    (record,) = [json.loads(t) for t in await read_all(queues_client, queues.APPOINTMENTS_REJECTED)]
    assert record["reason"] == reason and record["dequeueCount"] == 1 and record["originalMessage"] == message
    assert await results(queues_client) == []
    assert host.stats["process_appointment"]["failed"] == 0


def _nested(depth: int) -> bytes:
    return ('{"id": "deep", "x": ' + "[" * depth + "]" * depth + "}").encode()


HOSTILE = {
    "nested_20000_deep": (_nested(20_000), "invalid_json"),
    "invalid_utf8": (plain("utf-1", appointment_id="apt-utf").encode().replace(b"apt-utf", b"apt-\xff\xfe"),
                     "invalid_encoding"),
    "meeting_id_dot": (plain("dot-1", appointment_id="apt-dot", meeting_id=".").encode(), "invalid_event"),
    "meeting_id_dotdot": (plain("dot-2", appointment_id="apt-dot2", meeting_id="..").encode(), "invalid_event"),
    "duplicate_organizer": (b'{"id": "dup-1", "appointmentId": "apt-dup", "organizer": "scheduler@contoso.test", '
                            b'"organizer": "' + SCHEDULER.encode() + b'", "onlineMeetingId": "' + CARDIOLOGY.encode()
                            + b'"}', "invalid_json"),
    "nan": (b'{"id": "nan-1", "appointmentId": "apt-nan", "organizer": "' + SCHEDULER.encode()
            + b'", "onlineMeetingId": "' + CARDIOLOGY.encode() + b'", "sequence": NaN}', "invalid_json"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
async def test_permanently_bad_input_is_rejected_on_the_first_attempt_never_poison(host, queues_client, case):
    # GIVEN a message no retry can make good
    body, reason = HOSTILE[case]
    await send_bytes(queues_client, body)
    # WHEN the host drains the queue
    await host.drain(timeout=30)
    # THEN it is rejected once, with its reason and the original kept byte for byte; nothing is in poison
    (record,) = [json.loads(t) for t in await read_all(queues_client, queues.APPOINTMENTS_REJECTED)]
    assert record["reason"] == reason and record["dequeueCount"] == 1
    kept = (base64.b64decode(record["originalMessageBase64"]) if record.get("originalMessageBase64")
            else record["originalMessage"].encode())
    assert kept == body
    assert await read_all(queues_client, queues.APPOINTMENTS_POISON) == []
    assert host.stats["process_appointment"]["invoked"] == 1 and host.stats["process_appointment"]["failed"] == 0


async def test_a_byte_order_mark_and_cloudevent_binary_data_are_accepted(host, queues_client):
    # GIVEN a plain event behind a UTF-8 byte-order mark, and a CloudEvent whose JSON data is data_base64
    await send_bytes(queues_client, b"\xef\xbb\xbf" + plain("bom-1", appointment_id="apt-bom").encode())
    data = base64.b64encode(json.dumps(appointment("apt-b64", DERMATOLOGY)).encode()).decode()
    await send(queues_client, json.dumps({"specversion": "1.0", "id": "b64-1", "source": "/scheduler",
                                          "type": "appointment.created", "datacontenttype": "application/json",
                                          "data_base64": data}))
    await host.drain(timeout=30)
    by_appointment = {r["appointmentId"]: r for r in await results(queues_client)}
    assert set(by_appointment) == {"apt-bom", "apt-b64"}
    assert await read_all(queues_client, queues.APPOINTMENTS_REJECTED) == []


async def test_transient_failure_ends_in_poison_after_max_dequeue_count(host, queues_client, graph_admin):
    # GIVEN Graph answers 503 for this meeting, always
    graph_admin.put("faults", json={"rules": [{"meeting_id": DERMATOLOGY, "status": 503}]})
    message = plain("t-1", appointment_id="apt-t", meeting_id=DERMATOLOGY)
    await send(queues_client, message)
    # WHEN the host retries it
    await host.drain(timeout=60)
    # THEN after maxDequeueCount attempts (host.json) it is in the poison queue, untouched, and nowhere else
    max_dequeue = host.queue_settings.max_dequeue_count
    assert await read_all(queues_client, queues.APPOINTMENTS_POISON) == [message]
    assert host.stats["process_appointment"]["invoked"] == max_dequeue
    stats = graph_admin.get("stats").json()
    assert stats["by_status"].get("503") == max_dequeue
    assert await results(queues_client) == [] and await read_all(queues_client, queues.APPOINTMENTS_REJECTED) == []


async def test_throttled_event_is_requeued_hidden_then_resolved(host, queues_client, graph_admin):
    # GIVEN Graph throttles once with a Retry-After longer than the in-process budget
    graph_admin.put("faults", json={"rules": [{"meeting_id": CARDIOLOGY, "status": 429, "retry_after": 4,
                                               "times": 1}]})
    await send(queues_client, plain("th-1", appointment_id="apt-th"))
    started = time.monotonic()
    # WHEN processed: the first attempt completes after re-enqueueing a copy hidden for Retry-After
    await host.drain(timeout=60)
    # THEN the copy is resolved on its second pass, no sooner than Retry-After
    (result,) = await results(queues_client)
    assert result["eventId"] == "th-1" and time.monotonic() - started >= 4
    assert host.stats["process_appointment"]["succeeded"] == 2
    assert await read_all(queues_client, queues.APPOINTMENTS_POISON) == []


async def test_many_events_share_one_graph_client_and_one_token(host, queues_client, stack, app_module):
    verify = ssl.create_default_context(cafile=stack["ca_bundle"])
    entra_admin = httpx.Client(base_url=stack["entra"]["admin_url"] + "/", verify=verify)
    before = entra_admin.get("stats").json()["token_requests"]
    client_before = app_module.services.graph.client
    for n in range(40):
        await send(queues_client, plain(f"many-{n}", appointment_id=f"apt-{n}"))
    await host.drain(timeout=60)
    assert len(await results(queues_client)) == 32 or host.stats["process_appointment"]["succeeded"] == 40
    assert host.stats["process_appointment"]["succeeded"] == 40
    assert app_module.services.graph.client is client_before
    # The scheduler's token was cached by earlier tests in this session, or is fetched exactly once now.
    assert entra_admin.get("stats").json()["token_requests"] - before <= 1


async def test_http_twin_through_the_host(host, stack):
    url = host.http_base_url + "/api/join-url"
    async with httpx.AsyncClient(timeout=30) as client:
        assert (await client.get(url, params={"organizer": SCHEDULER, "meetingId": CARDIOLOGY})).status_code == 401
        ok = await client.get(url, params={"organizer": SCHEDULER, "meetingId": CARDIOLOGY},
                              headers={"x-functions-key": "local-dev-function-key"})
        assert ok.status_code == 200 and "meeting_cardiology" in ok.json()["joinUrl"]
        by_url = await client.get(url, params={"organizer": SCHEDULER, "joinWebUrl": CARDIOLOGY_JOIN_WEB_URL,
                                               "code": "local-dev-function-key"})
        assert by_url.json()["onlineMeetingId"] == CARDIOLOGY
        missing = await client.get(url, params={"organizer": SCHEDULER, "meetingId": "MSpub3RoZXJl",
                                                "code": "local-dev-function-key"})
        assert missing.status_code == 404 and missing.headers["content-type"].startswith("application/problem+json")
        spec = await client.get(host.http_base_url + "/api/openapi.json")
        assert spec.status_code == 200 and "/join-url" in spec.json()["paths"]
