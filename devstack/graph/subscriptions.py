"""Change-notification subscriptions on calendar events and their delivery, as Graph v1.0 documents them
("Receive change notifications through webhooks", "Reduce missing subscriptions and change notifications").

The SubscriptionHub keeps the subscriptions, listens to every change of a calendar event (GraphEmulator.notify),
and delivers in the background of the emulator's aiohttp app:

- change notifications are batched per notification URL (changes within `batch_window_seconds` go in one POST,
  up to `max_batch`), at least once (a duplicate is a fault knob), and retried with exponential back-off when the
  endpoint answers non-2xx or not within `delivery_timeout_seconds` (Graph: 3 s), for `retry_for_seconds`
  (Graph: up to 4 hours), then dropped, and a `missed` lifecycle notification follows;
- lifecycle notifications (`reauthorizationRequired`, `subscriptionRemoved`, `missed`) go to the
  lifecycleNotificationUrl, retried the same way; a subscription without one gets none (as documented);
- an expired subscription stops delivering and disappears; `reauthorizationRequired` is sent when the creating
  access token nears expiry and when the subscription nears expiry.

Time: expiry and reauthorization follow `now()`, the wall clock plus `clock_offset_seconds` (PUT
/_admin/subscriptions/config), so tests can jump ahead; delivery back-off runs on the event loop's clock.
The Graph endpoints are in `subscription_endpoints.py`, the admin calls in `subscriptions_admin.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
import time
import uuid
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from devstack.graph.emulator import GraphEmulator

CHANGE_TYPES = ("created", "updated", "deleted")
LIFECYCLE_EVENTS = ("reauthorizationRequired", "subscriptionRemoved", "missed")
GRAPH_ROOT = "https://graph.microsoft.com/v1.0"
ATTEMPTS_KEPT = 2000
LOG = logging.getLogger("devstack.graph.subscriptions")


@dataclass
class HubConfig:
    """Timings and limits; Graph's values by default, shrunk by tests and chaos runs."""

    validation_timeout_seconds: float = 10.0
    delivery_timeout_seconds: float = 3.0
    batch_window_seconds: float = 0.2
    max_batch: int = 50
    # POSTs in flight at once to one URL (Graph publishes in parallel; notifications may arrive out of order).
    concurrency_per_url: int = 4
    retry_initial_seconds: float = 10.0
    retry_max_interval_seconds: float = 600.0
    retry_for_seconds: float = 4 * 3600.0
    max_expiration_minutes: int = 10080
    min_expiration_minutes: int = 45
    max_per_mailbox: int = 1000
    # reauthorizationRequired this long before the subscription's expiry and before its access token's expiry.
    reauthorize_before_expiry_seconds: float = 3600.0
    reauthorize_before_token_expiry_seconds: float = 900.0
    reauthorize_interval_seconds: float = 900.0
    # Delivery pauses (changes are lost) this long after an unanswered reauthorizationRequired; None: never.
    pause_unanswered_reauthorization_seconds: float | None = None
    # Graph requires a lifecycleNotificationUrl beyond 1 hour only for Teams resources; on for a stricter check.
    require_lifecycle_url_over_one_hour: bool = False
    # Graph's throttling of slow endpoints: once an endpoint has had `throttle_min_notifications` in the current
    # window, 10 % answered slowly (over 2.9 s of the 3 s) delays its notifications (and retries) by 10 minutes;
    # 15 % drops them. The counts are flushed every `throttle_window_seconds`.
    throttle_slow_endpoints: bool = True
    throttle_min_notifications: int = 100
    throttle_slow_percent: float = 10.0
    throttle_drop_percent: float = 15.0
    throttle_delay_seconds: float = 600.0
    throttle_window_seconds: float = 600.0
    clock_offset_seconds: float = 0.0
    tick_seconds: float = 0.25


@dataclass
class DeliveryFaults:
    """Delivery faults (PUT /_admin/subscriptions/faults)."""

    drop_next: int = 0
    missed_on_drop: bool = False
    duplicate_next: int = 0
    duplicate_rate: float = 0.0
    delay_ms: float = 0.0
    reorder: bool = False
    validation_timeout_next: int = 0
    seed: int | None = None

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def as_dict(self) -> dict[str, Any]:
        """JSON form, as PUT /_admin/subscriptions/faults takes it."""
        return {k: v for k, v in asdict(self).items() if k != "rng"}


