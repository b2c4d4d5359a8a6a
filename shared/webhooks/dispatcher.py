"""deliver_webhook's logic: deliver each webhook-id at most once, back off on transient failures."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Protocol

from shared.common.strict_json import decode_utf8
from shared.exceptions import KeyInProgressError, TransientError
from shared.settings import setting_default
from shared.storage.idempotency import Claim, ClaimKind, IdempotencyStore
from shared.storage.overflow import OverflowStore, fits_queue
from shared.storage.requeue import Requeuer, backoff, requeue_delay, unwrap_requeued, wrap_requeued
from shared.webhooks.outbound import WebhookEvent
from shared.webhooks.sender import DeadLetter, DeliveryResult

log = logging.getLogger(__name__)
_MAX_BACKOFF_SECONDS = 3600
# How long a delivered webhook's record is retried while the store is unreachable: half the host's
# 10-minute functionTimeout. Stopping at the claim's stale time instead sent a webhook twice in the heavy chaos
# run: the 20 s storage pause outlasted 0.75 x 30 s, the record was given up, and a copy delivered it again
# once storage was back (docs/reliability.md, section 2).
RECORD_PATIENCE_SECONDS = 300.0
# The longest wait between record attempts: storage coming back is noticed within this, before a copy can
# take the claim over.
_RECORD_POLL_SECONDS = 2.0


class Sender(Protocol):
    """What the dispatcher needs from WebhookSender."""

    async def deliver(self, outbox_message_text: str) -> DeliveryResult:
        """POST one outbox message; return the result or raise a transient error."""

    async def aclose(self) -> None:
        """Release connections."""


def backoff_seconds(attempt: int, base: float, retry_after: float | None) -> int:
    """Delay before retry number `attempt` (1-based): exponential from base, never below Retry-After."""
    return requeue_delay(max(min(backoff(base, attempt - 1), _MAX_BACKOFF_SECONDS), retry_after or 0.0))


class WebhookDispatcher:
    """One outbox message in: delivered, dead-lettered, skipped as a duplicate, or re-enqueued for later."""

    def __init__(self, sender: Sender, idempotency: IdempotencyStore, requeuer: Requeuer, overflow: OverflowStore, *,
                 max_attempts: int, base_delay_seconds: float,
                 stale_claim_seconds: float | None = None,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._sender = sender
        self._idempotency = idempotency
        self._requeuer = requeuer
        self._overflow = overflow
        self._max_attempts = max_attempts
        self._base_delay = base_delay_seconds
        # A delivery that crashed mid-POST holds its claim this long before another worker takes over.
        self._stale_claim_seconds = (float(setting_default("WEBHOOK_STALE_CLAIM_SECONDS"))
                                     if stale_claim_seconds is None else stale_claim_seconds)
        self._sleep = sleep
        self._clock = clock

    async def aclose(self) -> None:
        """Release the sender's and requeuer's connections."""
        await self._sender.aclose()
        await self._requeuer.aclose()

    async def dispatch(self, body: bytes | str) -> DeadLetter | None:
        """Deliver; return a dead-letter record for a permanent failure; raise when retries are used up."""
        if isinstance(body, bytes):
            try:
                text = decode_utf8(body)
            except UnicodeDecodeError:
                # Not ours to read, so not ours to send: kept whole, beside a record that says why.
                record = DeadLetter(reason="invalid_outbox_message", detail="outbox message is not UTF-8 text",
                                    outbox_message="", outbox_blob=await self._overflow.keep(body))
                log.warning("webhook ?: outcome=dead_letter reason=invalid_outbox_message",
                            extra={"outcome": "dead_letter", "reason": "invalid_outbox_message"})
                return record
        else:
            text = body
        dead_letter = await self._dispatch(text)
        if dead_letter is not None and not fits_queue(dead_letter.to_json()):
            kept = await self._overflow.keep(dead_letter.outbox_message.encode("utf-8"))
            dead_letter = replace(dead_letter, outbox_blob=kept)
        return dead_letter

    async def _dispatch(self, text: str) -> DeadLetter | None:
        delivery = unwrap_requeued(text)
        try:
            webhook_id: str | None = WebhookEvent.from_message(delivery.text).webhook_id
        except ValueError:
            webhook_id = None  # the sender dead-letters unreadable messages with the reason
        key = f"hook:{webhook_id}" if webhook_id else None
        claim = None
        claimed_at = self._clock()
        if key is not None:
            try:
                claim = await self._idempotency.begin(key, stale_after_seconds=self._stale_claim_seconds)
            except KeyInProgressError as exc:
                # A copy of this webhook is being delivered right now. Look again when its claim would go
                # stale, not later: by then the owner has recorded it (see _record_delivery), or died.
                await self._retry_later(delivery.text, delivery.attempt, exc, backoff=False)
                return None
            if claim.kind is ClaimKind.COMPLETED:
                log.info("webhook %s already delivered; duplicate skipped", webhook_id,
                         extra={"webhook_id": webhook_id, "outcome": "duplicate"})
                return None
        try:
            result = await self._sender.deliver(delivery.text)
        except TransientError as exc:
            if key is not None and claim is not None:
                await self._idempotency.release(key, claim)
            await self._retry_later(delivery.text, delivery.attempt, exc)
            return None
        if key is not None and claim is not None:
            if result.delivered:
                await self._record_delivery(key, claim, webhook_id, claimed_at)
            else:
                # Released, not completed: a replay of the dead letter must be able to deliver it.
                await self._idempotency.release(key, claim)
        return result.dead_letter

    async def _record_delivery(self, key: str, claim: Claim, webhook_id: str | None, claimed_at: float) -> None:
        """Record a delivered webhook before anyone could take its claim over, riding out a storage pause.

        Raising would have the host retry this message and send it again once the claim went stale, so
        the record is retried here. While the store is unreachable nobody can take the claim over (that
        takes the store too), so the retries go on past the stale time, every couple of seconds, and land
        as soon as it is back; only a store that stays down RECORD_PATIENCE_SECONDS is given up (logged),
        and a copy may then be sent again with the same webhook-id, which receivers that dedupe absorb.
        """
        deadline = claimed_at + RECORD_PATIENCE_SECONDS
        pause = 0.5
        while True:
            try:
                await self._idempotency.complete(key, "delivered", claim)
                return
            except TransientError as exc:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    log.error("webhook %s delivered but not recorded after %.0fs (%s)", webhook_id,
                              RECORD_PATIENCE_SECONDS, exc.reason,
                              extra={"webhook_id": webhook_id, "reason": exc.reason,
                                     "outcome": "delivered_unrecorded"})
                    return
                log.warning("webhook %s delivered; recording it failed (%s), retrying", webhook_id, exc.reason,
                            extra={"webhook_id": webhook_id, "reason": exc.reason, "outcome": "delivered"})
                await self._sleep(min(pause, remaining))
                pause = min(pause * 2, _RECORD_POLL_SECONDS)

    async def _retry_later(self, original: str, attempt: int, exc: TransientError, *, backoff: bool = True) -> None:
        if attempt + 1 >= self._max_attempts:
            # Out of backed-off attempts: raise, so the host's retries and then its poison queue take over.
            raise exc
        delay = (backoff_seconds(attempt + 1, self._base_delay, exc.retry_after) if backoff
                 else requeue_delay(exc.retry_after))
        await self._requeuer.requeue(wrap_requeued(original, attempt + 1, exc.reason), delay)
        log.info("webhook retry %d in %ds (%s)", attempt + 1, delay, exc.reason,
                 extra={"outcome": "requeued", "reason": exc.reason, "retry_after": delay})
