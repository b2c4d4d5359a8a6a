"""The handful of Azure Table REST calls the table stores make (idempotency, appointment and alias records),
over one keep-alive connection pool (shared/common/http1.py).

Every event costs several table requests (its claim and completion, its appointment record's read and
write), so their cost is the pipeline's: azure-data-tables spends ~1 ms of worker CPU on each (eleven
pipeline policies, its serializer), and under a burst of claims that CPU queues up in the worker's one
thread. The same request built here costs ~0.09 ms (0.21 ms over aiohttp; see the performance page of the
docs). Only what the stores need is here: insert, read, conditional replace, upsert, conditional delete and
create-table, with Shared Key (connection string) or Entra (managed identity)
authorization. Failures surface as the azure-core exceptions the SDK raises for the same answers, so
the store's logic does not depend on which client made the call.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import formatdate
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlsplit

from shared.common.clock import parse_timestamp
from shared.common.retry_after import parse_retry_after
from shared.exceptions import SettingsError, TableStoreUnavailableError
from shared.settings import StorageConnection
from shared.storage.credentials import storage_credential

if TYPE_CHECKING:
    from shared.common.http1 import Http1Pool

T = TypeVar("T")
API_VERSION = "2019-02-02"
STORAGE_SCOPE = "https://storage.azure.com/.default"
# Azurite's well-known development account (UseDevelopmentStorage=true).
_DEV_ACCOUNT = "devstoreaccount1"
_DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
_TOKEN_REFRESH_MARGIN = 300.0
# Transient failures (network, timeout, 408/429/5xx) are retried, like azure-core's default policy does
# for the SDK: a stalled or briefly failing store must not turn a finished delivery into a repeated one.
RETRY_ATTEMPTS = 3
RETRY_BASE_SECONDS = 0.25
RETRY_MAX_SECONDS = 5.0
_EDM_DATETIME = "Edm.DateTime"


@dataclass(frozen=True)
class Entity:
    """A stored entity's properties (DateTime values as aware datetimes) and its ETag."""

    properties: dict[str, Any]
    etag: str

    def get(self, name: str, default: Any = None) -> Any:
        """One property."""
        return self.properties.get(name, default)


@dataclass(frozen=True)
class _Account:
    endpoint: str  # the table service URL, without a trailing slash
    name: str
    key: bytes | None = None
    sas: str | None = None


def parse_connection_string(value: str) -> _Account:
    """The table endpoint and credentials of a storage connection string."""
    parts = {}
    for segment in value.split(";"):
        name, sep, item = segment.strip().partition("=")
        if sep:
            parts[name.strip().lower()] = item.strip()
    if parts.get("usedevelopmentstorage", "").lower() == "true":
        return _Account(f"http://127.0.0.1:10002/{_DEV_ACCOUNT}", _DEV_ACCOUNT, base64.b64decode(_DEV_KEY))
    name = parts.get("accountname", "")
    protocol, suffix = parts.get("defaultendpointsprotocol", "https"), parts.get("endpointsuffix", "core.windows.net")
    endpoint = parts.get("tableendpoint") or (f"{protocol}://{name}.table.{suffix}" if name else "")
    if not endpoint:
        raise SettingsError(["AzureWebJobsStorage: the connection string names neither TableEndpoint nor AccountName"])
    if not name:  # a SAS connection string may omit it; the host's first label is the account
        name = (urlsplit(endpoint).hostname or "").split(".")[0]
    if parts.get("accountkey"):
        return _Account(endpoint.rstrip("/"), name, key=base64.b64decode(parts["accountkey"]))
    if parts.get("sharedaccesssignature"):
        return _Account(endpoint.rstrip("/"), name, sas=parts["sharedaccesssignature"].lstrip("?"))
    raise SettingsError(["AzureWebJobsStorage: the connection string has neither AccountKey nor "
                         "SharedAccessSignature"])


