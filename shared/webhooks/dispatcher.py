"""deliver_webhook's logic: deliver each webhook-id at most once, back off on transient failures."""

from __future__ import annotations

import logging
from typing import Protocol

from shared.exceptions import KeyInProgressError, TransientError
from shared.settings import setting_default
from shared.storage.idempotency import ClaimKind, IdempotencyStore
from shared.storage.requeue import Requeuer, unwrap_requeued, wrap_requeued
from shared.webhooks.outbound import WebhookEvent
from shared.webhooks.sender import DeadLetter, DeliveryResult

log = logging.getLogger(__name__)
_MAX_BACKOFF_SECONDS = 3600


class Sender(Protocol):
    """What the dispatcher needs from WebhookSender."""

    async def deliver(self, outbox_message_text: str) -> DeliveryResult:
        """POST one outbox message; return the result or raise a transient error."""

    async def aclose(self) -> None:
        """Release connections."""


def backoff_seconds(attempt: int, base: float, retry_after: float | None) -> int:
    """Delay before retry number `attempt` (1-based): exponential from base, never below Retry-After."""
    delay = min(base * 3 ** (attempt - 1), _MAX_BACKOFF_SECONDS)
    return int(max(delay, retry_after or 0.0, 1.0) + 0.999)


class WebhookDispatcher:
    """One outbox message in: delivered, dead-lettered, skipped as a duplicate, or re-enqueued for later."""

    def __init__(self, sender: Sender, idempotency: IdempotencyStore, requeuer: Requeuer, *,
                 max_attempts: int, base_delay_seconds: float,
                 stale_claim_seconds: float | None = None) -> None:
        self._sender = sender
        self._idempotency = idempotency
        self._requeuer = requeuer
        self._max_attempts = max_attempts
        self._base_delay = base_delay_seconds
        # A delivery that crashed mid-POST holds its claim this long before another worker takes over.
        self._stale_claim_seconds = (float(setting_default("WEBHOOK_STALE_CLAIM_SECONDS"))
                                     if stale_claim_seconds is None else stale_claim_seconds)

    async def aclose(self) -> None:
        """Release the sender's and requeuer's connections."""
        await self._sender.aclose()
        await self._requeuer.aclose()

    async def dispatch(self, text: str) -> DeadLetter | None:
        """Deliver; return a dead-letter record for a permanent failure; raise when retries are used up."""
        delivery = unwrap_requeued(text)
        try:
            webhook_id: str | None = WebhookEvent.from_message(delivery.text).webhook_id
        except ValueError:
            webhook_id = None  # the sender dead-letters unreadable messages with the reason
        key = f"hook:{webhook_id}" if webhook_id else None
        claim = None
        if key is not None:
            try:
                claim = await self._idempotency.begin(key, stale_after_seconds=self._stale_claim_seconds)
            except KeyInProgressError as exc:
                # A copy of this webhook is being delivered right now; look again once it is done.
                await self._retry_later(delivery.text, delivery.attempt, exc)
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
                try:
                    await self._idempotency.complete(key, "delivered", claim)
                except TransientError as exc:
                    # Delivered already: raising would have the host retry this message, which would
                    # send it again once the claim went stale. Left in progress, the record still
                    # stops copies for the stale window.
                    log.warning("webhook %s delivered but not recorded (%s)", webhook_id, exc.reason,
                                extra={"webhook_id": webhook_id, "reason": exc.reason, "outcome": "delivered"})
            else:
                # Released, not completed: a replay of the dead letter must be able to deliver it.
                await self._idempotency.release(key, claim)
        return result.dead_letter

    async def _retry_later(self, original: str, attempt: int, exc: TransientError) -> None:
        if attempt + 1 >= self._max_attempts:
            # Out of backed-off attempts: raise, so the host's retries and then its poison queue take over.
            raise exc
        delay = backoff_seconds(attempt + 1, self._base_delay, exc.retry_after)
        await self._requeuer.requeue(wrap_requeued(original, attempt + 1, exc.reason), delay)
        log.info("webhook retry %d in %ds (%s)", attempt + 1, delay, exc.reason,
                 extra={"outcome": "requeued", "reason": exc.reason, "retry_after": delay})
