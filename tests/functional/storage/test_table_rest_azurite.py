"""The thin Table client against Azurite: the answers the idempotency store relies on, and SDK interop."""

import socket
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from shared.exceptions import TableStoreUnavailableError
from shared.settings import StorageConnection
from shared.storage.table_rest import TableRestClient
from tests.functional.azurite import ACCOUNT_KEY, running_azurite
from tests.functional.local_app import serving

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def conn():
    with running_azurite() as connection_string:
        yield StorageConnection(connection_string=connection_string)


@pytest.fixture
async def client(conn):
    table = TableRestClient(conn, "rest" + uuid.uuid4().hex[:12])
    await table.create_table()
    yield table
    await table.close()


def entity(row: str, **extra):
    return {"PartitionKey": "evt", "RowKey": row, "State": "in_progress", **extra}


async def test_create_table_twice_says_it_exists(client):
    with pytest.raises(ResourceExistsError):
        await client.create_table()


async def test_insert_is_create_if_absent(client):
    etag = await client.insert(entity("k_a"))
    assert etag.startswith("W/")
    with pytest.raises(ResourceExistsError):
        await client.insert(entity("k_a"))


async def test_insert_into_a_missing_table_says_not_found(conn):
    missing = TableRestClient(conn, "missing" + uuid.uuid4().hex[:8])
    try:
        with pytest.raises(ResourceNotFoundError):
            await missing.insert(entity("k_a"))
    finally:
        await missing.close()


async def test_get_returns_properties_datetimes_and_the_current_etag(client):
    when = datetime(2026, 11, 21, 12, 0, 0, 123456, tzinfo=UTC)
    etag = await client.insert(entity("k_b", StartedAt=when, Result='{"joinWebUrl": "x"}'))
    stored = await client.get("evt", "k_b")
    assert stored.etag == etag
    assert stored.get("StartedAt") == when and stored.get("Result") == '{"joinWebUrl": "x"}'
    with pytest.raises(ResourceNotFoundError):
        await client.get("evt", "k_absent")


async def test_replace_is_conditional_on_the_etag_and_upserts_without_one(client):
    first = await client.insert(entity("k_c"))
    second = await client.replace(entity("k_c", State="completed"), first)
    with pytest.raises(ResourceModifiedError):
        await client.replace(entity("k_c", State="stolen"), first)
    with pytest.raises(ResourceNotFoundError):
        await client.replace(entity("k_gone"), second)
    await client.replace(entity("k_new", State="completed"), None)  # insert or replace
    assert (await client.get("evt", "k_new")).get("State") == "completed"
    assert (await client.get("evt", "k_c")).get("State") == "completed"


async def test_delete_is_conditional_on_the_etag(client):
    first = await client.insert(entity("k_d"))
    second = await client.replace(entity("k_d", State="completed"), first)
    with pytest.raises(ResourceModifiedError):
        await client.delete("evt", "k_d", first)
    await client.delete("evt", "k_d", second)
    with pytest.raises(ResourceNotFoundError):
        await client.get("evt", "k_d")


@pytest.mark.parametrize("row", ["k_evt:a@b=c+d", "o'brien", "h_" + "f" * 64, "spaces and ünïcödé"])
async def test_keys_with_quotes_and_reserved_characters_round_trip(client, row):
    etag = await client.insert(entity(row))
    assert (await client.get("evt", row)).etag == etag
    await client.delete("evt", row, etag)


async def test_the_sdk_reads_what_the_thin_client_wrote(conn, client):
    # GIVEN an entity written by the thin client
    when = datetime.now(UTC).replace(microsecond=250000) + timedelta(hours=1)
    await client.insert(entity("k_interop", ExpiresAt=when, Key="evt:interop"))
    # WHEN azure-data-tables reads it
    from azure.data.tables.aio import TableClient

    async with TableClient.from_connection_string(conn.connection_string, client.table_name) as sdk:
        stored = await sdk.get_entity("evt", "k_interop")
    # THEN the types are the SDK's: an aware datetime, strings as strings
    assert stored["ExpiresAt"] == when and stored["Key"] == "evt:interop"


async def test_unreachable_store_is_a_transient_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    table = TableRestClient(StorageConnection(connection_string=(
        f"AccountName=devstoreaccount1;AccountKey={ACCOUNT_KEY};TableEndpoint=http://127.0.0.1:{port}/devstoreaccount1")),
        "idem", timeout_seconds=2)
    try:
        with pytest.raises(TableStoreUnavailableError):
            await table.insert(entity("k_x"))
    finally:
        await table.close()


@pytest.fixture
async def flaky_service():
    """A stand-in table endpoint answering 503 a given number of times before it accepts an insert."""
    from aiohttp import web

    state = {"fail": 0, "calls": 0, "status": 503}

    async def insert(_: web.Request) -> web.Response:
        state["calls"] += 1
        if state["calls"] <= state["fail"]:
            return web.json_response({"odata.error": {"code": "ServerBusy", "message": {"value": "busy"}}},
                                     status=state["status"], headers={"Retry-After": "0"})
        return web.Response(status=204, headers={"ETag": 'W/"datetime\'1\'"'})

    app = web.Application()
    app.router.add_post("/devstoreaccount1/idem", insert)
    async with serving(app) as port:
        client = TableRestClient(StorageConnection(connection_string=(
            f"AccountName=devstoreaccount1;AccountKey={ACCOUNT_KEY};"
            f"TableEndpoint=http://127.0.0.1:{port}/devstoreaccount1")), "idem")
        yield client, state
        await client.close()


async def test_a_busy_store_is_retried_until_it_answers(flaky_service):
    client, state = flaky_service
    state["fail"] = 2
    assert await client.insert(entity("k_a")) == 'W/"datetime\'1\'"'
    assert state["calls"] == 3


async def test_a_store_that_stays_busy_is_a_transient_error_after_three_attempts(flaky_service):
    client, state = flaky_service
    state["fail"] = 10
    with pytest.raises(TableStoreUnavailableError):
        await client.insert(entity("k_a"))
    assert state["calls"] == 3


async def test_a_refusal_is_not_retried(flaky_service):
    client, state = flaky_service
    state["fail"], state["status"] = 10, 409
    with pytest.raises(ResourceExistsError):
        await client.insert(entity("k_a"))
    assert state["calls"] == 1
