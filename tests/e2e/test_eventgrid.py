"""Event Grid as the front door: what an Event Grid topic (CloudEvents 1.0 input schema) writes to a storage
queue subscription is processed like any other event.

The producer is the real azure-eventgrid client, publishing to a stand-in topic endpoint here; the stand-in does
what Event Grid's storage-queue delivery does: each event of the published batch becomes one queue message, its
JSON base64-encoded (Event Grid's encoding of queue messages, which the Functions host expects by default).
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from azure.core.credentials import AzureKeyCredential
from azure.core.messaging import CloudEvent
from azure.eventgrid.aio import EventGridPublisherClient
from azure.storage.queue.aio import QueueServiceClient

from shared import queues
from tests.e2e.conftest import read_all
from tests.schemas import assert_valid

pytestmark = pytest.mark.e2e
CARDIOLOGY = "MSo0YzdlMWQyYS05YjNmLTRlNWQtOGE2Yy0xZjJlM2Q0YzViNmEqMCoqMTk6bWVldGluZ19jYXJkaW9sb2d5QHRocmVhZC52Mg=="


@pytest.fixture
async def topic(queues_client: QueueServiceClient) -> AsyncIterator[dict[str, Any]]:
    """A stand-in Event Grid topic on loopback, delivering into `appointments` as a queue subscription does."""
    seen: dict[str, Any] = {"messages": []}
    queue = queues_client.get_queue_client(queues.APPOINTMENTS)

    async def publish(request: web.Request) -> web.Response:
        seen["content_type"] = request.headers.get("content-type", "")
        for event in await request.json():
            text = json.dumps(event)
            seen["messages"].append(text)
            await queue.send_message(base64.b64encode(text.encode()).decode())
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/api/events", publish)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    seen["endpoint"] = f"http://{host}:{port}/api/events"
    yield seen
    await runner.cleanup()


async def test_a_cloudevent_through_event_grid_ends_in_join_urls(host, queues_client, topic):
    # GIVEN a scheduler publishing a CloudEvent with the azure-eventgrid client
    event = CloudEvent(source="/schedulers/contoso", type="appointment.created",
                       data={"appointmentId": "apt-eventgrid", "organizer": "scheduler@contoso.test",
                             "onlineMeetingId": CARDIOLOGY})
    async with EventGridPublisherClient(topic["endpoint"], AzureKeyCredential("local")) as client:
        await client.send([event])
    # THEN the topic got a CloudEvents batch, and the queue message is the event as Event Grid writes it
    assert topic["content_type"].startswith("application/cloudevents-batch+json")
    (message,) = topic["messages"]
    assert json.loads(message)["specversion"] == "1.0" and json.loads(message)["id"] == event.id
    assert_valid("appointments-message.json", json.loads(message))
    # AND the app turns it into a join URL with the CloudEvent's id as the event id
    await host.drain(timeout=60)
    (result,) = [json.loads(t) for t in await read_all(queues_client, queues.JOIN_URLS)]
    assert result["appointmentId"] == "apt-eventgrid" and result["eventId"] == event.id
