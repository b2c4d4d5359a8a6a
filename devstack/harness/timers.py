"""Timer triggers: each runs on its schedule, never overlapping itself; fire_timer runs one now."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
import uuid

from azure.functions.timer import TimerRequest as LocalTimerRequest

from devstack.harness.index import HostFunction, resolve_settings
from devstack.harness.invocation import Invocations
from devstack.harness.schedule import parse_schedule

# One logger for the whole harness: tests/log_scan.py scans its records for credentials.
log = logging.getLogger("devstack.harness")


class TimerTriggers(Invocations):
    """Run timer-triggered functions on their schedules.

    Part of LocalHost, whose __init__ sets the attributes declared here.
    """

    functions: dict[str, HostFunction]
    stats: dict[str, dict[str, int]]
    _stopping: asyncio.Event

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
            await self._invoke(fn, LocalTimerRequest(past_due=past_due), invocation_id)
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
        schedule = parse_schedule(resolve_settings(fn.trigger.schedule))
        if getattr(fn.trigger, "run_on_startup", False):
            await self._timer_invocation(fn)
        while not self._stopping.is_set():
            now = dt.datetime.now(dt.UTC)
            wait = (schedule.next_after(now) - now).total_seconds()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), max(wait, 0))
            if self._stopping.is_set():
                return
            # The host never overlaps runs of one timer: the next occurrence is computed after this run.
            await self._timer_invocation(fn)

    async def _timer_invocation(self, fn: HostFunction) -> None:
        task = asyncio.create_task(self._run_timer_once(fn, past_due=False))
        self._track(task)
        await asyncio.shield(task)