@dataclass
class Subscription:
    """One subscription on a mailbox's events."""

    id: str
    resource: str
    owner: str
    tenant_id: str
    application_id: str
    change_types: tuple[str, ...]
    notification_url: str
    lifecycle_url: str | None
    client_state: str | None
    expiration: datetime
    immutable_ids: bool
    latest_tls: str
    token_expires: float
    # The unanswered challenge (cleared by reauthorize or renew), the last challenge sent, and the expiry the
    # near-expiry challenge was sent for.
    reauthorization_sent_at: datetime | None = None
    last_challenge_at: datetime | None = None
    challenged_expiry: datetime | None = None
    stats: Counter[str] = field(default_factory=Counter)

    def resource_doc(self) -> dict[str, Any]:
        """The subscription resource as Graph returns it."""
        return {"id": self.id, "resource": self.resource, "applicationId": self.application_id,
                "changeType": ",".join(self.change_types), "clientState": self.client_state,
                "notificationUrl": self.notification_url, "notificationQueryOptions": None,
                "lifecycleNotificationUrl": self.lifecycle_url, "expirationDateTime": wire_time(self.expiration),
                "creatorId": self.owner, "includeResourceData": None, "latestSupportedTlsVersion": self.latest_tls,
                "encryptionCertificate": None, "encryptionCertificateId": None, "notificationUrlAppId": None,
                "notificationContentType": None}


@dataclass
class Pending:
    """A notification on its way: one item of a POSTed `value` array."""

    subscription_id: str
    url: str
    kind: str  # "change" or "lifecycle"
    payload: dict[str, Any]
    first_at: float
    next_at: float
    attempts: int = 0
    duplicate: bool = False


@dataclass
class EndpointHealth:
    """Answers of one notification URL in the current throttling window."""

    window_start: float
    notifications: int = 0
    slow: int = 0

    def state(self, config: HubConfig) -> str:
        """normal, throttled (delayed) or dropping, by the share of slow answers."""
        if not config.throttle_slow_endpoints or self.notifications < config.throttle_min_notifications:
            return "normal"
        share = 100.0 * self.slow / self.notifications
        if share >= config.throttle_drop_percent:
            return "dropping"
        return "throttled" if share >= config.throttle_slow_percent else "normal"


