"""A fresh environment behaves like Azure: nothing the app writes needs a queue, table or container made first.

A storage account of its own (a second Azurite, so the session's stack keeps its state), emptied of every
queue, table and container before the host starts. Permanently bad messages must each reach
`appointments-rejected` on their first attempt, with their reason: the rejection queue is written by the app
itself (azure-storage-queue), not by an output binding, so only the app's own create-on-first-use makes it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.data.tables.aio import TableServiceClient
from azure.storage.blob.aio import BlobServiceClient
from azure.storage.queue.aio import QueueServiceClient

from devstack.stack import start_stack, stop_stack
from shared import queues
from tests.e2e.conftest import ContractCheckingHost, host_json, read_all, send, send_bytes

pytestmark = pytest.mark.e2e

SCHEDULER = "4c7e1d2a-9b3f-4e5d-8a6c-1f2e3d4c5b6a"
CARDIOLOGY = "MSo0YzdlMWQyYS05YjNmLTRlNWQtOGE2Yy0xZjJlM2Q0YzViNmEqMCoqMTk6bWVldGluZ19jYXJkaW9sb2d5QHRocmVhZC52Mg=="

BAD = {
    "no_organizer": (json.dumps({"id": "fresh-1", "type": "appointment.created", "appointmentId": "apt-f1",
                                 "onlineMeetingId": CARDIOLOGY}).encode(), "invalid_event"),
    "not_json": (b"{not json", "invalid_json"),
    "not_utf8": (b'{"id": "fresh-3", "appointmentId": "apt-\xff"}', "invalid_encoding"),
    "unknown_organizer": (json.dumps({"id": "fresh-4", "type": "appointment.created", "appointmentId": "apt-f4",
                                      "organizer": "nobody@contoso.test",
                                      "onlineMeetingId": CARDIOLOGY}).encode(), "organizer_not_connected"),
}


@pytest.fixture(scope="module")
def fresh_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A stack of its own: its storage account is not shared with the session's tests."""
    state_dir = tmp_path_factory.mktemp("fresh-devstack")
    endpoints = start_stack(state_dir, "auto")
    try:
        yield endpoints
    finally:
        stop_stack(state_dir)


async def empty_the_account(connection_string: str) -> None:
    """Delete every queue, table and container, then check that nothing is left."""
    async with QueueServiceClient.from_connection_string(connection_string) as service:
        for queue in [q.name async for q in service.list_queues()]:
            await service.delete_queue(queue)
        assert [q.name async for q in service.list_queues()] == []
    async with TableServiceClient.from_connection_string(connection_string) as tables:
        for table in [t.name async for t in tables.list_tables()]:
            await tables.delete_table(table)
        assert [t.name async for t in tables.list_tables()] == []
    async with BlobServiceClient.from_connection_string(connection_string) as blobs:
        for container in [c.name async for c in blobs.list_containers()]:
            await blobs.delete_container(container)
        assert [c.name async for c in blobs.list_containers()] == []


async def read_if_any(client: QueueServiceClient, queue: str) -> list[str]:
    """A queue's messages; none when nothing ever made the queue."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return await read_all(client, queue)
    except ResourceNotFoundError:
        return []


@pytest.fixture
async def fresh_host(fresh_stack: dict[str, Any], app_module: Any,
                     monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Any, QueueServiceClient]]:
    """The app on the empty account: its services rebuilt from that stack's settings (and put back after)."""
    from shared.services import Services
    from shared.settings import load_settings

    connection_string = fresh_stack["azurite"]["connection_string"]
    await empty_the_account(connection_string)
    settings = {**fresh_stack["settings"], "CREDENTIAL_MODE": "dev_password"}
    for name, value in settings.items():  # azure-identity reads the identity endpoint from the environment
        monkeypatch.setenv(name, value)
    session_services = app_module.services
    app_module.services = Services(load_settings(settings))
    try:
        async with QueueServiceClient.from_connection_string(connection_string) as client:
            # The producer's queue: in Azure, Bicep makes it (and the host's trigger listener would).
            await client.create_queue(queues.APPOINTMENTS)
            async with ContractCheckingHost(app_module.app, connection_string=connection_string,
                                            host_json=host_json(visibilityTimeout="00:00:00"),
                                            http_port=0) as local_host:
                yield local_host, client
    finally:
        await app_module.services.aclose()
        app_module.services = session_services


async def test_on_an_empty_account_bad_messages_are_rejected_on_their_first_attempt(fresh_host):
    host, client = fresh_host
    # GIVEN an account holding only the appointments queue, and messages no retry can make good
    for body, _ in BAD.values():
        await send_bytes(client, body)
    # WHEN the host drains the queue
    await host.drain(timeout=60)
    # THEN each is in appointments-rejected after its first attempt, with its reason; none in poison
    records = [json.loads(text) for text in await read_all(client, queues.APPOINTMENTS_REJECTED)]
    assert sorted(r["reason"] for r in records) == sorted(reason for _, reason in BAD.values())
    assert all(r["dequeueCount"] == 1 for r in records)
    # AND each record is kept until someone acts: written without expiry
    peeked = await client.get_queue_client(queues.APPOINTMENTS_REJECTED).peek_messages(max_messages=32)
    assert {m.expires_on.year for m in peeked} == {9999}
    assert await read_if_any(client, queues.APPOINTMENTS_POISON) == []
    assert host.stats["process_appointment"]["failed"] == 0


async def test_on_an_empty_account_a_good_event_gets_its_link(fresh_host):
    host, client = fresh_host
    await send(client, json.dumps({"id": "fresh-ok", "type": "appointment.created", "appointmentId": "apt-ok",
                                   "organizer": SCHEDULER, "onlineMeetingId": CARDIOLOGY}))
    await host.drain(timeout=60)
    (result,) = [json.loads(text) for text in await read_all(client, queues.JOIN_URLS)]
    assert result["appointmentId"] == "apt-ok"


def test_the_devstack_creates_no_storage_itself() -> None:
    """The local stack makes only what `azd provision` makes (Bicep's queueNames, shared.queues.ALL_QUEUES), no
    table or container the app writes: the app must create those, and the test above runs it on nothing at all."""
    root = Path(__file__).resolve().parents[2] / "devstack"
    for path in root.glob("*.py"):
        text = path.read_text()
        assert "create_table" not in text and "create_container" not in text, path
        if path.name == "stack.py":
            provision = text.split("def provision(", 1)[1].split("\ndef ", 1)[0]
            assert text.count("create_queue") == provision.count("create_queue") == 1
            assert "for name in ALL_QUEUES" in provision
        else:
            assert "create_queue" not in text, path
