"""The idempotency contract, run against the in-memory twin and the Azure Table store (on Azurite) alike."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.exceptions import KeyInProgressError, TransientError
from shared.storage.idempotency import ClaimKind, IdempotencyStore, TableIdempotencyStore
from shared.testing.idempotency import InMemoryIdempotencyStore

pytestmark = pytest.mark.contract


class Clock:
    """A clock the test moves; both stores take their time from it."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", "table"])
async def workers(request: pytest.FixtureRequest, clock: Clock, azurite_conn: Any) -> AsyncIterator[
        Callable[[], IdempotencyStore]]:
    """A factory of 'workers' sharing one store: the same object in memory, separate clients on one table."""
    made: list[TableIdempotencyStore] = []
    if request.param == "memory":
        shared = InMemoryIdempotencyStore(window_seconds=3600, clock=clock)
        yield lambda: shared
        return
    table = "idem" + uuid.uuid4().hex[:12]

    def make() -> IdempotencyStore:
        store = TableIdempotencyStore(azurite_conn, table, window_seconds=3600, clock=clock)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.aclose()


async def _begin(store: IdempotencyStore, key: str) -> Any:
    try:
        return await store.begin(key, stale_after_seconds=60)
    except KeyInProgressError as exc:
        return exc


async def test_first_begin_owns_and_a_fresh_duplicate_is_told_to_retry_later(workers, clock):
    store = workers()
    claim = await store.begin("evt-1", stale_after_seconds=60)
    assert claim.kind is ClaimKind.NEW and claim.owned
    clock.advance(10)
    with pytest.raises(KeyInProgressError) as caught:
        await workers().begin("evt-1", stale_after_seconds=60)
    assert isinstance(caught.value, TransientError) and caught.value.retry_after == pytest.approx(50)


async def test_completed_key_returns_the_stored_result(workers):
    first, second = workers(), workers()
    claim = await first.begin("evt-1", 60)
    await first.complete("evt-1", '{"joinUrl": "x"}', claim)
    again = await second.begin("evt-1", 60)
    assert again.kind is ClaimKind.COMPLETED and again.result == '{"joinUrl": "x"}' and not again.owned


async def test_stale_in_progress_is_taken_over_and_the_old_owner_cannot_release_it(workers, clock):
    first, second = workers(), workers()
    old = await first.begin("evt/stale#1", 60)
    clock.advance(61)
    new = await second.begin("evt/stale#1", 60)
    assert new.kind is ClaimKind.TAKEN_OVER and new.owned
    await first.release("evt/stale#1", old)  # the old owner gives up late: the new claim must survive
    with pytest.raises(KeyInProgressError):
        await workers().begin("evt/stale#1", 60)
    await second.complete("evt/stale#1", "{}", new)
    assert (await first.begin("evt/stale#1", 60)).kind is ClaimKind.COMPLETED


async def test_release_lets_a_retry_start_fresh(workers):
    first, second = workers(), workers()
    claim = await first.begin("evt-1", 60)
    await first.release("evt-1", claim)
    assert (await second.begin("evt-1", 60)).kind is ClaimKind.NEW


async def test_expired_records_count_as_absent(workers, clock):
    store = workers()
    claim = await store.begin("evt-1", 60)
    await store.complete("evt-1", "{}", claim)
    clock.advance(3601)
    assert (await workers().begin("evt-1", 60)).kind is ClaimKind.NEW


async def test_complete_after_losing_the_claim_still_records_the_result(workers, clock):
    first, second = workers(), workers()
    old = await first.begin("evt-1", 60)
    clock.advance(61)
    await second.begin("evt-1", 60)
    await first.complete("evt-1", '{"a": 1}', old)
    assert (await second.begin("evt-1", 60)).result == '{"a": 1}'


async def test_concurrent_begins_yield_exactly_one_owner(workers):
    stores = [workers(), workers()]
    await stores[0].begin("warm-up", 60)  # a table store creates its table here, so the race is about the record
    for round_ in range(3):
        key = f"evt-race-{round_}"
        outcomes = await asyncio.gather(*[_begin(store, key) for store in stores * 4])
        owners = [o for o in outcomes if not isinstance(o, Exception) and o.owned]
        assert len(owners) == 1 and owners[0].kind is ClaimKind.NEW
        assert all(isinstance(o, KeyInProgressError) for o in outcomes if o is not owners[0])


async def test_a_stale_claim_is_taken_over_by_exactly_one_worker(workers, clock):
    stores = [workers(), workers()]
    await stores[0].begin("evt-stale", 60)
    clock.advance(120)
    outcomes = await asyncio.gather(*[_begin(store, "evt-stale") for store in stores * 3])
    owners = [o for o in outcomes if not isinstance(o, Exception) and o.owned]
    assert len(owners) == 1 and owners[0].kind is ClaimKind.TAKEN_OVER
