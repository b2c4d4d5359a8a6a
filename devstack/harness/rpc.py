"""What the host puts into an InvocationRequest, and what it takes out of the answer.

Each conversion follows the .NET host (Azure/azure-functions-host, ``GrpcMessageConversionExtensions`` and the
Storage extension's queue trigger):

- a queue message reaches the worker as ``TypedData.string``: the extension hands script languages the
  message's ``AsString()``, a UTF-8 decoding in which bytes that are not UTF-8 become U+FFFD (``bytes`` only
  with ``dataType: binary``); its trigger metadata ``Id``, ``PopReceipt`` and ``QueueTrigger`` are strings,
  ``DequeueCount`` and the three times are JSON (``"3"``, ``"\\"2026-12-06T21:07:24+00:00\\""``);
- an HTTP request is an ``RpcHttp``: header names lower-cased, repeated values joined with ``,``, query
  parameters without empty values, route values in ``params``, and the body as bytes (the worker asks for
  RawHttpBodyBytes and RpcHttpBodyOnly), sent only when there is one;
- a timer is its TimerInfo as JSON;
- a list set on a queue output comes back as one JSON array, which the host writes as one message per item;
  an HTTP status comes back as a string.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from multidict import CIMultiDict


@dataclass
class QueueTriggerMessage:
    """A received queue message as the host sees it, its body already decoded from the queue's encoding."""

    id: str
    body: bytes
    dequeue_count: int
    pop_receipt: str
    inserted_on: dt.datetime | None = None
    expires_on: dt.datetime | None = None
    next_visible_on: dt.datetime | None = None


@dataclass
class HttpCall:
    """An incoming HTTP request, before conversion."""

    method: str
    url: str
    headers: Iterable[tuple[str, str]]
    query: Iterable[tuple[str, str]]
    route_params: Mapping[str, str]
    body: bytes


@dataclass
class HttpAnswer:
    """The function's HTTP response as the host gets it back (header names case-insensitive, as HTTP's are)."""

    status: int
    headers: CIMultiDict[str]
    body: bytes
    cookies: list[Any] = field(default_factory=list)

    @property
    def status_code(self) -> int:
        """The status, under azure.functions' name for it."""
        return self.status

    @property
    def mimetype(self) -> str:
        """The media type of Content-Type, without its parameters."""
        return self.headers.get("content-type", "").split(";", 1)[0].strip()

    def get_body(self) -> bytes:
        """The body's bytes."""
        return self.body


def _json_time(value: dt.datetime | None) -> str:
    # Newtonsoft writes a DateTimeOffset as an ISO string with its offset.
    return json.dumps(value.astimezone(dt.UTC).isoformat() if value else None)


def _sys_metadata(protos: Any, function_name: str) -> Any:
    now = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
    return protos.TypedData(json=json.dumps(
        {"MethodName": function_name, "UtcNow": now, "RandGuid": str(uuid.uuid4())}, separators=(",", ":")))


def queue_invocation(protos: Any, function_name: str, trigger: Mapping[str, Any],
                     message: QueueTriggerMessage) -> tuple[list[Any], dict[str, Any]]:
    """The input data and trigger metadata of a queue-triggered invocation."""
    text = message.body.decode("utf-8", errors="replace")
    data = (protos.TypedData(bytes=message.body) if str(trigger.get("dataType", "")).lower() == "binary"
            else protos.TypedData(string=text))
    metadata = {
        "Id": protos.TypedData(string=message.id),
        "PopReceipt": protos.TypedData(string=message.pop_receipt),
        "QueueTrigger": protos.TypedData(string=text),
        "DequeueCount": protos.TypedData(json=json.dumps(message.dequeue_count)),
        "InsertionTime": protos.TypedData(json=_json_time(message.inserted_on)),
        "ExpirationTime": protos.TypedData(json=_json_time(message.expires_on)),
        "NextVisibleTime": protos.TypedData(json=_json_time(message.next_visible_on)),
        "sys": _sys_metadata(protos, function_name),
    }
    return [protos.ParameterBinding(name=trigger["name"], data=data)], metadata


def http_invocation(protos: Any, function_name: str, trigger: Mapping[str, Any],
                    call: HttpCall) -> tuple[list[Any], dict[str, Any]]:
    """The input data of an HTTP-triggered invocation (the worker asked the host to leave out its metadata)."""
    headers: dict[str, str] = {}
    for name, value in call.headers:
        key = name.lower()
        headers[key] = f"{headers[key]},{value}" if key in headers else value
    query: dict[str, str] = {}
    for name, value in call.query:
        query[name] = f"{query[name]},{value}" if name in query else value
    http = protos.RpcHttp(
        method=call.method, url=call.url, headers=headers,
        query={k: v for k, v in query.items() if v},
        params={k: v for k, v in call.route_params.items() if v is not None})
    if call.body:
        http.body.CopyFrom(protos.TypedData(bytes=call.body))
    return [protos.ParameterBinding(name=trigger["name"], data=protos.TypedData(http=http))], {}


