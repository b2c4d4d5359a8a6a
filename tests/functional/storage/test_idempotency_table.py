"""The Table idempotency store against Azurite: ETag conditions make ownership exclusive."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from shared.exceptions import KeyInProgressError
from shared.settings import StorageConnection
from shared.storage.idempotency import ClaimKind, TableIdempotencyStore
from shared.storage.table_rest import TableRestClient
from tests.functional.azurite import running_azurite

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def conn():
    with running_azurite() as connection_string:
        yield StorageConnection(connection_string=connection_string)


class Clock:
    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@pytest.fixture
async def stores(conn):
    """Two stores (two 'workers', separate clients) on one table, sharing a clock."""
    clock = Clock()
    table = "idem" + uuid.uuid4().hex[:12]
    first = TableIdempotencyStore(conn, table, window_seconds=3600, clock=clock)
    second = TableIdempotencyStore(conn, table, window_seconds=3600, clock=clock)
    yield first, second, clock
    await first.aclose()
    await second.aclose()


async def _begin(store, key):
    try:
        return await store.begin(key, stale_after_seconds=60)
    except KeyInProgressError as exc:
        return exc


async def test_first_begin_creates_the_missing_table(stores):
    first, _, _ = stores
    assert (await first.begin("evt-fresh", 60)).kind is ClaimKind.NEW


class AnswerLostOnInsert(TableRestClient):
    """The first insert reaches the table but its answer is lost, so the client's retry meets a 409."""

    lost = False

    async def insert(self, entity):
        from azure.core.exceptions import ResourceExistsError

        await super().insert(entity)
        if not self.lost:
            self.lost = True
            raise ResourceExistsError(message="the retried insert found the entity the first one wrote")
        return ""


async def test_a_claim_whose_answer_was_lost_is_still_ours(conn):
    # GIVEN an insert that lands while its answer is lost (the client then retries into a 409)
    table = "idem" + uuid.uuid4().hex[:12]
    warm = TableIdempotencyStore(conn, table, window_seconds=3600)
    await warm.begin("warm-up", 60)
    await warm.aclose()
    store = TableIdempotencyStore(conn, table, window_seconds=3600, client=AnswerLostOnInsert(conn, table))
    other = TableIdempotencyStore(conn, table, window_seconds=3600)
    try:
        # WHEN the worker claims the event
        claim = await store.begin("evt-lost-answer", stale_after_seconds=60)
        # THEN it owns the claim (not "another worker is on it"), and its ETag completes the record
        assert claim.kind is ClaimKind.NEW and claim.owned
        await store.complete("evt-lost-answer", '{"joinWebUrl": "x"}', claim)
        duplicate = await other.begin("evt-lost-answer", stale_after_seconds=60)
        assert duplicate.kind is ClaimKind.COMPLETED and duplicate.result == '{"joinWebUrl": "x"}'
    finally:
        await store.aclose()
        await other.aclose()
