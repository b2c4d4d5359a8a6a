"""Idempotency semantics (in-memory store): one owner, duplicates answered from the record, stale takeover."""

from datetime import UTC, datetime, timedelta

import pytest

from shared.exceptions import TransientError
from shared.storage.idempotency import ClaimKind, InMemoryIdempotencyStore, KeyInProgressError, partition_key, row_key

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(clock):
    return InMemoryIdempotencyStore(window_seconds=3600, clock=clock)


async def test_first_begin_owns_and_a_fresh_duplicate_is_told_to_retry_later(store, clock):
    claim = await store.begin("evt-1", stale_after_seconds=60)
    assert claim.kind is ClaimKind.NEW and claim.owned
    clock.advance(10)
    with pytest.raises(KeyInProgressError) as caught:
        await store.begin("evt-1", stale_after_seconds=60)
    assert isinstance(caught.value, TransientError) and caught.value.retry_after == pytest.approx(50)


async def test_completed_key_returns_the_stored_result(store):
    claim = await store.begin("evt-1", 60)
    await store.complete("evt-1", '{"joinUrl": "x"}', claim)
    again = await store.begin("evt-1", 60)
    assert again.kind is ClaimKind.COMPLETED and again.result == '{"joinUrl": "x"}' and not again.owned


async def test_stale_in_progress_is_taken_over_and_the_old_owner_cannot_release_it(store, clock):
    old = await store.begin("evt-1", 60)
    clock.advance(61)
    new = await store.begin("evt-1", 60)
    assert new.kind is ClaimKind.TAKEN_OVER and new.owned
    await store.release("evt-1", old)  # the old owner gives up late: the new claim must survive
    assert store.record("evt-1")["etag"] == new.etag


async def test_release_lets_a_retry_start_fresh(store):
    claim = await store.begin("evt-1", 60)
    await store.release("evt-1", claim)
    assert (await store.begin("evt-1", 60)).kind is ClaimKind.NEW


async def test_expired_records_count_as_absent(store, clock):
    claim = await store.begin("evt-1", 60)
    await store.complete("evt-1", "{}", claim)
    clock.advance(3601)
    assert (await store.begin("evt-1", 60)).kind is ClaimKind.NEW


async def test_complete_after_losing_the_claim_still_records_the_result(store, clock):
    old = await store.begin("evt-1", 60)
    clock.advance(61)
    await store.begin("evt-1", 60)
    await store.complete("evt-1", '{"a": 1}', old)
    assert (await store.begin("evt-1", 60)).result == '{"a": 1}'


def test_row_keys_are_table_safe_and_distinct():
    assert row_key("evt-1") == "k_evt-1"
    unsafe = row_key("a/b#c?d\\e\x01")
    assert unsafe.startswith("h_") and not any(ch in unsafe for ch in "/\\#?\x01")
    assert row_key("x" * 300).startswith("h_") and row_key("a/b") != row_key("a\\b")


def test_partition_keys_are_stable_and_spread_over_256_partitions():
    # GIVEN many event keys
    keys = [f"evt:bench-{i}" for i in range(5000)]
    partitions = {partition_key(key) for key in keys}
    # THEN each key always lands in the same partition, and the records spread over all 256
    assert partition_key("evt:a") == partition_key("evt:a")
    assert len(partitions) == 256 and all(p.startswith("evt-") and len(p) == 6 for p in partitions)
