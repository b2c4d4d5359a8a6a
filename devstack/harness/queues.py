"""Queue triggers: batched receives under a lease, newBatchThreshold, retries and poison queues."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.functions.queue import QueueMessage as TriggerQueueMessage
from azure.storage.queue.aio import QueueClient

from devstack.harness.index import HostFunction
from devstack.harness.invocation import Invocations

# One logger for the whole harness: tests/log_scan.py scans its records for credentials.
log = logging.getLogger("devstack.harness")


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
        client = self._queue(queue)
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
                messages = [
                    m async for m in client.receive_messages(
                        max_messages=settings.batch_size,
                        messages_per_page=settings.batch_size,
                        visibility_timeout=self.lease_seconds,
                    )
                ]
            except ResourceNotFoundError:
                messages = []
            except Exception:
                log.exception("%s: receiving from %s failed", fn.name, queue)
                messages = []
            try:
                for message in messages:
                    fn.in_flight += 1
                    self._track(asyncio.create_task(self._process_message(fn, client, message)))
            finally:
                fn.receiving = False
            if messages:
                delay = self.poll_interval
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(delay * 2, self.max_poll_interval)

    async def _process_message(self, fn: HostFunction, client: QueueClient, message: Any) -> None:
        settings = self.queue_settings
        started = time.perf_counter()
        outcome = "succeeded"
        try:
            if message.dequeue_count > settings.max_dequeue_count:
                # Received more often than allowed (e.g. a crashed worker): the host poisons it unrun.
                await self._poison(fn, client, message)
                outcome = "poisoned-unrun"
                return
            stats = self.stats[fn.name]
            stats["invoked"] += 1
            try:
                body = self._decode(message.content or "")
                await self._invoke(fn, self._trigger_value(fn, message, body))
            except Exception:
                stats["failed"] += 1
                log.exception(
                    "%s: invocation failed for message %s (dequeue count %d)",
                    fn.name, message.id, message.dequeue_count,
                )
                if message.dequeue_count >= settings.max_dequeue_count:
                    await self._poison(fn, client, message)
                    outcome = "failed+poisoned"
                else:
                    await client.update_message(
                        message.id,
                        pop_receipt=message.pop_receipt,
                        visibility_timeout=int(settings.visibility_timeout),
                    )
                    outcome = "failed+retry"
                return
            await client.delete_message(message.id, message.pop_receipt)
            stats["succeeded"] += 1
        except Exception:
            outcome = "host-error"
            log.exception("%s: settling message %s failed", fn.name, message.id)
        finally:
            fn.in_flight -= 1
            fn.wakeup.set()
            log.info(
                "%s id=%s dequeue=%d outcome=%s %.0fms",
                fn.name, message.id, message.dequeue_count, outcome, (time.perf_counter() - started) * 1000,
            )

    async def _poison(self, fn: HostFunction, client: QueueClient, message: Any) -> None:
        poison = await self._ensure_queue(f"{client.queue_name}-poison")
        # The message text is copied as received, so it keeps its encoding.
        await poison.send_message(message.content or "")
        await client.delete_message(message.id, message.pop_receipt)
        self.stats[fn.name]["poisoned"] += 1
        log.warning("%s: message %s moved to %s", fn.name, message.id, poison.queue_name)

    def _trigger_value(self, fn: HostFunction, message: Any, body: bytes) -> Any:
        if fn.trigger_annotation is str:
            return body.decode("utf-8")
        if fn.trigger_annotation is bytes:
            return body
        return TriggerQueueMessage(  # type: ignore[no-untyped-call]
            id=message.id,
            body=body,
            dequeue_count=message.dequeue_count,
            expiration_time=message.expires_on,
            insertion_time=message.inserted_on,
            time_next_visible=message.next_visible_on,
            pop_receipt=message.pop_receipt,
        )
