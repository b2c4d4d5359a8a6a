"""The replay command against Azurite: messages go back where they came from, nothing is lost."""

import asyncio
import json
from datetime import timedelta

import pytest
from azure.storage.queue.aio import QueueServiceClient

from shared import queues
from shared.pipeline.records import Rejection
from shared.queues import WEBHOOK_DEAD_LETTER, WEBHOOK_OUTBOX, WEBHOOK_OUTBOX_POISON
from shared.replay import main, parse_age, replay
from shared.settings import StorageConnection
from shared.storage.queue_client import queue_client
from shared.webhooks.sender import DeadLetter
from tests.functional.azurite import running_azurite

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def azurite():
    with running_azurite() as connection_string:
        yield connection_string


@pytest.fixture
async def conn(azurite):
    async with QueueServiceClient.from_connection_string(azurite) as service:
        async for queue in service.list_queues():
            await service.delete_queue(queue.name)
    return StorageConnection(connection_string=azurite)


async def put(conn, queue, *texts):
    async with queue_client(conn, queue) as client:
        try:
            await client.create_queue()
        except Exception:
            pass
        for text in texts:
            await client.send_message(text)


async def drain(conn, queue):
    """Every message on the queue (peek, so nothing changes), decoded like the host does."""
    async with queue_client(conn, queue) as client:
        try:
            messages = await client.peek_messages(max_messages=32)
        except Exception:
            return []
        return sorted(m.content.decode() for m in messages)


def rejection(n, reason):
    original = json.dumps({"id": f"evt-{n}", "appointmentId": f"a-{n}", "organizer": "o@contoso.example",
                           "onlineMeetingId": "m"})
    return original, Rejection(reason, "detail", original, f"evt-{n}", f"a-{n}").to_json()


async def test_round_trip_from_every_source_loses_nothing(conn):
    originals = []
    records = []
    for n, reason in enumerate(["organizer_not_connected", "meeting_not_found", "organizer_not_connected"]):
        original, record = rejection(n, reason)
        originals.append(original)
        records.append(record)
    await put(conn, queues.APPOINTMENTS_REJECTED, *records)
    await put(conn, queues.APPOINTMENTS_POISON, "poison-1 ✓", "poison-2")
    outbox = '{"webhookId":"evt-9_ready","type":"appointment.joinurl.ready","body":"{}"}'
    await put(conn, WEBHOOK_DEAD_LETTER, DeadLetter("receiver_rejected", "410", outbox, status=410).to_json())
    await put(conn, WEBHOOK_OUTBOX_POISON, "outbox-poison")

    summary = await replay(conn, "all", progress=False)

    assert (summary.moved, summary.skipped) == (7, 0)
    assert await drain(conn, queues.APPOINTMENTS) == sorted([*originals, "poison-1 ✓", "poison-2"])
    assert await drain(conn, WEBHOOK_OUTBOX) == sorted([outbox, "outbox-poison"])
    for source in (queues.APPOINTMENTS_REJECTED, queues.APPOINTMENTS_POISON, WEBHOOK_DEAD_LETTER,
                   WEBHOOK_OUTBOX_POISON):
        assert await drain(conn, source) == []


async def test_reason_filter_moves_only_matching_records_and_leaves_the_rest_visible(conn):
    pairs = [rejection(n, reason) for n, reason in enumerate(["organizer_not_connected", "forbidden"])]
    await put(conn, queues.APPOINTMENTS_REJECTED, *(record for _, record in pairs))
    summary = await replay(conn, queues.APPOINTMENTS_REJECTED, reason="organizer_not_connected", progress=False)
    assert (summary.moved, summary.skipped) == (1, 1)
    assert await drain(conn, queues.APPOINTMENTS) == [pairs[0][0]]
    assert await drain(conn, queues.APPOINTMENTS_REJECTED) == [pairs[1][1]]  # visible again at once


async def test_dry_run_moves_nothing(conn, capsys):
    await put(conn, queues.APPOINTMENTS_POISON, "p1", "p2")
    conn_string = conn.connection_string
    # The command runs its own event loop, so it gets a thread of its own here.
    args = ["--from", "appointments-poison", "--dry-run", "--connection-string", conn_string]
    assert await asyncio.to_thread(main, args) == 0
    out = capsys.readouterr()
    assert out.out.strip().startswith("moved=0 skipped=0 would_move=2")
    assert "appointments-poison" in out.err  # the progress bar
    assert await drain(conn, queues.APPOINTMENTS_POISON) == ["p1", "p2"]
    assert await drain(conn, queues.APPOINTMENTS) == []


async def test_older_than_skips_recent_messages(conn):
    await put(conn, WEBHOOK_OUTBOX_POISON, "recent")
    summary = await replay(conn, WEBHOOK_OUTBOX_POISON, older_than=timedelta(minutes=10), progress=False)
    assert (summary.moved, summary.skipped) == (0, 1)
    assert await drain(conn, WEBHOOK_OUTBOX_POISON) == ["recent"]


async def test_unreadable_records_stay_put_and_missing_queues_are_fine(conn):
    await put(conn, WEBHOOK_DEAD_LETTER, "not a record")
    summary = await replay(conn, "all", progress=False)
    assert summary.moved == 0 and summary.unreadable == 1
    assert await drain(conn, WEBHOOK_DEAD_LETTER) == ["not a record"]


def test_durations():
    assert parse_age("10m") == timedelta(minutes=10) and parse_age("1.5h") == timedelta(minutes=90)
    with pytest.raises(ValueError):
        parse_age("ten minutes")


async def test_originals_kept_as_base64_or_in_a_blob_go_back_byte_for_byte(conn):
    # GIVEN a rejection of bytes that are not UTF-8 (kept as base64), and a dead letter whose outbox message
    # was too big to copy (kept in the overflow container)
    from shared.storage.overflow import BlobOverflowStore

    not_text = b'{"id": "evt-x", "appointmentId": "a-\xff"}'
    await put(conn, queues.APPOINTMENTS_REJECTED,
              Rejection("invalid_encoding", "not UTF-8", "", original_bytes=not_text).to_json())
    # Fits a queue message (30 KB), but not once escaped again inside a record (60 KB).
    big_outbox = json.dumps({"webhookId": "w_1", "type": "t", "body": '"' * 15_000})
    store = BlobOverflowStore(conn, "message-overflow")
    try:
        kept = await store.keep(big_outbox.encode())
    finally:
        await store.aclose()
    await put(conn, WEBHOOK_DEAD_LETTER, DeadLetter("receiver_rejected", "400", "", outbox_blob=kept).to_json())
    # WHEN both are replayed
    summary = await replay(conn, "all", progress=False)
    # THEN each original is back on its queue exactly as it was
    assert summary.moved == 2 and summary.unreadable == 0
    async with queue_client(conn, queues.APPOINTMENTS) as client:
        (message,) = await client.peek_messages(max_messages=32)
        assert message.content == not_text
    assert await drain(conn, WEBHOOK_OUTBOX) == [big_outbox]
