"""The Queue REST calls the stand-in host makes, signed with Shared Key, over one aiohttp session.

azure-storage-queue spent ~1 ms of CPU on each call (its pipeline policies, XML models and
deserializers), and the host makes four or more per message (receive, outputs, delete): ~10 ms of host CPU
per message, on the same event loop as the app it stands in for. The same requests built here cost a
fraction of that (docs/performance.md, `host_cpu_ms_per_message`), so local scale tests measure the app.
Only what the host needs: create a queue, receive, put, update (lease renewal and retry delay), delete and
the approximate count. Answers of the service become the azure-core exceptions the SDK raises.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlsplit
from xml.sax.saxutils import escape

import aiohttp
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from yarl import URL

API_VERSION = "2020-10-02"
# Azurite's well-known development account (UseDevelopmentStorage=true); public by design.
_DEV_ACCOUNT = "devstoreaccount1"
_DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
_DEV_ENDPOINTS = {"queue": "http://127.0.0.1:10001/devstoreaccount1", "blob": "http://127.0.0.1:10000/devstoreaccount1"}


@dataclass(frozen=True)
class StorageAccount:
    """A storage account as a connection string names it: endpoints, name and Shared Key."""

    name: str
    key: bytes
    queue_endpoint: str
    blob_endpoint: str | None

    @classmethod
    def from_connection_string(cls, value: str) -> StorageAccount:
        """Parse a Shared Key connection string (the host's identity-based connections are Azure's)."""
        parts: dict[str, str] = {}
        for segment in value.split(";"):
            name, sep, item = segment.strip().partition("=")
            if sep:
                parts[name.strip().lower()] = item.strip()
        if parts.get("usedevelopmentstorage", "").lower() == "true":
            return cls(_DEV_ACCOUNT, base64.b64decode(_DEV_KEY), _DEV_ENDPOINTS["queue"], _DEV_ENDPOINTS["blob"])
        account, key = parts.get("accountname", ""), parts.get("accountkey", "")
        if not account or not key:
            raise ValueError("the local host needs a connection string with AccountName and AccountKey")
        protocol = parts.get("defaultendpointsprotocol", "https")
        suffix = parts.get("endpointsuffix", "core.windows.net")

        def endpoint(kind: str) -> str:
            return (parts.get(f"{kind}endpoint") or f"{protocol}://{account}.{kind}.{suffix}").rstrip("/")

        blob = endpoint("blob") if parts.get("blobendpoint") or "queueendpoint" not in parts else None
        return cls(account, base64.b64decode(key), endpoint("queue"), blob)


@dataclass
class ReceivedMessage:
    """A received message; ``pop_receipt`` changes with every update (lease renewal)."""

    id: str
    pop_receipt: str
    dequeue_count: int
    content: str
    inserted_on: dt.datetime | None
    expires_on: dt.datetime | None
    next_visible_on: dt.datetime | None


def _http_date(text: str | None) -> dt.datetime | None:
    return parsedate_to_datetime(text) if text else None


def _raise_for(status: int, body: bytes, what: str) -> None:
    code = ""
    if body:
        try:
            code = ET.fromstring(body).findtext("Code") or ""  # noqa: S314 - our own emulator's answer
        except ET.ParseError:
            code = ""
    message = f"{what}: {status} {code}".strip()
    if status == 404:
        raise ResourceNotFoundError(message)
    if status == 409:
        raise ResourceExistsError(message)
    error = HttpResponseError(message)
    error.status_code = status
    raise error


class QueueRestClient:
    """Every queue of one account; make it inside the event loop that uses it."""

    def __init__(self, account: StorageAccount, *, timeout_seconds: float = 30.0) -> None:
        self.account = account
        self._base = account.queue_endpoint
        self._path_prefix = urlsplit(self._base).path.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _sign(self, method: str, path: str, query: dict[str, str], headers: dict[str, str]) -> str:
        canonical_headers = "".join(f"{k}:{v}\n" for k, v in sorted(headers.items()) if k.startswith("x-ms-"))
        resource = f"/{self.account.name}{path}" + "".join(f"\n{k}:{query[k]}" for k in sorted(query))
        length = headers.get("content-length", "")
        to_sign = "\n".join([method, "", "", "" if length == "0" else length, "", headers.get("content-type", ""),
                             "", "", "", "", "", ""]) + "\n" + canonical_headers + resource
        digest = hmac.new(self.account.key, to_sign.encode("utf-8"), hashlib.sha256).digest()
        return f"SharedKey {self.account.name}:{base64.b64encode(digest).decode()}"

    async def _call(self, method: str, path: str, query: dict[str, str], body: bytes = b"",
                    what: str = "") -> tuple[int, Any, bytes]:
        full_path = f"{self._path_prefix}{path}"
        # aiohttp adds a Content-Type of its own to a PUT without a body; one given here is what gets signed.
        headers = {"x-ms-date": formatdate(usegmt=True), "x-ms-version": API_VERSION, "content-type": "application/xml"}
        if body:
            headers["content-length"] = str(len(body))
        headers["Authorization"] = self._sign(method, full_path, query, headers)
        query_text = "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
        url = URL(f"{self._base}{path}" + (f"?{query_text}" if query_text else ""), encoded=True)
        if self._session is None:
            # Azurite answers one request per connection at a time: a generous pool keeps the host's
            # concurrent calls from queueing behind each other in the client.
            self._session = aiohttp.ClientSession(timeout=self._timeout, connector=aiohttp.TCPConnector(limit=64))
        async with self._session.request(method, url, data=body or None, headers=headers) as response:
            data = await response.read()
            if response.status >= 300:
                _raise_for(response.status, data, what or f"{method} {path}")
            return response.status, response.headers, data

    async def create_queue(self, name: str) -> bool:
        """Create the queue; False when it already existed."""
        status, _, _ = await self._call("PUT", f"/{name}", {}, what=f"create queue {name}")
        return status == 201

    async def approximate_count(self, name: str) -> int:
        """The queue's approximate message count."""
        _, headers, _ = await self._call("GET", f"/{name}", {"comp": "metadata"}, what=f"metadata of {name}")
        return int(headers.get("x-ms-approximate-messages-count", "0"))

    async def send(self, name: str, content: str, visibility_timeout: int = 0) -> None:
        """Put one message (its text as given: the caller encodes it)."""
        body = f"<QueueMessage><MessageText>{escape(content)}</MessageText></QueueMessage>".encode()
        query = {"visibilitytimeout": str(visibility_timeout)} if visibility_timeout else {}
        await self._call("POST", f"/{name}/messages", query, body, what=f"put message on {name}")

    async def receive(self, name: str, max_messages: int, visibility_timeout: int) -> list[ReceivedMessage]:
        """Receive up to ``max_messages``, each hidden for ``visibility_timeout`` seconds."""
        _, _, data = await self._call(
            "GET", f"/{name}/messages",
            {"numofmessages": str(max_messages), "visibilitytimeout": str(visibility_timeout)},
            what=f"receive from {name}")
        root = ET.fromstring(data)  # noqa: S314 - our own emulator's answer
        return [
            ReceivedMessage(
                id=item.findtext("MessageId") or "",
                pop_receipt=item.findtext("PopReceipt") or "",
                dequeue_count=int(item.findtext("DequeueCount") or "1"),
                content=item.findtext("MessageText") or "",
                inserted_on=_http_date(item.findtext("InsertionTime")),
                expires_on=_http_date(item.findtext("ExpirationTime")),
                next_visible_on=_http_date(item.findtext("TimeNextVisible")),
            )
            for item in root.iter("QueueMessage")
        ]

    async def update_visibility(self, name: str, message: ReceivedMessage, visibility_timeout: int) -> None:
        """Hide the message for ``visibility_timeout`` seconds from now; its pop receipt is renewed in place."""
        query = {"popreceipt": message.pop_receipt, "visibilitytimeout": str(visibility_timeout)}
        _, headers, _ = await self._call("PUT", f"/{name}/messages/{message.id}", query,
                                         what=f"update message in {name}")
        message.pop_receipt = headers.get("x-ms-popreceipt", message.pop_receipt)
        message.next_visible_on = _http_date(headers.get("x-ms-time-next-visible"))

    async def delete(self, name: str, message: ReceivedMessage) -> None:
        """Delete the message (its current pop receipt)."""
        await self._call("DELETE", f"/{name}/messages/{message.id}", {"popreceipt": message.pop_receipt},
                         what=f"delete message from {name}")
