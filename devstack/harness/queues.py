"""Queue triggers: batched receives under a renewed lease, newBatchThreshold, retries and poison queues."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from devstack.harness.index import HostFunction
from devstack.harness.invocation import Invocations
from devstack.harness.queue_rest import QueueRestClient, ReceivedMessage
from devstack.harness.rpc import QueueTriggerMessage, queue_invocation

# One logger for the whole harness: tests/log_scan.py scans its records for credentials.
log = logging.getLogger("devstack.harness")
# After a failed renewal the host tries again sooner (its LinearSpeedupStrategy); never more often than this.
MIN_RENEWAL_SECONDS = 1.0


class MessageLease:
    """A received message kept hidden while its invocation runs: renewed at half the lease, as the host does.

    The Functions host receives with a 10-minute visibility timeout and, from a timer started at half of
    it, updates the message's visibility again for as long as the invocation runs (the queue listener's
    UpdateQueueMessageVisibilityCommand). Every update returns a new pop receipt, which the message keeps,
    so the final delete or retry uses the current one.
    """

    def __init__(self, queues: QueueRestClient, queue: str, message: ReceivedMessage, seconds: int) -> None:
        self._queues, self._queue, self.message, self._seconds = queues, queue, message, seconds
        self._closed = False
        self._renewing: asyncio.Task[None] | None = None
        self.renewals = 0
        self._handle = asyncio.get_running_loop().call_later(seconds / 2, self._due)

    def _due(self) -> None:
        if not self._closed:
            self._renewing = asyncio.create_task(self._renew())

    async def _renew(self) -> None:
        interval = self._seconds / 2
        try:
            await self._queues.update_visibility(self._queue, self.message, self._seconds)
            self.renewals += 1
        except ResourceNotFoundError:
            # Deleted or received by someone else after all: nothing left to keep hidden.
            log.warning("message %s: its lease could not be renewed (gone)", self.message.id)
            return
        except Exception as exc:
            interval = max(MIN_RENEWAL_SECONDS, interval / 4)
            log.warning("message %s: lease renewal failed (%s); retrying in %.0fs", self.message.id,
                        type(exc).__name__, interval)
        if not self._closed:
            self._handle = asyncio.get_running_loop().call_later(interval, self._due)

    async def release(self) -> None:
        """Stop renewing; wait for a renewal under way, so the pop receipt is the current one."""
        self._closed = True
        self._handle.cancel()
        if self._renewing is not None and not self._renewing.done():
            with contextlib.suppress(Exception):
                await self._renewing


class QueueTriggers(Invocations):
    """Poll each queue-triggered function's queue and settle every message as the host does.

    Part of LocalHost, whose __init__ sets the attributes declared here.
    """

    poll_interval: float
    max_poll_interval: float
    lease_seconds: int
    stats: dict[str, dict[str, int]]
    _stopping: asyncio.Event

    async def _poll(self, fn: HostFunction) -> None:
        settings = self.queue_settings
        queue = self._trigger_queue(fn)
        delay = self.poll_interval
        while not self._stopping.is_set():
            # Like the host: fetch a new batch only once in-flight work has dropped to newBatchThreshold.
            while fn.in_flight > settings.new_batch_threshold and not self._stopping.is_set():
                fn.wakeup.clear()
                await fn.wakeup.wait()
            if self._stopping.is_set():
                return
            fn.receiving = True
            try:
                messages = await self._queues.receive(queue, settings.batch_size, self.lease_seconds)
            except ResourceNotFoundError:
                messages = []
            except Exception:
                log.exception("%s: receiving from %s failed", fn.name, queue)
                messages = []
            try:
                for message in messages:
                    fn.in_flight += 1
                    self._track(asyncio.create_task(self._process_message(fn, queue, message)))
            finally:
                fn.receiving = False
            if messages:
                delay = self.poll_interval
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(delay * 2, self.max_poll_interval)

    async def _process_message(self, fn: HostFunction, queue: str, message: ReceivedMessage) -> None:
        settings = self.queue_settings
        started = time.perf_counter()
        outcome = "succeeded"
        lease = MessageLease(self._queues, queue, message, self.lease_seconds)
        try:
            if message.dequeue_count > settings.max_dequeue_count:
                # Received more often than allowed (e.g. a crashed worker): the host poisons it unrun.
                await lease.release()
                await self._poison(fn, queue, message)
                outcome = "poisoned-unrun"
                return
            body = self._decode(message.content)
            if body is None:
                # As the host does (its MessageDecodingFailed handler): straight to poison, never invoked.
                await lease.release()
                log.warning("%s: message %s cannot be decoded as %s; moving it to poison", fn.name, message.id,
                            settings.message_encoding)
                await self._poison(fn, queue, message)
                outcome = "undecodable+poisoned"
                return
            stats = self.stats[fn.name]
            stats["invoked"] += 1
            try:
                await self._invoke(fn, self._trigger_value(fn, message, body))
            except Exception:
                await lease.release()
                stats["failed"] += 1
                log.exception(
                    "%s: invocation failed for message %s (dequeue count %d)",
                    fn.name, message.id, message.dequeue_count,
                )
                if message.dequeue_count >= settings.max_dequeue_count:
                    await self._poison(fn, queue, message)
                    outcome = "failed+poisoned"
                else:
                    await self._queues.update_visibility(queue, message, int(settings.visibility_timeout))
                    outcome = "failed+retry"
                return
            await lease.release()
            await self._queues.delete(queue, message)
            stats["succeeded"] += 1
        except Exception:
            outcome = "host-error"
            log.exception("%s: settling message %s failed", fn.name, message.id)
        finally:
            await lease.release()
            fn.in_flight -= 1
            fn.wakeup.set()
            log.info(
                "%s id=%s dequeue=%d outcome=%s %.0fms",
                fn.name, message.id, message.dequeue_count, outcome, (time.perf_counter() - started) * 1000,
            )

    async def _poison(self, fn: HostFunction, queue: str, message: ReceivedMessage) -> None:
        poison = await self._ensure_queue(f"{queue}-poison")
        # The message text is copied as received, so it keeps its encoding.
        await self._queues.send(poison, message.content)
        await self._queues.delete(queue, message)
        self.stats[fn.name]["poisoned"] += 1
        log.warning("%s: message %s moved to %s", fn.name, message.id, poison)

    def _trigger_value(self, fn: HostFunction, message: ReceivedMessage,
                       body: bytes) -> tuple[list[Any], dict[str, Any]]:
        return queue_invocation(self.worker.protos, fn.name, fn.trigger, QueueTriggerMessage(
            id=message.id, body=body, dequeue_count=message.dequeue_count, pop_receipt=message.pop_receipt,
            inserted_on=message.inserted_on, expires_on=message.expires_on, next_visible_on=message.next_visible_on))
