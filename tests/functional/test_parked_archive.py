"""Nothing parked expires unseen: on a real Azurite queue, a message with a short lifetime is archived by the
archive_parked timer's logic, outlives its queue lifetime in the archive, and replay puts it back."""

from __future__ import annotations

import asyncio
import json

import pytest
from azure.storage.blob.aio import BlobServiceClient
from azure.storage.queue.aio import QueueServiceClient

from shared import queues
from shared.replay import main, replay
from shared.replay import peek as peek_command
from shared.settings import StorageConnection
from shared.storage.parked_archive import archive_expiring
from shared.storage.queue_client import NEVER_EXPIRES, QueueWriter, queue_client, send_creating
from tests.functional.azurite import running_azurite

pytestmark = pytest.mark.e2e
CONTAINER = "parked-archive"
LIFETIME_SECONDS = 3


@pytest.fixture(scope="module")
def azurite():
    with running_azurite() as connection_string:
        yield connection_string


@pytest.fixture
async def conn(azurite):
    async with QueueServiceClient.from_connection_string(azurite) as service:
        async for queue in service.list_queues():
            await service.delete_queue(queue.name)
    async with BlobServiceClient.from_connection_string(azurite) as blobs:
        async for container in blobs.list_containers():
            await blobs.delete_container(container.name)
    return StorageConnection(connection_string=azurite)


async def park(conn, queue, text, *, time_to_live):
    async with queue_client(conn, queue) as client:
        await send_creating(client, text, time_to_live=time_to_live)


async def peek(conn, queue):
    async with queue_client(conn, queue) as client:
        try:
            return sorted(m.content.decode() for m in await client.peek_messages(max_messages=32))
        except Exception:
            return []


async def test_a_parked_message_outlives_its_queue_lifetime_and_is_replayed(conn):
    # GIVEN a poison message and an SMS failure with a 3 s lifetime, and one on a queue nobody archives
    poison = json.dumps({"id": "evt-p", "appointmentId": "a-p", "organizer": "o@contoso.example"})
    job = json.dumps({"appointment_id": "a-s", "message_type": "confirmation"})
    sms_failure = json.dumps({"reason": "forbidden", "originalMessage": job})
    await park(conn, queues.APPOINTMENTS_POISON, poison, time_to_live=LIFETIME_SECONDS)
    await park(conn, queues.SMS_FAILED, sms_failure, time_to_live=LIFETIME_SECONDS)
    await park(conn, queues.JOIN_URLS, "not parked", time_to_live=LIFETIME_SECONDS)
    # and a rejection written as the app writes it: without expiry, so it stays on its queue
    rejection = json.dumps({"reason": "invalid_event", "originalMessage": "{}"})
    writer = QueueWriter(conn, queues.APPOINTMENTS_REJECTED, time_to_live=NEVER_EXPIRES)
    await writer.send(rejection)
    await writer.aclose()

    # WHEN the timer runs (its margin covers the short lifetime)
    run = await archive_expiring(conn, CONTAINER, margin_hours=1)
    assert run.archived == {queues.APPOINTMENTS_POISON: 1, queues.SMS_FAILED: 1}
    assert run.left[queues.APPOINTMENTS_REJECTED] == 1  # never expires: not archived

    # AND the queue lifetime passes
    await asyncio.sleep(LIFETIME_SECONDS + 1.5)
    assert await peek(conn, queues.JOIN_URLS) == []  # Azurite does expire messages: the lifetime was real
    assert await peek(conn, queues.APPOINTMENTS_POISON) == []
    assert await peek(conn, queues.APPOINTMENTS_REJECTED) == [rejection]

    # THEN the archived ones are still there (the runbook's peek shows them), and replay puts each back
    shown = await peek_command(conn, "archive", archive=CONTAINER)
    assert len(shown) == 2 and any("evt-p" in line for line in shown)
    dry = await replay(conn, "archive", dry_run=True, archive=CONTAINER)
    assert dry.would_move == 2
    summary = await replay(conn, "archive", archive=CONTAINER)
    assert summary.moved == 2 and summary.unreadable == 0
    assert await peek(conn, queues.APPOINTMENTS) == [poison]
    assert await peek(conn, queues.SMS_OUTBOX) == [job]
    assert (await replay(conn, "archive", archive=CONTAINER)).moved == 0  # the archive is empty now


async def test_archiving_twice_keeps_one_copy_and_young_messages_stay(conn):
    await park(conn, queues.WEBHOOK_DEAD_LETTER, json.dumps({"outboxMessage": "{}"}), time_to_live=None)
    run = await archive_expiring(conn, CONTAINER, margin_hours=1)
    assert run.archived == {} and run.left[queues.WEBHOOK_DEAD_LETTER] == 1  # 7 days left: stays on its queue
    await park(conn, queues.WEBHOOK_OUTBOX_POISON, "outbox-poison", time_to_live=60)
    assert (await archive_expiring(conn, CONTAINER, margin_hours=1)).archived == {queues.WEBHOOK_OUTBOX_POISON: 1}
    assert (await archive_expiring(conn, CONTAINER, margin_hours=1)).archived == {}
    summary = await replay(conn, "all", progress=False, archive=CONTAINER)
    assert summary.by_source["archive"] == 1 and summary.by_source[queues.WEBHOOK_DEAD_LETTER] == 1
    assert await peek(conn, queues.WEBHOOK_OUTBOX) == ["outbox-poison", "{}"]


async def test_peek_shows_a_parked_queue_with_reasons(conn):
    await park(conn, queues.APPOINTMENTS_REJECTED, json.dumps({"reason": "invalid_event", "originalMessage": "{}"}),
               time_to_live=NEVER_EXPIRES)
    (line,) = await peek_command(conn, queues.APPOINTMENTS_REJECTED)
    assert "reason=invalid_event" in line and "expires=9999" in line
    assert await peek_command(conn, queues.SMS_OUTBOX_POISON) == []


def test_help_lists_every_parked_queue_and_the_archive(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for source in (*queues.PARKED_QUEUES, "archive", "all"):
        assert source in text, source
