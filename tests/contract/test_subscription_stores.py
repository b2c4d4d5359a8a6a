"""The subscription store contract, run against the in-memory twin and the Azure Table store (on Azurite) alike."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from shared.exceptions import RecordConflictError
from shared.storage.subscriptions import SubscriptionRecord, SubscriptionStore, TableSubscriptionStore
from shared.testing.subscriptions import InMemorySubscriptionStore

pytestmark = pytest.mark.contract
KEY = "11111111-2222-3333-4444-555555555555/aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"


@pytest.fixture(params=["memory", "table"])
async def store(request: pytest.FixtureRequest, azurite_conn: Any) -> AsyncIterator[SubscriptionStore]:
    if request.param == "memory":
        yield InMemorySubscriptionStore()
        return
    table = TableSubscriptionStore(azurite_conn, "sub" + uuid.uuid4().hex[:12])
    yield table
    await table.aclose()


async def test_an_unknown_organizer_or_subscription_is_none_even_before_the_table_exists(store):
    assert await store.get(KEY) is None
    assert await store.by_subscription("sub-1") is None
    await store.delete(KEY)  # nothing to delete is not an error


async def test_a_row_is_found_by_organizer_and_by_its_subscription_with_its_client_state(store):
    stored = await store.put(SubscriptionRecord(KEY, "user@contoso.example", subscription_id="sub-1",
                                                client_state="s3cret", expires_at="2026-12-08T00:00:00Z",
                                                state="active"))
    assert stored.etag
    assert (await store.get(KEY)).client_state == "s3cret"
    found = await store.by_subscription("sub-1")
    assert found is not None and found.organizer == "user@contoso.example" and found.state == "active"


async def test_a_recreated_subscription_replaces_the_old_one_which_then_finds_nothing(store):
    first = await store.put(SubscriptionRecord(KEY, "u", subscription_id="sub-1", client_state="a"))
    await store.put(replace(first, subscription_id="sub-2", client_state="b", delta_link="https://x/delta"))
    assert await store.by_subscription("sub-1") is None
    assert (await store.by_subscription("sub-2")).delta_link == "https://x/delta"


async def test_writes_are_conditioned_on_the_etag(store):
    first = await store.put(SubscriptionRecord(KEY, "u", subscription_id="sub-1", client_state="a"))
    with pytest.raises(RecordConflictError):
        await store.put(SubscriptionRecord(KEY, "u"))  # an insert over an existing row
    await store.put(replace(first, state="active"))
    with pytest.raises(RecordConflictError):
        await store.put(replace(first, state="stale"))  # read before the write above


async def test_delete_removes_both_rows(store):
    await store.put(SubscriptionRecord(KEY, "u", subscription_id="sub-1", client_state="a"))
    await store.delete(KEY)
    assert await store.get(KEY) is None and await store.by_subscription("sub-1") is None
    await store.put(SubscriptionRecord(KEY, "u", subscription_id="sub-3", client_state="c"))
    assert (await store.by_subscription("sub-3")).client_state == "c"


async def test_every_organizer_row_is_listed_and_nothing_else(store):
    assert await store.all() == []
    for n in range(3):
        await store.put(SubscriptionRecord(f"{KEY}{n}", "u", subscription_id=f"sub-{n}", client_state="c"))
    await store.remember_event("AAMkEvent=", "apt-1")
    assert sorted(r.subscription_id for r in await store.all()) == ["sub-0", "sub-1", "sub-2"]


async def test_an_event_remembers_its_appointment(store):
    assert await store.appointment_of("AAMkEvent=") is None
    await store.remember_event("AAMkEvent=", "apt-1")
    await store.remember_event("AAMkEvent=", "apt-1")
    assert await store.appointment_of("AAMkEvent=") == "apt-1"
