"""End-to-end fixtures: the local stack on free ports, the real function_app wired to it, the harness."""

from __future__ import annotations

import base64
import json
import os
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.storage.queue import BinaryBase64DecodePolicy, BinaryBase64EncodePolicy, TextBase64EncodePolicy
from azure.storage.queue.aio import QueueServiceClient

from devstack.harness import LocalHost
from devstack.stack import start_stack, stop_stack
from shared import queues
from tests.schemas import QUEUE_SCHEMAS, WEBHOOK_BODY, assert_message_valid, assert_valid, errors

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Azurite and the emulators, started once for the session and always stopped."""
    state_dir = tmp_path_factory.mktemp("devstack")
    endpoints = start_stack(state_dir, "auto")
    try:
        yield endpoints
    finally:
        stop_stack(state_dir)


@pytest.fixture(scope="session")
async def app_module(stack: dict[str, Any]) -> AsyncIterator[Any]:
    """The real function_app, its worker services rebuilt from the stack's settings.

    The pipeline tests sign in the seeded test users directly (`dev_password`); the vault path, with
    organizers connected through the connect page or a device code, has its own tests (test_auth_flow,
    test_browser_connect). Webhook retries back off from 1 s instead of 10 s, so an outage test takes seconds.
    """
    settings = {**stack["settings"], "CREDENTIAL_MODE": "dev_password", "WEBHOOK_RETRY_BASE_SECONDS": "1"}
    os.environ.update(settings)
    import function_app
    from shared.services import Services
    from shared.settings import load_settings

    function_app.services = Services(load_settings(settings))
    yield function_app
    await function_app.services.aclose()


def host_json(**overrides: Any) -> dict[str, Any]:
    """The repo's host.json, with queue settings overridden where a test needs speed."""
    doc = json.loads((ROOT / "host.json").read_text())
    doc["extensions"]["queues"].update(overrides)
    return doc


class ContractCheckingHost(LocalHost):
    """The harness, checking every record the app writes to a queue against its published schema first."""

    async def _write_queue_output(self, fn: Any, binding: dict[str, Any], bodies: list[bytes]) -> None:
        queue = binding["queueName"]
        if queue in QUEUE_SCHEMAS:
            for body in bodies:
                assert_message_valid(queue, body.decode())
        await super()._write_queue_output(fn, binding, bodies)


@pytest.fixture
async def host(stack: dict[str, Any], app_module: Any, queues_client: QueueServiceClient) -> AsyncIterator[LocalHost]:
    """The harness running the app, every record it writes checked against the contracts. Retries are
    immediate (visibilityTimeout 0) to keep tests fast; maxDequeueCount and everything else come from host.json."""
    async with ContractCheckingHost(app_module.app, connection_string=stack["azurite"]["connection_string"],
                         host_json=host_json(visibilityTimeout="00:00:00"), http_port=0) as local_host:
        yield local_host


@pytest.fixture
async def queues_client(stack: dict[str, Any]) -> AsyncIterator[QueueServiceClient]:
    """A queue service client; every app queue is emptied before each test."""
    async with QueueServiceClient.from_connection_string(stack["azurite"]["connection_string"]) as client:
        for name in (*queues.ALL_QUEUES,):
            queue = client.get_queue_client(name)
            try:
                await queue.create_queue()
            except Exception:
                await queue.clear_messages()
        yield client


async def send(client: QueueServiceClient, text: str, queue: str = queues.APPOINTMENTS, *,
               contract_valid: bool = True) -> None:
    """Enqueue as producers do with azure-storage-queue: base64 text. The message must be valid against the
    published schema, or, when a test sends a broken one on purpose (`contract_valid=False`), invalid."""
    if queue in QUEUE_SCHEMAS:
        try:
            problems = errors(QUEUE_SCHEMAS[queue], json.loads(text))
        except ValueError:
            problems = ["not JSON"]
        assert bool(problems) != contract_valid, f"contract_valid={contract_valid} but: {problems or 'valid'}"
    queue_client = client.get_queue_client(queue, message_encode_policy=TextBase64EncodePolicy())
    await queue_client.send_message(text)


async def send_bytes(client: QueueServiceClient, body: bytes, queue: str = queues.APPOINTMENTS) -> None:
    """Enqueue raw bytes, base64-encoded (a producer whose text is not UTF-8, or a hostile one)."""
    queue_client = client.get_queue_client(queue, message_encode_policy=BinaryBase64EncodePolicy())
    await queue_client.send_message(body)


async def read_all(client: QueueServiceClient, queue: str) -> list[str]:
    """Every message on a queue (peeked, so the queue is left as it is)."""
    queue_client = client.get_queue_client(queue, message_decode_policy=BinaryBase64DecodePolicy())
    messages = await queue_client.peek_messages(max_messages=32)
    return [m.content.decode() for m in messages]


def decode(text: str) -> str:
    """Base64 text as the host writes it."""
    return base64.b64decode(text).decode()


@pytest.fixture(scope="session")
def graph_admin(stack: dict[str, Any]) -> Iterator[httpx.Client]:
    """An HTTP client for the Graph emulator's admin API."""
    verify = ssl.create_default_context(cafile=stack["ca_bundle"])
    with httpx.Client(base_url=stack["graph"]["admin_url"] + "/", verify=verify, timeout=10) as client:
        yield client


@pytest.fixture(scope="session")
def receiver_admin(stack: dict[str, Any]) -> Iterator[httpx.Client]:
    """An HTTP client for the webhook receiver's admin API."""
    verify = ssl.create_default_context(cafile=stack["ca_bundle"])
    with httpx.Client(base_url=stack["receiver"]["admin_url"] + "/", verify=verify, timeout=10) as client:
        yield client


@pytest.fixture(autouse=True)
def reset_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    """Faults configured by one test, and deliveries it caused, never leak into the next."""
    for name in ("graph_admin", "receiver_admin"):
        if name in request.fixturenames:
            request.getfixturevalue(name).post("reset")
    yield
    for name in ("graph_admin", "receiver_admin"):
        if name in request.fixturenames:
            request.getfixturevalue(name).post("reset")


@pytest.fixture(autouse=True)
def webhooks_follow_the_contract(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every webhook body the local scheduling system received during a test is valid against the schema."""
    yield
    if "receiver_admin" in request.fixturenames:
        for delivery in request.getfixturevalue("receiver_admin").get("deliveries").json()["deliveries"]:
            assert_valid(WEBHOOK_BODY, json.loads(delivery["raw_body"]))
