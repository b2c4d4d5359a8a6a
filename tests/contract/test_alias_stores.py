"""The booking alias contract, run against the in-memory twin and the Azure Table store (on Azurite) alike."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shared.storage.aliases import MAX_HOPS, AliasStore, TableAliasStore, resolve
from shared.testing.aliases import InMemoryAliasStore

pytestmark = pytest.mark.contract
URI = "calendly:https://api.calendly.com/scheduled_events/EV1/invitees/"


@pytest.fixture(params=["memory", "table"])
async def store(request: pytest.FixtureRequest, azurite_conn: Any) -> AsyncIterator[AliasStore]:
    if request.param == "memory":
        yield InMemoryAliasStore()
        return
    table = TableAliasStore(azurite_conn, "als" + uuid.uuid4().hex[:12])
    yield table
    await table.aclose()


async def test_an_unknown_alias_is_none_even_before_the_table_exists(store):
    assert await store.get(URI + "A") is None
    assert await resolve(store, URI + "A") == URI + "A"


async def test_links_resolve_back_to_the_first_booking_whatever_order_they_arrived_in(store):
    # GIVEN C → B stored before B → A (the second reschedule's delivery overtook the first's)
    await store.put(URI + "C", URI + "B")
    assert await resolve(store, URI + "C") == URI + "B"
    await store.put(URI + "B", URI + "A")
    # THEN both later bookings resolve to the first, and the same link again changes nothing
    await store.put(URI + "B", URI + "A")
    assert [await resolve(store, URI + x) for x in "ABC"] == [URI + "A"] * 3


async def test_a_loop_or_an_endless_chain_stops(store):
    await store.put(URI + "X", URI + "Y")
    await store.put(URI + "Y", URI + "X")
    assert await resolve(store, URI + "X") in (URI + "X", URI + "Y")
    for n in range(MAX_HOPS + 3):
        await store.put(f"{URI}n{n + 1}", f"{URI}n{n}")
    assert await resolve(store, f"{URI}n{MAX_HOPS + 3}") == f"{URI}n3"


async def test_a_note_is_kept_apart_from_the_links_and_replaced_by_the_next(store):
    assert await store.get_note(URI + "A") is None
    await store.put(URI + "B", URI + "A")
    await store.put_note(URI + "B", '{"id":"one"}')
    await store.put_note(URI + "B", '{"id":"two"}')
    assert await store.get_note(URI + "B") == '{"id":"two"}' and await store.get(URI + "B") == URI + "A"
    assert await store.get_note(URI + "A") is None
