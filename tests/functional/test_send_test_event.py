"""The operator's test-event command against Azurite: the event goes in base64 as the trigger reads it, and the
command reports the outcome it finds (a join link or a rejection) for that event only."""

from __future__ import annotations

import io
import json

import pytest

from shared import queues
from shared.pipeline.records import Rejection
from shared.send_test_event import build_event, send_and_wait
from shared.settings import StorageConnection
from shared.storage.queue_client import queue_client, send_creating
from tests.functional.azurite import running_azurite

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def conn():
    with running_azurite() as connection_string:
        yield StorageConnection(connection_string=connection_string)


async def put(conn, queue, text):
    async with queue_client(conn, queue) as client:
        await send_creating(client, text)


async def test_the_event_goes_in_and_its_result_is_reported(conn):
    event = build_event("scheduler@contoso.test", meeting_id="MSo0", event_id="t-ok")
    await put(conn, queues.JOIN_URLS, json.dumps({"eventId": "someone-else", "appointmentId": "x"}))
    await put(conn, queues.JOIN_URLS, json.dumps({"eventId": "t-ok", "appointmentId": "t-ok-appointment",
                                                  "joinUrl": "https://teams.example/secret"}))
    out = io.StringIO()
    assert await send_and_wait(conn, event, wait_seconds=5, out=out) == 0
    assert "join link ready for t-ok-appointment" in out.getvalue() and "secret" not in out.getvalue()
    async with queue_client(conn, queues.APPOINTMENTS) as client:
        (message,) = await client.peek_messages(max_messages=32)
    sent = json.loads(message.content)
    assert sent == event and sent["type"] == "appointment.created" and "callbackUrl" not in sent


async def test_a_rejection_is_reported_with_its_reason(conn):
    event = build_event("nobody@contoso.test", meeting_id="MSo0", event_id="t-bad")
    await put(conn, queues.APPOINTMENTS_REJECTED,
              Rejection("organizer_not_connected", "connect first", json.dumps(event), "t-bad", "a").to_json())
    out = io.StringIO()
    assert await send_and_wait(conn, event, wait_seconds=5, out=out) == 1
    assert "reason=organizer_not_connected" in out.getvalue()


async def test_nothing_in_time_says_where_to_look(conn):
    out = io.StringIO()
    assert await send_and_wait(conn, build_event("o@contoso.test", meeting_id="m", event_id="t-none"),
                               wait_seconds=0.5, out=out) == 2
    assert "t-none" in out.getvalue()
