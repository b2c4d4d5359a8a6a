"""deliver_webhook's dispatcher with fakes: a delivered webhook is never sent again because recording it failed."""

import pytest

from shared.exceptions import TableStoreUnavailableError
from shared.testing.idempotency import InMemoryIdempotencyStore
from shared.webhooks.dispatcher import WebhookDispatcher
from shared.webhooks.outbound import webhook_event
from shared.webhooks.sender import DeliveryResult

pytestmark = pytest.mark.unit


class RecordingSender:
    """Delivers every webhook at once and remembers what it sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def deliver(self, text: str) -> DeliveryResult:
        self.sent.append(text)
        return DeliveryResult(delivered=True, status=200)

    async def aclose(self) -> None:
        pass


class NoRequeue:
    async def requeue(self, text: str, delay_seconds: int) -> None:
        raise AssertionError("nothing should be re-enqueued")

    async def aclose(self) -> None:
        pass


class StoreThatCannotRecord(InMemoryIdempotencyStore):
    """Claims work; recording the completion fails the way an unreachable table does."""

    async def complete(self, key, result_json, claim):
        raise TableStoreUnavailableError("table PUT failed: TimeoutError")


def outbox_message() -> str:
    return webhook_event("ready", {"eventId": "evt-1", "joinWebUrl": "https://teams.example/x"}, "evt-1").to_message()


async def test_a_delivered_webhook_whose_record_fails_is_not_retried(caplog):
    # GIVEN a store that cannot record completions
    sender = RecordingSender()
    dispatcher = WebhookDispatcher(sender, StoreThatCannotRecord(), NoRequeue(), max_attempts=3,
                                   base_delay_seconds=1)
    # WHEN a webhook is delivered
    dead_letter = await dispatcher.dispatch(outbox_message())
    # THEN the invocation succeeds (no host retry that would send it again), and the miss is logged
    assert dead_letter is None and len(sender.sent) == 1
    assert "delivered but not recorded" in caplog.text


async def test_a_copy_of_a_delivered_webhook_is_skipped():
    sender = RecordingSender()
    dispatcher = WebhookDispatcher(sender, InMemoryIdempotencyStore(), NoRequeue(), max_attempts=3,
                                   base_delay_seconds=1)
    await dispatcher.dispatch(outbox_message())
    await dispatcher.dispatch(outbox_message())
    assert len(sender.sent) == 1
