"""LocalHost: its state and lifecycle (start, stop, drain); each kind of trigger is a mixin."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp import web
from azure.core.exceptions import ResourceNotFoundError

from devstack.harness.host_json import QueueSettings, ci_get, load_host_json, parse_timespan
from devstack.harness.http import HttpRoute, HttpTriggers
from devstack.harness.index import HostFunction
from devstack.harness.queue_rest import QueueRestClient, StorageAccount
from devstack.harness.queues import QueueTriggers
from devstack.harness.singleton import DEFAULT_LEASE_SECONDS, DEFAULT_RECOVERY_SECONDS
from devstack.harness.timers import TimerTriggers
from devstack.harness.worker import Worker, script_of

# One logger for the whole harness: tests/log_scan.py scans its records for credentials.
log = logging.getLogger("devstack.harness")

DEFAULT_FUNCTION_KEY = "local-dev-function-key"
DEFAULT_HOST_ID = "devstack-local-host"
# The real host receives with a 10 minute lease and renews it at half that while the invocation runs.
RECEIVE_VISIBILITY_SECONDS = 600
STAT_KEYS = ("invoked", "succeeded", "failed", "poisoned")


class LocalHost(QueueTriggers, TimerTriggers, HttpTriggers):
    """Runs a function app's queue, timer and HTTP triggers against Azurite with the real host's semantics.

    ``app`` is the function-app script (its path, its module, or the FunctionApp it defines): Azure's Python
    worker indexes it and runs every invocation (worker.py). Every binding's ``connection`` is mapped to the one
    storage account in ``connection_string``.
    """

    def __init__(
        self,
        app: Any,
        *,
        connection_string: str,
        host_json: Path | str | Mapping[str, Any],
        function_key: str | None = None,
        http_port: int | None = None,
        poll_interval: float = 0.2,
        max_polling_cap: float = 1.0,
        http_host: str = "127.0.0.1",
        stop_timeout: float = 30.0,
        lease_seconds: int = RECEIVE_VISIBILITY_SECONDS,
        host_id: str | None = None,
    ) -> None:
        self.script = script_of(app)
        self.connection_string = connection_string
        self.host_json = load_host_json(host_json)
        self.queue_settings = QueueSettings.from_host_json(self.host_json)
        self.function_key = function_key or os.environ.get("LOCAL_FUNCTION_KEY") or DEFAULT_FUNCTION_KEY
        self.http_port = http_port
        self.http_host = http_host
        self.poll_interval = poll_interval
        # The host backs off to maxPollingInterval (a minute by default); locally that only slows tests.
        capped = min(self.queue_settings.max_polling_interval, max_polling_cap)
        self.max_poll_interval = max(poll_interval, capped)
        self.stop_timeout = stop_timeout
        # How long a received message stays hidden while it runs: after a crash, that is how long its
        # in-flight messages stay invisible before another worker sees them again.
        self.lease_seconds = lease_seconds
        self.http_base_url: str | None = None
        http_section = ci_get(ci_get(self.host_json, "extensions", {}) or {}, "http", {}) or {}
        self.route_prefix = str(ci_get(http_section, "routePrefix", "api")).strip("/")
        self.account = StorageAccount.from_connection_string(connection_string)
        # Instances with one host id share their timers' listener locks (the host: the site name, or
        # AzureFunctionsWebHost__hostid).
        self.host_id = host_id or os.environ.get("AzureFunctionsWebHost__hostid") or DEFAULT_HOST_ID
        singleton = ci_get(self.host_json, "singleton", {}) or {}
        self.listener_lock_seconds = int(parse_timespan(
            ci_get(singleton, "listenerLockPeriod", DEFAULT_LEASE_SECONDS)))
        self.listener_recovery_seconds = parse_timespan(
            ci_get(singleton, "listenerLockRecoveryPollingInterval", DEFAULT_RECOVERY_SECONDS))
        # The function table comes from the worker's metadata, at start().
        self._functions: list[HostFunction] = []
        self.functions: dict[str, HostFunction] = {}
        self.stats: dict[str, dict[str, int]] = {}
        self._rest: QueueRestClient | None = None
        self._created: set[str] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._invocations: set[asyncio.Task[Any]] = set()
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._routes: list[HttpRoute] = []
        self._warned: set[tuple[str, str]] = set()
        self._started = False

    # ----------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> LocalHost:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start queue pollers, timers and the HTTP server (when ``http_port`` is not None)."""
        if self._started:
            raise RuntimeError("LocalHost already started")
        self._started = True
        self._stopping.clear()
        self._rest = QueueRestClient(self.account)
        try:
            self.worker = await Worker.for_script(self.script)
            self._functions = [HostFunction(meta) for meta in self.worker.functions.values()]
            self.functions = {f.name: f for f in self._functions}
            for fn in self._functions:
                self.stats.setdefault(fn.name, dict.fromkeys(STAT_KEYS, 0))
            for fn in self._functions:
                for name in fn.unsupported_inputs:
                    log.warning("%s: input binding %r is not supported locally; passing None", fn.name, name)
                if fn.trigger_type == "queueTrigger":
                    # Like the host, a trigger's queue is not created here: its listener waits for it to exist.
                    self._loops.append(asyncio.create_task(self._poll(fn), name=f"poll:{fn.name}"))
                elif fn.trigger_type == "timerTrigger":
                    self._loops.append(asyncio.create_task(self._run_timer(fn), name=f"timer:{fn.name}"))
                elif fn.trigger_type == "httpTrigger":
                    route = self._route_for(fn)
                    if route is not None:
                        self._routes.append(route)
                else:
                    log.warning("%s: trigger type %r is not supported locally; skipped", fn.name, fn.trigger_type)
            if self.http_port is not None:
                await self._start_http()
        except BaseException:
            await self.stop()  # nothing left open when storage or the port refuses us
            raise
        log.info(
            "local host started: %d function(s), queue settings %s, http %s",
            len(self._functions), self.queue_settings, self.http_base_url or "off",
        )

    async def stop(self) -> None:
        """Stop accepting work, wait (bounded) for in-flight invocations, and close clients."""
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for fn in self._functions:
            fn.wakeup.set()
        if self._loops:
            _, pending = await asyncio.wait(self._loops, timeout=10)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._loops, return_exceptions=True)
            self._loops.clear()
        if self._invocations:
            _, pending = await asyncio.wait(set(self._invocations), timeout=self.stop_timeout)
            if pending:
                log.warning(
                    "%d invocation(s) still running after %.0fs; cancelling", len(pending), self.stop_timeout
                )
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        if self._rest is not None:
            await self._rest.close()
            self._rest = None
        self._routes.clear()
        self._created.clear()
        self._started = False

    async def drain(self, timeout: float = 30.0) -> None:
        """Return once every trigger queue is empty and nothing is in flight, or raise TimeoutError."""
        deadline = time.monotonic() + timeout
        queue_functions = [f for f in self._functions if f.trigger_type == "queueTrigger"]
        quiet = 0
        while True:
            if self._idle():
                counts = []
                for fn in queue_functions:
                    try:
                        counts.append(await self._queues.approximate_count(self._trigger_queue(fn)))
                    except ResourceNotFoundError:  # a queue nobody has written to yet holds nothing
                        counts.append(0)
                # Re-check in-flight work: a poller may have picked something up while we counted.
                quiet = quiet + 1 if not any(counts) and self._idle() else 0
                if quiet >= 2:
                    return
            else:
                quiet = 0
            if time.monotonic() > deadline:
                raise TimeoutError(f"queues not drained after {timeout:.1f}s; stats {self.stats}")
            await asyncio.sleep(min(0.05, self.poll_interval))

    def _idle(self) -> bool:
        return not self._invocations and not any(f.in_flight or f.receiving for f in self._functions)
