"""Rejection records: written by the app itself, before the `.failed` webhook can exist, once per message.

The host writes output bindings after the function returns, in no order it documents; a `.failed` webhook on
the outbox whose rejection record then failed to be written would tell the scheduler about a record nobody
can find or replay. So the record is written here, awaited, before the processor hands back the webhook; a
record that would not fit a queue message keeps its original in a blob; and a retry of the same queue
message (the outbox write failed after the record was written) finds its record already written.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

from shared.pipeline.records import Rejection
from shared.storage.idempotency import ClaimKind, IdempotencyStore
from shared.storage.overflow import OverflowStore, fits_queue


class QueueSink(Protocol):
    """Sends a message to one queue."""

    async def send(self, text: str) -> None:
        """Enqueue text."""

    async def aclose(self) -> None:
        """Release connections."""


class RejectionRecorder:
    """Writes each message's rejection record exactly once, always small enough for the queue."""

    def __init__(self, sink: QueueSink, overflow: OverflowStore, idempotency: IdempotencyStore, *,
                 stale_claim_seconds: float) -> None:
        self._sink = sink
        self._overflow = overflow
        self._idempotency = idempotency
        self._stale_claim_seconds = stale_claim_seconds

    async def aclose(self) -> None:
        """Release the sink's connections."""
        await self._sink.aclose()

    async def record(self, rejection: Rejection, message_key: str) -> Rejection:
        """Write the record (unless this queue message's record was written already); the record as written.

        `message_key` names the queue message (its id), not the event: a duplicate or a replay of the event
        is another message, and gets its own record. Transient failures raise, so no webhook goes out.
        """
        key = f"rej:{message_key}"
        claim = await self._idempotency.begin(key, stale_after_seconds=self._stale_claim_seconds)
        if claim.kind is ClaimKind.COMPLETED:
            return await self.fit(rejection)
        try:
            fitted = await self.fit(rejection)
            await self._sink.send(fitted.to_json())
        except BaseException:
            await self._idempotency.release(key, claim)  # nothing written: the retry writes it
            raise
        await self._idempotency.complete(key, "written", claim)
        return fitted

    async def fit(self, rejection: Rejection) -> Rejection:
        """The rejection as a queue message can carry it: the original in a blob when it does not fit inline."""
        if fits_queue(rejection.to_json()):
            return rejection
        original = rejection.original_bytes if rejection.original_bytes is not None \
            else rejection.original_message.encode("utf-8")
        return replace(rejection, original_blob=await self._overflow.keep(original))
