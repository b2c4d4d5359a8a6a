"""Change-notification subscriptions on an organizer's calendar, and its calendarView delta, as the organizer.

Graph v1.0 (../shared/FACTS.md, "Calendar-backed meetings and change notifications"): `POST /subscriptions` with
resource `me/events`, changeType `created,updated,deleted`, a clientState of at most 128 characters, and
`lifecycleNotificationUrl` (it can only be set at creation); expiry at most 10,080 minutes for Outlook events,
renewed with `PATCH /subscriptions/{id}` (expirationDateTime) or `POST .../reauthorize`; `DELETE` removes one.
Every call carries `Prefer: IdType="ImmutableId"`, so the ids in notifications are the immutable ids the
appointment records keep. Outlook allows 4 concurrent requests per app per mailbox: every call of this path
goes through `MailboxLimiter`, one semaphore per organizer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from shared.common.clock import parse_timestamp_or_none
from shared.exceptions import GraphRequestError, MeetingNotFoundError, PermanentError, SubscriptionLimitError
from shared.graph.calendar import send_json
from shared.graph.gateway import GraphGateway, _segment
from shared.identity.tokens import SCOPE_CALENDAR

T = TypeVar("T")
RESOURCE = "me/events"
CHANGE_TYPES = "created,updated,deleted"
# Outlook: 4 concurrent requests per app per mailbox.
MAILBOX_CONCURRENCY = 4
# Graph's refusal when a mailbox has its 1,000 subscriptions (all apps together) reads like these.
_LIMIT_WORDS = ("maximum number of subscriptions", "subscriptions limit", "limit of 1000", "quota")


class MailboxLimiter:
    """At most MAILBOX_CONCURRENCY Graph requests at once per organizer (per worker process)."""

    def __init__(self, concurrency: int = MAILBOX_CONCURRENCY) -> None:
        self._concurrency = concurrency
        self._gates: dict[str, asyncio.Semaphore] = {}

    @asynccontextmanager
    async def slot(self, organizer: str) -> AsyncIterator[None]:
        """Hold one of the organizer's request slots."""
        gate = self._gates.setdefault(organizer.strip().lower(), asyncio.Semaphore(self._concurrency))
        async with gate:
            yield

    async def run(self, organizer: str, call: Callable[[], Awaitable[T]]) -> T:
        """`call` inside one of the organizer's slots."""
        async with self.slot(organizer):
            return await call()


@dataclass(frozen=True)
class Subscription:
    """What the app keeps of Graph's answer."""

    id: str
    expires_at: datetime | None


@dataclass(frozen=True)
class DeltaRound:
    """One calendarView delta round: the changed items (as Graph sent them) and the link the next round starts from."""

    items: list[dict[str, Any]]
    delta_link: str | None