def wire_time(value: datetime) -> str:
    """Graph's DateTimeOffset form (seven fractional digits, Z)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


class SubscriptionHub:
    """The subscriptions of the emulated tenants and the delivery of their notifications."""

    def __init__(self, emu: GraphEmulator, ca_pem: Path | str | None = None) -> None:
        self.emu = emu
        self.config = HubConfig()
        self.faults = DeliveryFaults()
        self.subscriptions: dict[str, Subscription] = {}
        # Gone subscriptions (expired, deleted, removed), kept for the admin listing.
        self.gone: dict[str, tuple[Subscription, str]] = {}
        self.pending: list[Pending] = []
        self.attempts: deque[dict[str, Any]] = deque(maxlen=ATTEMPTS_KEPT)
        self.totals: Counter[str] = Counter()
        self._ca_pem = ca_pem
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        # POSTs on their way, by URL (at most `concurrency_per_url` each).
        self._inflight: dict[str, set[asyncio.Task[None]]] = {}
        self.endpoints: dict[str, EndpointHealth] = {}
        emu.change_listeners.append(self.on_change)

    # --- clock and lifecycle of the hub ------------------------------------------------------------

    def now(self) -> datetime:
        """The hub's time: the wall clock plus the configured offset."""
        return datetime.now(UTC) + timedelta(seconds=self.config.clock_offset_seconds)

    def wall_seconds(self) -> float:
        """now() as a Unix time, to compare with a token's `exp`."""
        return time.time() + self.config.clock_offset_seconds

    async def start(self, _: web.Application | None = None) -> None:
        """Open the delivery session and start the delivery loop (aiohttp on_startup)."""
        ctx = ssl.create_default_context(cafile=str(self._ca_pem) if self._ca_pem else None)
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=64))
        self._task = asyncio.create_task(self._run(), name="graph-subscriptions")

    async def stop(self, _: web.Application | None = None) -> None:
        """Stop the delivery loop and what it has in flight, then close the session (aiohttp on_cleanup)."""
        tasks = [t for t in (self._task, *(t for ts in self._inflight.values() for t in ts)) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None
        self._inflight.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def session(self) -> aiohttp.ClientSession:
        """The HTTP session notifications and validation requests go out on."""
        if self._session is None:
            raise RuntimeError("the subscription hub is not started")
        return self._session

    # --- subscriptions ------------------------------------------------------------------------------

    def add(self, sub: Subscription) -> None:
        """Store a validated subscription."""
        self.subscriptions[sub.id] = sub
        self.totals["created"] += 1

    def active_for_mailbox(self, owner: str) -> int:
        """Active subscriptions on one mailbox (across applications: Graph's limit counts them all)."""
        return sum(1 for s in self.subscriptions.values() if s.owner == owner)

    def remove(self, sub_id: str, reason: str) -> Subscription | None:
        """Take a subscription out (deleted, expired, removed); its pending change notifications go with it."""
        sub = self.subscriptions.pop(sub_id, None)
        if sub is None:
            return None
        self.gone[sub_id] = (sub, reason)
        self.pending = [p for p in self.pending if not (p.subscription_id == sub_id and p.kind == "change")]
        self.totals[reason] += 1
        return sub

    def reauthorized(self, sub: Subscription, token_expires: float) -> None:
        """The app answered (reauthorize or renew): the challenge is met, and the new token's expiry counts."""
        sub.reauthorization_sent_at = None
        sub.token_expires = token_expires

    # --- changes in, notifications out -----------------------------------------------------------------

    def on_change(self, event: Mapping[str, Any], change_type: str) -> None:
        """A calendar event changed: one change notification per subscription on its mailbox."""
        for sub in list(self.subscriptions.values()):
            if sub.owner != event["organizer"] or sub.tenant_id != event["tenant_id"]:
                continue
            if change_type not in sub.change_types or sub.expiration <= self.now():
                continue
            if self._paused(sub):
                sub.stats["lost_while_paused"] += 1
                continue
            self.queue_change(sub, event, change_type)

    def queue_change(self, sub: Subscription, event: Mapping[str, Any], change_type: str) -> None:
        """Queue one change notification, unless a drop fault eats it."""
        sub.stats["notifications"] += 1
        if self.faults.drop_next > 0:
            self.faults.drop_next -= 1
            sub.stats["dropped"] += 1
            self.totals["dropped"] += 1
            if self.faults.missed_on_drop:
                self.queue_lifecycle(sub, "missed")
            return
        # With REST ids, a removal names the id the event had in the calendar (it has a new one in Deleted Items).
        event_id = event["immutable_id"] if sub.immutable_ids else \
            event.get("calendar_rest_id") if event["folder"] != "calendar" else event["rest_id"]
        path = f"Users/{sub.owner}/Events/{event_id}"
        payload = {
            "subscriptionId": sub.id, "subscriptionExpirationDateTime": wire_time(sub.expiration),
            "changeType": change_type, "resource": path,
            "resourceData": {"@odata.type": "#Microsoft.Graph.Event", "@odata.id": path,
                             "@odata.etag": f'W/"{event["changeKey"]}"', "id": event_id},
            "clientState": sub.client_state, "tenantId": sub.tenant_id,
        }
        state = self.endpoint_state(sub.notification_url)
        if state == "dropping":
            sub.stats["dropped_throttled"] += 1
            self.totals["dropped"] += 1
            self.queue_lifecycle(sub, "missed")
            return
        self._enqueue(sub.id, sub.notification_url, "change", payload,
                      delay=self.config.throttle_delay_seconds if state == "throttled" else None)

    def endpoint_state(self, url: str) -> str:
        """The URL's throttling state now (normal, throttled, dropping); the window is flushed when it is over."""
        health = self.endpoints.get(url)
        if health is None:
            return "normal"
        if asyncio.get_running_loop().time() - health.window_start >= self.config.throttle_window_seconds:
            del self.endpoints[url]
            return "normal"
        return health.state(self.config)

    def queue_lifecycle(self, sub: Subscription, lifecycle_event: str) -> bool:
        """Queue a lifecycle notification; a subscription without a lifecycleNotificationUrl gets none."""
        if not sub.lifecycle_url:
            sub.stats[f"lifecycle_unsent_{lifecycle_event}"] += 1
            return False
        sub.stats[f"lifecycle_{lifecycle_event}"] += 1
        payload = {"subscriptionId": sub.id, "subscriptionExpirationDateTime": wire_time(sub.expiration),
                   "tenantId": sub.tenant_id, "clientState": sub.client_state, "lifecycleEvent": lifecycle_event}
        self._enqueue(sub.id, sub.lifecycle_url, "lifecycle", payload, delay=0.0)
        return True

    def fire_lifecycle(self, sub: Subscription, lifecycle_event: str) -> bool:
        """What Graph does on this lifecycle event: notify, and for subscriptionRemoved, remove the subscription."""
        if lifecycle_event == "reauthorizationRequired":
            sub.reauthorization_sent_at = sub.last_challenge_at = self.now()
        sent = self.queue_lifecycle(sub, lifecycle_event)
        if lifecycle_event == "subscriptionRemoved":
            self.remove(sub.id, "removed")
        return sent

    def _enqueue(self, sub_id: str, url: str, kind: str, payload: dict[str, Any],
                 delay: float | None = None) -> None:
        now = asyncio.get_running_loop().time()
        wait = self.config.batch_window_seconds if delay is None else delay
        if self.faults.delay_ms > 0 and kind == "change":
            extra = self.faults.delay_ms / 1000
            wait += self.faults.rng.uniform(0, extra) if self.faults.reorder else extra
        self.pending.append(Pending(sub_id, url, kind, payload, first_at=now, next_at=now + wait))
        self._wake.set()

    def _paused(self, sub: Subscription) -> bool:
        grace = self.config.pause_unanswered_reauthorization_seconds
        sent = sub.reauthorization_sent_at
        return grace is not None and sent is not None and (self.now() - sent).total_seconds() >= grace

    # --- the delivery loop -----------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            timeout = self.config.tick_seconds
            try:
                self._housekeeping()
                now = loop.time()
                self._launch_due(now)
                waiting = [p.next_at for p in self.pending if self._free(p.url)]
                if waiting:
                    timeout = max(0.0, min(timeout, min(waiting) - now))
            except Exception:  # the loop outlives one bad round: delivery must not die silently
                LOG.exception("subscription delivery round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _housekeeping(self) -> None:
        """Expire subscriptions and send the reauthorization challenges that are due."""
        now = self.now()
        wall = self.wall_seconds()
        for sub in list(self.subscriptions.values()):
            if sub.expiration <= now:
                self.remove(sub.id, "expired")
                continue
            near_expiry = (sub.expiration - now).total_seconds() <= self.config.reauthorize_before_expiry_seconds
            expiry_due = near_expiry and sub.challenged_expiry != sub.expiration
            # An expiring token is challenged again every interval (Graph: every 15 minutes in its last hour)
            # until a reauthorize or renewal brings a token further from expiry.
            since = None if sub.last_challenge_at is None else (now - sub.last_challenge_at).total_seconds()
            token_due = (sub.token_expires - wall <= self.config.reauthorize_before_token_expiry_seconds
                         and (since is None or since >= self.config.reauthorize_interval_seconds))
            if expiry_due or token_due:  # one challenge, whatever the number of reasons that came due together
                if near_expiry:
                    sub.challenged_expiry = sub.expiration
                self.fire_lifecycle(sub, "reauthorizationRequired")

    def _free(self, url: str) -> bool:
        return len(self._inflight.get(url, ())) < self.config.concurrency_per_url

    def _launch_due(self, now: float) -> None:
        """One POST per URL whose oldest notification is due, taking along what is queued within the window."""
        due_urls = {p.url for p in self.pending if p.next_at <= now and self._free(p.url)}
        horizon = now + self.config.batch_window_seconds
        by_url: dict[str, list[Pending]] = {}
        for p in self.pending:
            if p.url in due_urls and p.next_at <= horizon:
                by_url.setdefault(p.url, []).append(p)
        for url, due in by_url.items():
            batch = due[: self.config.max_batch]
            taken = {id(p) for p in batch}
            self.pending = [p for p in self.pending if id(p) not in taken]
            if self.faults.reorder:
                self.faults.rng.shuffle(batch)
            self._inflight.setdefault(url, set()).add(asyncio.create_task(self._deliver(url, batch)))

    async def _deliver(self, url: str, batch: list[Pending]) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        body = json.dumps({"value": [p.payload for p in batch]}).encode()
        status: int | None = None
        try:
            async with self.session().post(
                    url, data=body, headers={"Content-Type": "application/json; charset=utf-8"},
                    timeout=aiohttp.ClientTimeout(total=self.config.delivery_timeout_seconds)) as resp:
                await resp.read()
                status = resp.status
            outcome = "delivered" if 200 <= status < 300 else "failed"
        except TimeoutError:
            outcome = "timeout"
        except aiohttp.ClientError:
            outcome = "unreachable"
        finally:
            running = self._inflight.get(url, set())
            task = asyncio.current_task()
            if task is not None:
                running.discard(task)
            if not running:
                self._inflight.pop(url, None)
            self._wake.set()
        elapsed = loop.time() - started
        self._record(url, batch, status, outcome, elapsed)
        if outcome == "delivered":
            self._delivered(batch)
        else:
            self._failed(batch, loop.time())

    def _record(self, url: str, batch: list[Pending], status: int | None, outcome: str, elapsed: float) -> None:
        self.totals["attempts"] += 1
        self.attempts.append({
            "at": wire_time(self.now()), "url": url, "kind": sorted({p.kind for p in batch}),
            "subscriptionIds": sorted({p.subscription_id for p in batch}), "count": len(batch),
            "attempt": max(p.attempts for p in batch) + 1, "status": status, "outcome": outcome,
            "elapsed_ms": round(elapsed * 1000, 1), "duplicates": sum(p.duplicate for p in batch),
            "value": [p.payload for p in batch]})
        for p in batch:
            self._stats(p.subscription_id)["attempts"] += 1
        now = asyncio.get_running_loop().time()
        self.endpoint_state(url)  # flushes an elapsed window
        health = self.endpoints.setdefault(url, EndpointHealth(window_start=now))
        health.notifications += len(batch)
        # Graph: a publishing time over 2,900 ms (of its 3 s timeout) is a slow answer.
        if outcome == "timeout" or elapsed > self.config.delivery_timeout_seconds * 2.9 / 3:
            health.slow += len(batch)

    def _delivered(self, batch: list[Pending]) -> None:
        for p in batch:
            stats = self._stats(p.subscription_id)
            stats["delivered"] += 1
            self.totals["delivered"] += 1
            if p.duplicate:
                stats["duplicates"] += 1
                continue
            if p.kind == "change" and self._duplicate():
                # At least once: the same notification once more, in a later POST.
                now = asyncio.get_running_loop().time()
                self.pending.append(Pending(p.subscription_id, p.url, p.kind, p.payload, first_at=now,
                                            next_at=now + self.config.batch_window_seconds, duplicate=True))
                self._wake.set()

    def _duplicate(self) -> bool:
        if self.faults.duplicate_next > 0:
            self.faults.duplicate_next -= 1
            return True
        return self.faults.duplicate_rate > 0 and self.faults.rng.random() < self.faults.duplicate_rate

    def _failed(self, batch: list[Pending], now: float) -> None:
        missed: set[str] = set()
        for p in batch:
            p.attempts += 1
            stats = self._stats(p.subscription_id)
            stats["failures"] += 1
            if now - p.first_at >= self.config.retry_for_seconds:
                stats["dropped"] += 1
                self.totals["dropped"] += 1
                if p.kind == "change":
                    missed.add(p.subscription_id)
                continue
            if p.kind == "change" and p.subscription_id not in self.subscriptions:
                continue  # the subscription went meanwhile
            backoff = min(self.config.retry_initial_seconds * 2 ** (p.attempts - 1),
                          self.config.retry_max_interval_seconds)
            if self.endpoint_state(p.url) != "normal":
                backoff = self.config.throttle_delay_seconds  # Graph: failed ones on a throttled endpoint: 10 min
            p.next_at = now + backoff
            stats["retries"] += 1
            self.pending.append(p)
        for sub_id in missed:
            sub = self.subscriptions.get(sub_id)
            if sub is not None:
                self.queue_lifecycle(sub, "missed")

    def _stats(self, sub_id: str) -> Counter[str]:
        sub = self.subscriptions.get(sub_id) or (self.gone.get(sub_id) or (None, ""))[0]
        return sub.stats if sub is not None else Counter()

    def inflight_urls(self) -> list[str]:
        """URLs a POST is on its way to."""
        return list(self._inflight)

    def wake(self) -> None:
        """Have the delivery loop look again (after a config change)."""
        self._wake.set()

    def clear(self) -> None:
        """Forget every subscription and pending notification (no lifecycle notifications)."""
        self.subscriptions.clear()
        self.gone.clear()
        self.pending.clear()
        self.attempts.clear()
        self.totals.clear()

    def reset_knobs(self) -> None:
        """Graph's timings and no faults again (POST /_admin/reset); subscriptions stay."""
        self.config = HubConfig()
        self.faults = DeliveryFaults()
        self._wake.set()

    def new_id(self) -> str:
        """A subscription id (a GUID, as Graph's)."""
        return str(uuid.uuid4())


SUBSCRIPTIONS_KEY = web.AppKey("graph_subscriptions", SubscriptionHub)
