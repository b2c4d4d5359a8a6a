"""Signed webhook delivery to the scheduling system: one POST, its answer classified."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from shared.common.clock import utc_now
from shared.common.retry_after import MAX_RETRY_AFTER_SECONDS, parse_retry_after
from shared.common.standard_webhooks import signing_headers
from shared.common.tls import ssl_context
from shared.common.urls import host_of, is_allowed_url
from shared.exceptions import DestinationRefusedError, PermanentError, WebhookTransientError
from shared.settings import Settings, setting_default
from shared.storage.overflow import KeptMessage
from shared.webhooks.destination import DnsResolver, GuardedTransport, host_allowed
from shared.webhooks.outbound import WebhookEvent

log = logging.getLogger(__name__)

EXCERPT_LIMIT = 500
_EXCERPT_READ_LIMIT = 4096
USER_AGENT = "va-join-links-webhooks/1.0"


@dataclass(frozen=True)
class DeadLetter:
    """A webhook that can never be delivered as it stands, with the outbox message for replay."""

    reason: str
    detail: str
    outbox_message: str
    webhook_id: str | None = None
    type: str | None = None
    status: int | None = None
    response_excerpt: str | None = None
    destination_host: str | None = None
    dead_lettered_at: str = field(default_factory=utc_now)
    # Set when the outbox message could not be copied into the record (too big, or not UTF-8 text).
    outbox_blob: KeptMessage | None = None

    def to_dict(self) -> dict[str, object]:
        """The wire form written to `webhook-dead-letter`."""
        message: dict[str, object] = ({"outboxMessage": self.outbox_message} if self.outbox_blob is None
                                      else {"outboxMessage": None, "outboxMessageBlob": self.outbox_blob.to_dict()})
        return {
            "reason": self.reason,
            "detail": self.detail,
            "status": self.status,
            "responseExcerpt": self.response_excerpt,
            "webhookId": self.webhook_id,
            "type": self.type,
            "destinationHost": self.destination_host,
            "deadLetteredAt": self.dead_lettered_at,
            **message,
        }

    def to_json(self) -> str:
        """The queue message text."""
        return json.dumps(self.to_dict())


@dataclass(frozen=True)
class DeliveryResult:
    """What became of one delivery attempt that did not raise: delivered, or a dead letter."""

    delivered: bool
    status: int | None = None
    dead_letter: DeadLetter | None = None
    destination_host: str | None = None


class WebhookSender:
    """Delivers outbox messages: signs per attempt, guards the destination, classifies the answer."""

    def __init__(self, *, secrets: Sequence[str], default_url: str | None = None,
                 allowed_hosts: Sequence[str] = (), connect_timeout: float | None = None,
                 read_timeout: float | None = None,
                 development: bool = False, ca_bundle: Path | None = None, resolver: DnsResolver | None = None,
                 user_agent: str = USER_AGENT) -> None:
        if not secrets:
            raise ValueError("WebhookSender needs at least one signing secret")
        self._secrets = tuple(secrets)
        self._default_url = default_url
        self._allowed_hosts = tuple(allowed_hosts)
        connect = float(setting_default("WEBHOOK_CONNECT_TIMEOUT_SECONDS")) if connect_timeout is None \
            else connect_timeout
        read = float(setting_default("WEBHOOK_READ_TIMEOUT_SECONDS")) if read_timeout is None else read_timeout
        self._timeout = httpx.Timeout(connect=connect, read=read, write=read, pool=connect)
        self._development = development
        self._ca_bundle = ca_bundle
        self._resolver = resolver
        self._user_agent = user_agent
        self._client: httpx.AsyncClient | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookSender:
        """The sender configured from the app settings."""
        return cls(secrets=settings.webhook_secrets, default_url=settings.webhook_url,
                   allowed_hosts=settings.webhook_allowed_hosts,
                   connect_timeout=settings.webhook_connect_timeout_seconds,
                   read_timeout=settings.webhook_read_timeout_seconds, development=settings.is_development,
                   ca_bundle=settings.tls_ca_bundle)

    def _http(self) -> httpx.AsyncClient:
        # Made on first use, inside the worker's event loop, and reused by every invocation.
        if self._client is None:
            transport = GuardedTransport(ssl_context(self._ca_bundle), allow_loopback=self._development,
                                         resolver=self._resolver)
            self._client = httpx.AsyncClient(transport=transport, timeout=self._timeout, follow_redirects=False,
                                             trust_env=False)
        return self._client

    async def aclose(self) -> None:
        """Close pooled connections."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def destination(self, event: WebhookEvent) -> str:
        """The URL to POST the event to; raise PermanentError (a dead-letter reason) when there is none."""
        if event.callback_url:
            host = host_of(event.callback_url)
            if not host or not host_allowed(host, self._allowed_hosts):
                raise PermanentError(f"callbackUrl host {host or '?'} is not on WEBHOOK_ALLOWED_HOSTS",
                                     reason="callback_not_allowed")
            url = event.callback_url
        elif self._default_url:
            url = self._default_url
        else:
            raise PermanentError("no callbackUrl and no WEBHOOK_URL configured", reason="no_destination")
        self._check_scheme(url)
        return url

    def _check_scheme(self, url: str) -> None:
        if is_allowed_url(url, development=self._development):
            return
        parts = urlsplit(url)
        raise DestinationRefusedError(
            f"{parts.scheme or '?'}://{parts.hostname or '?'} refused: webhooks go over https "
            "(plain http only to loopback in development)")

    async def deliver(self, outbox_message_text: str) -> DeliveryResult:
        """POST one outbox message; a dead letter for permanent failures, WebhookTransientError to retry."""
        started = time.perf_counter()
        try:
            event = WebhookEvent.from_message(outbox_message_text)
        except ValueError as exc:
            return self._dead(None, outbox_message_text, "invalid_outbox_message", str(exc), started)
        try:
            url = self.destination(event)
        except PermanentError as exc:
            return self._dead(event, outbox_message_text, exc.reason, exc.detail, started,
                              host=host_of(event.callback_url or self._default_url or ""))
        host = host_of(url)
        body = event.body.encode("utf-8")
        headers = signing_headers(self._secrets, event.webhook_id, body) | {
            "content-type": "application/json",
            "user-agent": self._user_agent,
        }
        try:
            async with self._http().stream("POST", url, content=body, headers=headers) as response:
                excerpt = await _read_excerpt(response)
                status = response.status_code
                retry_after_header = response.headers.get("retry-after")
        except DestinationRefusedError as exc:
            return self._dead(event, outbox_message_text, exc.reason, exc.detail, started, host=host)
        except httpx.UnsupportedProtocol as exc:
            return self._dead(event, outbox_message_text, "destination_refused", str(exc), started, host=host)
        except httpx.TimeoutException as exc:
            raise self._transient(event, host, started, "receiver_timeout",
                                  f"{type(exc).__name__} talking to {host}") from None
        except httpx.TransportError as exc:
            raise self._transient(event, host, started, "network_error",
                                  f"{type(exc).__name__} talking to {host}: {exc}") from None
        if 200 <= status < 300:
            _log(logging.INFO, "delivered", None, event, host, started, status=status)
            return DeliveryResult(True, status=status, destination_host=host)
        if status in (408, 429) or 500 <= status < 600:
            reason = {408: "receiver_timeout", 429: "receiver_throttled"}.get(status, "receiver_unavailable")
            raise self._transient(event, host, started, reason, f"{host} answered {status}", status=status,
                                  retry_after=parse_retry_after(retry_after_header, cap=MAX_RETRY_AFTER_SECONDS))
        reason = "redirect_not_followed" if 300 <= status < 400 else "receiver_rejected"
        return self._dead(event, outbox_message_text, reason, f"{host} answered {status}", started, host=host,
                          status=status, excerpt=excerpt)

    def _transient(self, event: WebhookEvent, host: str, started: float, reason: str, detail: str, *,
                   status: int | None = None, retry_after: float | None = None) -> WebhookTransientError:
        _log(logging.WARNING, "retry", reason, event, host, started, status=status, retry_after=retry_after)
        return WebhookTransientError(detail, reason=reason, retry_after=retry_after)

    def _dead(self, event: WebhookEvent | None, text: str, reason: str, detail: str, started: float, *,
              host: str | None = None, status: int | None = None, excerpt: str | None = None) -> DeliveryResult:
        _log(logging.WARNING, "dead_letter", reason, event, host, started, status=status)
        record = DeadLetter(reason=reason, detail=detail, outbox_message=text,
                            webhook_id=event.webhook_id if event else None, type=event.type if event else None,
                            status=status, response_excerpt=excerpt, destination_host=host)
        return DeliveryResult(False, status=status, dead_letter=record, destination_host=host)


async def _read_excerpt(response: httpx.Response) -> str:
    # Read a bounded prefix only: an answer is evidence for a person, not something to buffer whole.
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_raw():
        chunks.append(chunk)
        size += len(chunk)
        if size >= _EXCERPT_READ_LIMIT:
            break
    return b"".join(chunks).decode("utf-8", "replace")[:EXCERPT_LIMIT]


def _log(level: int, outcome: str, reason: str | None, event: WebhookEvent | None, host: str | None,
         started: float, **fields: object) -> None:
    duration_ms = round((time.perf_counter() - started) * 1000, 1)
    log.log(level, "webhook %s: outcome=%s reason=%s host=%s duration_ms=%.1f",
            event.webhook_id if event else "-", outcome, reason or "-", host or "-", duration_ms,
            extra={
                "webhook_id": event.webhook_id if event else None,
                "webhook_type": event.type if event else None,
                "destination_host": host,
                "outcome": outcome,
                "reason": reason,
                "duration_ms": duration_ms,
                **fields,
            })