class SubscriptionClient:
    """Subscriptions and delta rounds through the gateway's client and classification, each call limited per mailbox."""

    def __init__(self, graph: GraphGateway, limiter: MailboxLimiter) -> None:
        self._graph = graph
        self._limiter = limiter

    @property
    def _root(self) -> str:
        return self._graph.my_meetings_url.rsplit("/", 2)[0]

    async def create(self, organizer: str, tenant: str | None, *, notification_url: str, lifecycle_url: str,
                     client_state: str, expires: datetime) -> Subscription:
        """POST /subscriptions on me/events; a full mailbox is SubscriptionLimitError (never retried blindly)."""
        from msgraph.generated.models.subscription import Subscription as Body
        from msgraph.generated.subscriptions.subscriptions_request_builder import SubscriptionsRequestBuilder

        body = Body(odata_type=None, change_type=CHANGE_TYPES, resource=RESOURCE, notification_url=notification_url,
                    lifecycle_notification_url=lifecycle_url, client_state=client_state,
                    expiration_date_time=expires)
        builder = SubscriptionsRequestBuilder(self._graph.client.request_adapter, f"{self._root}/subscriptions")
        try:
            doc = await self._send(organizer, tenant, builder.to_post_request_information(body))
        except (GraphRequestError, PermanentError) as exc:
            if any(word in exc.detail.lower() for word in _LIMIT_WORDS):
                raise SubscriptionLimitError(exc.detail) from exc
            raise
        return _subscription(doc)

    async def renew(self, organizer: str, tenant: str | None, subscription_id: str, expires: datetime) -> Subscription:
        """PATCH expirationDateTime; MeetingNotFoundError when Graph no longer has the subscription."""
        from msgraph.generated.models.subscription import Subscription as Body
        from msgraph.generated.subscriptions.item.subscription_item_request_builder import (
            SubscriptionItemRequestBuilder,
        )

        builder = SubscriptionItemRequestBuilder(self._graph.client.request_adapter, self._item(subscription_id))
        body = Body(odata_type=None, expiration_date_time=expires)
        doc = await self._send(organizer, tenant, builder.to_patch_request_information(body))
        return _subscription(doc or {"id": subscription_id, "expirationDateTime": expires.isoformat()})

    async def reauthorize(self, organizer: str, tenant: str | None, subscription_id: str) -> None:
        """POST /subscriptions/{id}/reauthorize (answers reauthorizationRequired)."""
        from msgraph.generated.subscriptions.item.reauthorize.reauthorize_request_builder import (
            ReauthorizeRequestBuilder,
        )

        builder = ReauthorizeRequestBuilder(self._graph.client.request_adapter,
                                            self._item(subscription_id) + "/reauthorize")
        await self._send(organizer, tenant, builder.to_post_request_information())

    async def delete(self, organizer: str, tenant: str | None, subscription_id: str) -> bool:
        """DELETE /subscriptions/{id}; False when it was already gone."""
        from msgraph.generated.subscriptions.item.subscription_item_request_builder import (
            SubscriptionItemRequestBuilder,
        )

        builder = SubscriptionItemRequestBuilder(self._graph.client.request_adapter, self._item(subscription_id))
        try:
            await self._send(organizer, tenant, builder.to_delete_request_information())
        except MeetingNotFoundError:
            return False
        return True

    async def delta(self, organizer: str, tenant: str | None, delta_link: str | None, *, start: datetime,
                    end: datetime) -> DeltaRound:
        """Every page of one calendarView delta round: from `delta_link`, or a first round over [start, end]."""
        from msgraph.generated.users.item.calendar_view.delta.delta_request_builder import DeltaRequestBuilder

        url = delta_link or (f"{self._root}/me/calendarView/delta?startDateTime={_segment(_wire(start))}"
                             f"&endDateTime={_segment(_wire(end))}")
        items: list[dict[str, Any]] = []
        for _ in range(1000):  # a page bound, never a loop on a server that keeps sending nextLink
            builder = DeltaRequestBuilder(self._graph.client.request_adapter, url)
            doc = await self._send(organizer, tenant, builder.to_get_request_information())
            doc = doc if isinstance(doc, dict) else {}
            items.extend(item for item in doc.get("value") or [] if isinstance(item, dict))
            if isinstance(doc.get("@odata.nextLink"), str):
                url = doc["@odata.nextLink"]
                continue
            link = doc.get("@odata.deltaLink")
            return DeltaRound(items, link if isinstance(link, str) else None)
        raise GraphRequestError("calendarView delta kept sending nextLink")

    def _item(self, subscription_id: str) -> str:
        return f"{self._root}/subscriptions/{_segment(subscription_id)}"

    async def _send(self, organizer: str, tenant: str | None, request: Any) -> Any:
        return await self._limiter.run(
            organizer, lambda: send_json(self._graph, organizer, None, tenant, request, SCOPE_CALENDAR))


def _wire(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _subscription(doc: Any) -> Subscription:
    if not isinstance(doc, dict) or not doc.get("id"):
        raise GraphRequestError("Graph returned no subscription")
    return Subscription(str(doc["id"]), parse_timestamp_or_none(str(doc.get("expirationDateTime") or "")))
