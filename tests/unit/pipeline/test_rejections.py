"""Rejection records: written before the .failed webhook can exist, once per queue message, always fitting."""

from __future__ import annotations

import json

import pytest

from shared.exceptions import TableStoreUnavailableError
from shared.pipeline.records import Rejection
from shared.pipeline.rejections import RejectionRecorder
from shared.storage.overflow import KeptMessage, fits_queue
from shared.testing.idempotency import InMemoryIdempotencyStore
from shared.testing.overflow import InMemoryOverflowStore
from shared.testing.requeue import InMemoryQueueWriter

pytestmark = pytest.mark.unit


def recorder(sink=None, overflow=None):
    return RejectionRecorder(sink or InMemoryQueueWriter(), overflow or InMemoryOverflowStore(),
                             InMemoryIdempotencyStore(), stale_claim_seconds=60)


async def test_a_retry_of_the_same_message_does_not_write_a_second_record():
    sink = InMemoryQueueWriter()
    rejections = recorder(sink)
    rejection = Rejection("invalid_event", "'organizer' is required", '{"id": "e"}', event_id="e")
    await rejections.record(rejection, "msg-1")
    await rejections.record(rejection, "msg-1")  # the host retries the message: the outbox write had failed
    await rejections.record(rejection, "msg-2")  # a duplicate of the event is another message, another record
    assert len(sink.sent) == 2


async def test_an_original_that_would_not_fit_is_kept_in_a_blob():
    # GIVEN an original whose JSON-escaped copy outgrows a queue message (4,200 emoji: the case that was seen)
    sink, overflow = InMemoryQueueWriter(), InMemoryOverflowStore()
    original = json.dumps({"id": "e", "appointmentId": "a", "note": "\U0001F600" * 4200}, ensure_ascii=False)
    written = await recorder(sink, overflow).record(Rejection("invalid_event", "x", original, event_id="e"), "m")
    # THEN the record written fits, points at the blob, and the blob holds the original byte for byte
    (text,) = sink.sent
    doc = json.loads(text)
    assert fits_queue(text) and doc["originalMessage"] is None and written.original_blob is not None
    assert await overflow.read(KeptMessage.from_dict(doc["originalMessageBlob"])) == original.encode()


class FailingSink(InMemoryQueueWriter):
    async def send(self, text: str, *, delay_seconds: int = 0) -> None:
        raise TableStoreUnavailableError("queue PUT failed")


async def test_a_record_that_cannot_be_written_raises_so_no_webhook_goes_out():
    rejections = recorder(FailingSink())
    with pytest.raises(TableStoreUnavailableError):
        await rejections.record(Rejection("invalid_event", "x", "{}"), "m")
    # AND the retry is not blocked: it writes the record once the queue answers
    rejections._sink = InMemoryQueueWriter()
    await rejections.record(Rejection("invalid_event", "x", "{}"), "m")
    assert len(rejections._sink.sent) == 1