def _format_datetime(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_datetime(value: str) -> datetime:
    # The service always writes UTC (seven fractional digits and a Z); a bare value is UTC too.
    parsed = parse_timestamp(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def encode_entity(entity: Mapping[str, Any]) -> bytes:
    """An entity as the service's JSON, datetimes annotated as Edm.DateTime."""
    body: dict[str, Any] = {}
    for name, value in entity.items():
        if isinstance(value, datetime):
            body[f"{name}@odata.type"] = _EDM_DATETIME
            body[name] = _format_datetime(value)
        elif isinstance(value, int) and not isinstance(value, bool) and not -2**31 <= value < 2**31:
            body[f"{name}@odata.type"] = "Edm.Int64"  # a bare JSON number is read as Int32
            body[name] = str(value)
        elif isinstance(value, (str, bool, int, float)) or value is None:
            body[name] = value
        else:
            raise TypeError(f"table property {name!r} has an unsupported type {type(value).__name__}")
    return json.dumps(body, separators=(",", ":")).encode()


def decode_entity(document: Mapping[str, Any]) -> dict[str, Any]:
    """The service's minimal-metadata JSON as properties, Edm.DateTime values parsed."""
    properties: dict[str, Any] = {}
    for name, value in document.items():
        if name.startswith("odata.") or "@odata." in name:
            continue
        if document.get(f"{name}@odata.type") == _EDM_DATETIME or name == "Timestamp":
            value = _parse_datetime(value)
        properties[name] = value
    return properties


def _key_literal(value: str) -> str:
    return quote(value.replace("'", "''"), safe="")


class TableRestClient:
    """One table of one account; make it inside the event loop that uses it."""

    def __init__(self, conn: StorageConnection, table_name: str, *, timeout_seconds: float = 20.0) -> None:
        self.table_name = table_name
        self._timeout_seconds = timeout_seconds
        self._pool: Http1Pool | None = None
        self._credential: Any = None
        self._token: tuple[str, float] | None = None
        self._token_lock = asyncio.Lock()
        if conn.connection_string:
            self._account = parse_connection_string(conn.connection_string)
        elif conn.table_service_uri:
            endpoint = conn.table_service_uri.rstrip("/")
            self._account = _Account(endpoint, (urlsplit(endpoint).hostname or "").split(".")[0])
            self._credential = storage_credential(conn)
        else:
            raise SettingsError(["AzureWebJobsStorage has neither a connection string nor a table service URI "
                                 "(AzureWebJobsStorage__tableServiceUri or __accountName)"])
        self._path_prefix = urlsplit(self._account.endpoint).path  # "/devstoreaccount1" for path-style URLs

    async def close(self) -> None:
        """Close the connection pool and the credential."""
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None
        if self._credential is not None:
            await self._credential.close()

    async def create_table(self) -> None:
        """Create the table; ResourceExistsError if it exists."""
        body = json.dumps({"TableName": self.table_name}).encode()
        await self._request("POST", "/Tables", body=body, expect=(201, 204))

    async def insert(self, entity: Mapping[str, Any]) -> str:
        """Insert; the new ETag. ResourceExistsError if it exists, ResourceNotFoundError if the table does not."""
        _, etag = await self._request("POST", f"/{self.table_name}", body=encode_entity(entity), expect=(201, 204))
        return etag

    async def get(self, partition_key: str, row_key: str) -> Entity:
        """Read one entity; ResourceNotFoundError if absent."""
        document, etag = await self._request("GET", self._entity_path(partition_key, row_key), expect=(200,))
        return Entity(decode_entity(document or {}), etag or str((document or {}).get("odata.etag", "")))

    async def replace(self, entity: Mapping[str, Any], etag: str | None) -> str:
        """Replace if the ETag still matches (ResourceModifiedError if not); with etag None, insert or replace."""
        path = self._entity_path(entity["PartitionKey"], entity["RowKey"])
        headers = {"If-Match": etag} if etag is not None else {}
        _, new_etag = await self._request("PUT", path, body=encode_entity(entity), headers=headers, expect=(204,))
        return new_etag

    async def delete(self, partition_key: str, row_key: str, etag: str) -> None:
        """Delete if the ETag still matches; ResourceModifiedError or ResourceNotFoundError otherwise."""
        await self._request("DELETE", self._entity_path(partition_key, row_key), headers={"If-Match": etag},
                            expect=(204,))

    def _entity_path(self, partition_key: str, row_key: str) -> str:
        return f"/{self.table_name}(PartitionKey='{_key_literal(partition_key)}',RowKey='{_key_literal(row_key)}')"

    def _connections(self) -> Http1Pool:
        from shared.common.http1 import Http1Pool

        if self._pool is None:
            self._pool = Http1Pool(self._account.endpoint, limit=64, timeout_seconds=self._timeout_seconds)
        return self._pool

    async def _authorization(self, method: str, path: str, content_type: str, date: str) -> dict[str, str]:
        if self._account.key is not None:
            # Shared Key for the Table service: verb, Content-MD5, Content-Type, date, canonical resource.
            resource = f"/{self._account.name}{self._path_prefix}{path}"
            text = f"{method}\n\n{content_type}\n{date}\n{resource}"
            signature = base64.b64encode(hmac.new(self._account.key, text.encode(), hashlib.sha256).digest())
            return {"Authorization": f"SharedKey {self._account.name}:{signature.decode()}"}
        if self._credential is not None:
            return {"Authorization": f"Bearer {await self._bearer()}"}
        return {}

    async def _bearer(self) -> str:
        if self._token is not None and self._token[1] - _TOKEN_REFRESH_MARGIN > time.time():
            return self._token[0]
        async with self._token_lock:  # one refresh for all waiting writes
            if self._token is None or self._token[1] - _TOKEN_REFRESH_MARGIN <= time.time():
                access = await self._credential.get_token(STORAGE_SCOPE)
                self._token = (access.token, float(access.expires_on))
            return self._token[0]

    async def query(self, odata_filter: str) -> list[Entity]:
        """Every entity matching an OData filter, page after page (continuation headers followed)."""
        found: list[Entity] = []
        continuation: dict[str, str] = {}
        for _ in range(10_000):
            params = {"$filter": odata_filter, **continuation}
            answer: dict[str, str] = {}
            document, _ = await self._request("GET", f"/{self.table_name}()", expect=(200,),
                                              query="&".join(f"{k}={quote(v, safe='')}" for k, v in params.items()),
                                              continuation=answer)
            for item in (document or {}).get("value") or []:
                found.append(Entity(decode_entity(item), str(item.get("odata.etag", ""))))
            if not answer:
                return found
            continuation = answer
        raise TableStoreUnavailableError(f"table {self.table_name} query kept continuing")

    async def _request(self, method: str, path: str, *, body: bytes | None = None,
                       headers: Mapping[str, str] | None = None,
                       expect: tuple[int, ...], query: str | None = None,
                       continuation: dict[str, str] | None = None) -> tuple[dict[str, Any] | None, str]:
        """One call, retried on a network failure or a busy/failing service (as azure-core's policy would)."""
        for attempt in range(1, RETRY_ATTEMPTS + 1):
            try:
                return await self._send(method, path, body=body, headers=headers, expect=expect, query=query,
                                        continuation=continuation)
            except TableStoreUnavailableError as exc:
                if attempt == RETRY_ATTEMPTS:
                    raise
                # A retried write may already have been applied: the store's conditional writes and
                # claim owner tokens make its answer (exists / ETag changed) come out right.
                delay = RETRY_BASE_SECONDS * 2 ** (attempt - 1) * (0.5 + random.random())  # noqa: S311
                await asyncio.sleep(min(max(delay, exc.retry_after or 0.0), RETRY_MAX_SECONDS))
        raise AssertionError("unreachable")

    async def _send(self, method: str, path: str, *, body: bytes | None, headers: Mapping[str, str] | None,
                    expect: tuple[int, ...], query: str | None = None,
                    continuation: dict[str, str] | None = None) -> tuple[dict[str, Any] | None, str]:
        from shared.common.http1 import WireError

        date = formatdate(usegmt=True)
        content_type = "application/json" if body is not None else ""
        all_headers = {
            "x-ms-date": date, "x-ms-version": API_VERSION, "DataServiceVersion": "3.0",
            "MaxDataServiceVersion": "3.0;NetFx", "Accept": "application/json;odata=minimalmetadata",
            **({"Content-Type": content_type, "Prefer": "return-no-content"} if body is not None else {}),
            **(headers or {}),
            **await self._authorization(method, path, content_type, date),
        }
        # The query string is not part of Shared Key's canonical resource for the Table service.
        extras = "&".join(part for part in (query, self._account.sas) if part)
        target = f"{self._path_prefix}{path}" + (f"?{extras}" if extras else "")
        try:
            answer = await self._connections().request(method, target, all_headers, body)
        except (WireError, TimeoutError) as exc:
            raise TableStoreUnavailableError(
                f"table {self.table_name} {method} failed: {type(exc).__name__}: {exc}") from exc
        if continuation is not None:
            for name, param in (("x-ms-continuation-nextpartitionkey", "NextPartitionKey"),
                                ("x-ms-continuation-nextrowkey", "NextRowKey")):
                if answer.headers.get(name):
                    continuation[param] = answer.headers[name]
        if answer.status in expect:
            return (json.loads(answer.body) if answer.body else None), answer.headers.get("etag", "")
        error = _error(answer.status, answer.body, f"{self.table_name} {method}")
        if isinstance(error, TableStoreUnavailableError):
            error.retry_after = parse_retry_after(answer.headers.get("retry-after"), cap=RETRY_MAX_SECONDS)
        raise error


def _error(status: int, payload: bytes, method: str) -> Exception:
    """The azure-core exception the SDK raises for the same answer."""
    from azure.core.exceptions import (
        HttpResponseError,
        ResourceExistsError,
        ResourceModifiedError,
        ResourceNotFoundError,
    )

    try:
        error = json.loads(payload).get("odata.error", {})
        code = str(error.get("code", ""))
        message = str(error.get("message", {}).get("value", ""))[:300]
    except (ValueError, AttributeError):
        code, message = "", payload[:300].decode("utf-8", "replace")
    text = f"table {method} answered {status} {code}: {message}".strip()
    if status == 409:
        return ResourceExistsError(message=text)
    if status == 404:
        return ResourceNotFoundError(message=text)
    if status == 412:
        return ResourceModifiedError(message=text)
    if status >= 500 or status in (408, 429):
        return TableStoreUnavailableError(text)
    exc = HttpResponseError(message=text)
    exc.status_code = status
    return exc


class LazyTable:
    """A store's one table: its REST client made on first use (inside the worker's event loop), closed once."""

    def __init__(self, conn: StorageConnection, table_name: str, client: TableRestClient | None = None) -> None:
        self._conn = conn
        self._table_name = table_name
        self._client = client

    def _table(self) -> TableRestClient:
        if self._client is None:
            self._client = TableRestClient(self._conn, self._table_name)
        return self._client

    async def aclose(self) -> None:
        """Close the table client."""
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def _ensure_table(self) -> None:
        """Create the table if it is missing (the first write against a fresh account)."""
        from azure.core.exceptions import ResourceExistsError

        try:
            await self._table().create_table()
        except ResourceExistsError:
            pass

    async def _write(self, write: Callable[[TableRestClient], Awaitable[T]]) -> T:
        """`write`, made once more after creating the table when the table was missing."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return await write(self._table())
        except ResourceNotFoundError:
            await self._ensure_table()
            return await write(self._table())
