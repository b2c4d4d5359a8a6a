"""Timer triggers: on their schedules, never overlapping, on one instance at a time; fire_timer runs one now."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
import uuid
from typing import Any

from devstack.harness.index import HostFunction, resolve_settings
from devstack.harness.invocation import Invocations
from devstack.harness.queue_rest import StorageAccount
from devstack.harness.rpc import timer_invocation
from devstack.harness.schedule import parse_schedule
from devstack.harness.singleton import ListenerLock

# One logger for the whole harness: tests/log_scan.py scans its records for credentials.
log = logging.getLogger("devstack.harness")


class TimerTriggers(Invocations):
    """Run timer-triggered functions on their schedules.

    Part of LocalHost, whose __init__ sets the attributes declared here.
    """

    functions: dict[str, HostFunction]
    stats: dict[str, dict[str, int]]
    _stopping: asyncio.Event

    connection_string: str
    account: StorageAccount
    host_id: str
    listener_lock_seconds: int
    listener_recovery_seconds: float

    def _listener_lock(self, fn: HostFunction) -> ListenerLock | None:
        """The function's listener lock, or None when the account has no blob endpoint to hold it in."""
        if self.account.blob_endpoint is None:
            log.warning("%s: no BlobEndpoint in the connection string; the timer runs without a listener lock "
                        "(every instance runs it)", fn.name)
            return None
        return ListenerLock(self.connection_string, self.host_id, fn.name, lease_seconds=self.listener_lock_seconds,
                            recovery_seconds=self.listener_recovery_seconds)

    async def fire_timer(self, function_name: str) -> None:
        """Invoke a timer-triggered function now (``past_due`` False), writing its outputs on success."""
        fn = self.functions.get(function_name)
        if fn is None or fn.trigger_type != "timerTrigger":
            raise KeyError(f"no timer-triggered function named {function_name!r}")
        await self._run_timer_once(fn, past_due=False)

    async def _run_timer_once(self, fn: HostFunction, *, past_due: bool) -> bool:
        stats = self.stats[fn.name]
        stats["invoked"] += 1
        started = time.perf_counter()
        invocation_id = str(uuid.uuid4())
        outcome = "succeeded"
        try:
            await self._invoke(fn, timer_invocation(self.worker.protos, fn.name, fn.trigger, past_due=past_due),
                               invocation_id)
            stats["succeeded"] += 1
            return True
        except Exception:
            stats["failed"] += 1
            outcome = "failed"
            log.exception("%s: timer invocation failed", fn.name)
            return False
        finally:
            log.info(
                "%s id=%s dequeue=- outcome=%s %.0fms",
                fn.name, invocation_id, outcome, (time.perf_counter() - started) * 1000,
            )

    async def _run_timer(self, fn: HostFunction) -> None:
        schedule = parse_schedule(resolve_settings(str(fn.trigger["schedule"])))
        lock = self._listener_lock(fn)
        try:
            while not self._stopping.is_set():
                # Like the host: only the instance holding the function's listener lock runs its schedule.
                if lock is not None and not await lock.acquire(self._stopping):
                    return
                await self._run_schedule(fn, schedule, lock)
        finally:
            if lock is not None:
                await lock.release()

    async def _run_schedule(self, fn: HostFunction, schedule: Any, lock: ListenerLock | None) -> None:
        if fn.trigger.get("runOnStartup"):
            await self._timer_invocation(fn)
        while not self._stopping.is_set() and (lock is None or lock.held):
            now = dt.datetime.now(dt.UTC)
            wait = (schedule.next_after(now) - now).total_seconds()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), max(wait, 0))
            if self._stopping.is_set():
                return
            if lock is not None and not lock.held:
                log.warning("%s: listener lock lost; this instance stops running the timer", fn.name)
                return
            # The host never overlaps runs of one timer: the next occurrence is computed after this run.
            await self._timer_invocation(fn)

    async def _timer_invocation(self, fn: HostFunction) -> None:
        task = asyncio.create_task(self._run_timer_once(fn, past_due=False))
        self._track(task)
        await asyncio.shield(task)