def timer_invocation(protos: Any, function_name: str, trigger: Mapping[str, Any], *, past_due: bool,
                     last: dt.datetime | None = None, next_due: dt.datetime | None = None
                     ) -> tuple[list[Any], dict[str, Any]]:
    """The input data of a timer-triggered invocation: TimerInfo as the host serializes it."""
    now = dt.datetime.now(dt.UTC)
    info = {
        "Schedule": {"AdjustForDST": True},
        "ScheduleStatus": {"Last": (last or now).isoformat(), "Next": (next_due or now).isoformat(),
                           "LastUpdated": now.isoformat()},
        "IsPastDue": past_due,
    }
    data = protos.TypedData(json=json.dumps(info, separators=(",", ":")))
    return [protos.ParameterBinding(name=trigger["name"], data=data)], {"sys": _sys_metadata(protos, function_name)}


def typed_value(data: Any) -> Any:
    """A TypedData's value as the host reads it (``ToObject``): JSON parsed, bytes as bytes."""
    kind = data.WhichOneof("data")
    if kind is None:
        return None
    if kind == "json":
        return json.loads(data.json)
    if kind in ("bytes", "stream"):
        return bytes(getattr(data, kind))
    if kind in ("string", "int", "double"):
        return getattr(data, kind)
    if kind == "collection_string":
        return list(data.collection_string.string)
    if kind == "collection_bytes":
        return [bytes(b) for b in data.collection_bytes.bytes]
    raise TypeError(f"the host cannot read TypedData of kind {kind!r} here")


def queue_messages(data: Any) -> list[bytes]:
    """The messages a queue output binding writes: an array is one message per item, as the host does."""
    value = typed_value(data)
    items = value if isinstance(value, list) else [value]
    out: list[bytes] = []
    for item in items:
        if item is None:
            continue
        if isinstance(item, bytes):
            out.append(item)
        elif isinstance(item, str):
            out.append(item.encode("utf-8"))
        else:
            out.append(json.dumps(item, separators=(",", ":")).encode("utf-8"))
    return out


def http_answer(data: Any | None) -> HttpAnswer:
    """An HTTP output (``$return``) as the host turns it into a response; nothing returned is a 204."""
    kind = None if data is None else data.WhichOneof("data")
    if kind is None:
        return HttpAnswer(204, CIMultiDict(), b"")
    if kind != "http":
        # A function returning a plain string or bytes: 200 with that body.
        value = typed_value(data)
        body = value if isinstance(value, bytes) else str(value).encode("utf-8")
        return HttpAnswer(200, CIMultiDict(), body)
    http = data.http
    body_value = typed_value(http.body) if http.HasField("body") else b""
    body = body_value if isinstance(body_value, bytes) else (
        b"" if body_value is None else str(body_value).encode("utf-8"))
    headers: CIMultiDict[str] = CIMultiDict(http.headers)
    for cookie in http.cookies:
        headers.add("Set-Cookie", set_cookie(cookie))
    return HttpAnswer(int(http.status_code or 200), headers, body, list(http.cookies))


_SAME_SITE = {1: "lax", 2: "strict", 3: "none"}


def set_cookie(cookie: Any) -> str:
    """An RpcHttpCookie as the host's ASP.NET Core writes its Set-Cookie header (attribute names lower-case)."""
    parts = [f"{cookie.name}={cookie.value}"]
    if cookie.HasField("expires"):
        when = cookie.expires.value.ToDatetime(tzinfo=dt.UTC)
        parts.append("expires=" + when.strftime("%a, %d %b %Y %H:%M:%S GMT"))
    if cookie.HasField("max_age"):
        parts.append(f"max-age={int(cookie.max_age.value)}")
    if cookie.HasField("domain") and cookie.domain.value:
        parts.append(f"domain={cookie.domain.value}")
    if cookie.HasField("path") and cookie.path.value:
        parts.append(f"path={cookie.path.value}")
    if cookie.HasField("secure") and cookie.secure.value:
        parts.append("secure")
    if cookie.same_site in _SAME_SITE:
        parts.append(f"samesite={_SAME_SITE[cookie.same_site]}")
    if cookie.HasField("http_only") and cookie.http_only.value:
        parts.append("httponly")
    return "; ".join(parts)
