"""deliver_webhook's dispatcher with fakes: a delivered webhook is never sent again because recording it failed."""

import json

import pytest

from shared.exceptions import TableStoreUnavailableError
from shared.storage.overflow import KeptMessage, fits_queue
from shared.testing.idempotency import InMemoryIdempotencyStore
from shared.testing.overflow import InMemoryOverflowStore
from shared.webhooks.dispatcher import RECORD_PATIENCE_SECONDS, WebhookDispatcher
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
    """Claims work; recording the completion fails the way an unreachable table does (`failures` times)."""

    def __init__(self, failures: float = float("inf")) -> None:
        super().__init__()
        self.failures = failures

    async def complete(self, key, result_json, claim):
        if self.failures > 0:
            self.failures -= 1
            raise TableStoreUnavailableError("table PUT failed: TimeoutError")
        await super().complete(key, result_json, claim)


class FakeTime:
    """A monotonic clock that sleeping advances."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def outbox_message() -> str:
    return webhook_event("ready", {"eventId": "evt-1", "joinWebUrl": "https://teams.example/x"}, "evt-1").to_message()


async def test_a_delivered_webhook_whose_record_fails_is_not_retried(caplog):
    # GIVEN a store that cannot record completions
    sender, clock = RecordingSender(), FakeTime()
    dispatcher = WebhookDispatcher(sender, StoreThatCannotRecord(), NoRequeue(), InMemoryOverflowStore(),
                                   max_attempts=3,
                                   base_delay_seconds=1, stale_claim_seconds=120, sleep=clock.sleep, clock=clock)
    # WHEN a webhook is delivered
    dead_letter = await dispatcher.dispatch(outbox_message())
    # THEN the invocation succeeds (no host retry that would send it again), and the miss is logged
    assert dead_letter is None and len(sender.sent) == 1
    assert "delivered but not recorded" in caplog.text
    # AND recording was retried past the claim's stale time (an unreachable store lets nobody take it over),
    # every couple of seconds, for the patience and no longer
    assert 120 < clock.now <= RECORD_PATIENCE_SECONDS and max(clock.slept) <= 2.0


async def test_a_copy_of_a_delivered_webhook_is_skipped():
    sender = RecordingSender()
    dispatcher = WebhookDispatcher(sender, InMemoryIdempotencyStore(), NoRequeue(), InMemoryOverflowStore(),
                                   max_attempts=3,
                                   base_delay_seconds=1)
    await dispatcher.dispatch(outbox_message())
    await dispatcher.dispatch(outbox_message())
    assert len(sender.sent) == 1


async def test_a_storage_pause_while_recording_is_ridden_out_so_no_copy_sends_it_again():
    # GIVEN a store that cannot record for a few tries (storage paused), then can
    sender, clock = RecordingSender(), FakeTime()
    store = StoreThatCannotRecord(failures=4)
    dispatcher = WebhookDispatcher(sender, store, NoRequeue(), InMemoryOverflowStore(),
                                   max_attempts=3, base_delay_seconds=1,
                                   stale_claim_seconds=120, sleep=clock.sleep, clock=clock)
    # WHEN a webhook is delivered during the pause
    await dispatcher.dispatch(outbox_message())
    # THEN its delivery is recorded once storage is back, before its claim could go stale
    assert store.failures == 0 and clock.now < 120


async def test_a_storage_pause_longer_than_the_stale_time_still_ends_in_the_record():
    # GIVEN storage that stays down for 45 s while the claim goes stale after 30 s (the heavy chaos run)
    sender, clock = RecordingSender(), FakeTime()
    store = StoreThatCannotRecord(failures=25)
    dispatcher = WebhookDispatcher(sender, store, NoRequeue(), InMemoryOverflowStore(), max_attempts=3,
                                   base_delay_seconds=1, stale_claim_seconds=30, sleep=clock.sleep, clock=clock)
    # WHEN a webhook is delivered as the pause begins
    await dispatcher.dispatch(outbox_message())
    # THEN the record lands once storage is back, past the stale time, and a later copy is skipped
    assert store.failures == 0 and 30 < clock.now < 60
    clock.now += 300
    await dispatcher.dispatch(outbox_message())
    assert len(sender.sent) == 1
    # AND a copy of the same webhook arriving after the claim's stale time is skipped, not sent again
    clock.now += 300
    await dispatcher.dispatch(outbox_message())
    assert len(sender.sent) == 1


class RecordingRequeuer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, int]] = []

    async def requeue(self, text: str, delay_seconds: int) -> None:
        self.sent.append((text, delay_seconds))

    async def aclose(self) -> None:
        pass


async def test_a_copy_that_meets_a_delivery_in_progress_looks_again_before_the_claim_could_go_stale():
    # GIVEN a copy is being delivered (claimed 10 s ago, stale after 120 s)
    store, requeuer = InMemoryIdempotencyStore(), RecordingRequeuer()
    await store.begin("hook:evt-1_ready", stale_after_seconds=120)
    dispatcher = WebhookDispatcher(RecordingSender(), store, requeuer, InMemoryOverflowStore(),
                                   max_attempts=5, base_delay_seconds=200,
                                   stale_claim_seconds=120)
    # WHEN the second copy arrives
    await dispatcher.dispatch(outbox_message())
    # THEN it comes back when the claim would go stale, not after an exponential back-off that outlives it
    ((_, delay),) = requeuer.sent
    assert 110 <= delay <= 121


class DeadLetteringSender(RecordingSender):
    """Every receiver answers 400: a dead letter carrying the outbox message."""

    async def deliver(self, text: str) -> DeliveryResult:
        from shared.webhooks.sender import DeadLetter

        return DeliveryResult(False, status=400, dead_letter=DeadLetter("receiver_rejected", "answered 400", text))


async def test_a_dead_letter_too_big_for_the_queue_keeps_its_outbox_message_in_a_blob():
    # GIVEN an outbox message whose JSON-escaped copy would outgrow a queue message (emoji: 12 chars escaped)
    overflow = InMemoryOverflowStore()
    dispatcher = WebhookDispatcher(DeadLetteringSender(), InMemoryIdempotencyStore(), NoRequeue(), overflow,
                                   max_attempts=3, base_delay_seconds=1)
    big = webhook_event("failed", {"appointmentId": "a", "detail": "\U0001F600" * 4200}, "evt-big").to_message()
    # WHEN it is dead-lettered
    record = await dispatcher.dispatch(big.encode())
    # THEN the record fits a queue message and points at the whole message, kept byte for byte
    doc = json.loads(record.to_json())
    assert fits_queue(record.to_json()) and doc["outboxMessage"] is None
    kept = KeptMessage.from_dict(doc["outboxMessageBlob"])
    assert await overflow.read(kept) == big.encode()


async def test_an_outbox_message_that_is_not_utf8_is_dead_lettered_with_its_bytes_kept():
    overflow = InMemoryOverflowStore()
    dispatcher = WebhookDispatcher(RecordingSender(), InMemoryIdempotencyStore(), NoRequeue(), overflow,
                                   max_attempts=3, base_delay_seconds=1)
    record = await dispatcher.dispatch(b"\xff\xfe not text")
    assert record.reason == "invalid_outbox_message"
    assert await overflow.read(record.outbox_blob) == b"\xff\xfe not text"
