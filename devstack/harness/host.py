"""LocalHost: runs a FunctionApp's queue, timer and HTTP triggers against Azurite."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hmac
import logging
import os
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import azure.functions as func
from aiohttp import web
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.functions import _abc as func_abc
from azure.functions.queue import QueueMessage as TriggerQueueMessage
from azure.functions.timer import TimerRequest as LocalTimerRequest
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from devstack.harness.func_types import LocalContext, LocalOut
from devstack.harness.host_json import QueueSettings, ci_get, load_host_json
from devstack.harness.index import HostFunction, build_function, enum_value, index_functions, resolve_settings
from devstack.harness.schedule import parse_schedule

# One logger for the whole harness: tests/log_scan.py scans its records for credentials.
log = logging.getLogger("devstack.harness")

DEFAULT_FUNCTION_KEY = "local-dev-function-key"
# The real host receives with a 10 minute lease and renews it; a fixed lease is enough locally.
RECEIVE_VISIBILITY_SECONDS = 600
STAT_KEYS = ("invoked", "succeeded", "failed", "poisoned")


@dataclass
class HttpRoute:
    """An HTTP trigger's route: its template compiled, its methods and its auth level."""

    function: HostFunction
    template: str
    pattern: re.Pattern[str]
    methods: frozenset[str] | None
    auth_level: str


def _compile_route(template: str) -> re.Pattern[str]:
    """Compile an ASP.NET-style route template (``items/{id}``, ``{id:int}``, ``{id?}``, ``{*rest}``)."""
    out = []
    pos = 0
    for m in re.finditer(r"\{([^}]+)\}", template):
        out.append(re.escape(template[pos:m.start()]))
        spec = m.group(1)
        catch_all = spec.startswith("*")
        name = spec.lstrip("*").split(":", 1)[0].split("=", 1)[0]
        optional = name.endswith("?") or "=" in spec
        name = name.rstrip("?")
        body = f"(?P<{name}>.*)" if catch_all else f"(?P<{name}>[^/]+)"
        if optional or catch_all:
            # Let the preceding slash go with an omitted optional segment.
            if out and out[-1].endswith("/"):
                out[-1] = out[-1][:-1]
                body = f"(?:/{body})?"
            else:
                body = f"(?:{body})?"
        out.append(body)
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("".join(out), re.IGNORECASE)


class LocalHost:
    """Runs a FunctionApp's queue, timer and HTTP triggers against Azurite with the real host's semantics.

    Every binding's ``connection`` is mapped to the one storage account in ``connection_string``.
    """

    def __init__(
        self,
        app: func.FunctionApp,
        *,
        connection_string: str,
        host_json: Path | str | Mapping[str, Any],
        function_key: str | None = None,
        http_port: int | None = None,
        poll_interval: float = 0.2,
        max_polling_cap: float = 1.0,
        http_host: str = "127.0.0.1",
        stop_timeout: float = 30.0,
        api_version: str | None = None,
        lease_seconds: int = RECEIVE_VISIBILITY_SECONDS,
    ) -> None:
        self.app = app
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
        self._api_version = api_version
        self._functions = [build_function(fn) for fn in index_functions(app)]
        self.functions: dict[str, HostFunction] = {f.name: f for f in self._functions}
        self.stats: dict[str, dict[str, int]] = {f.name: dict.fromkeys(STAT_KEYS, 0) for f in self._functions}
        self._service: QueueServiceClient | None = None
        self._queues: dict[str, QueueClient] = {}
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
        kwargs = {"api_version": self._api_version} if self._api_version else {}
        self._service = QueueServiceClient.from_connection_string(self.connection_string, **kwargs)
        for fn in self._functions:
            for name in fn.unsupported_inputs:
                log.warning("%s: input binding %r is not supported locally; passing None", fn.name, name)
            if fn.trigger_type == "queueTrigger":
                queue = self._trigger_queue(fn)
                # The real host waits for a missing queue; creating it keeps local runs and drain() simple.
                await self._ensure_queue(queue)
                self._loops.append(asyncio.create_task(self._poll(fn), name=f"poll:{fn.name}"))
            elif fn.trigger_type == "timerTrigger":
                self._loops.append(asyncio.create_task(self._run_timer(fn), name=f"timer:{fn.name}"))
            elif fn.trigger_type == "httpTrigger":
                self._routes.append(self._route_for(fn))
            else:
                log.warning("%s: trigger type %r is not supported locally; skipped", fn.name, fn.trigger_type)
        if self.http_port is not None:
            await self._start_http()
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
        for client in self._queues.values():
            await client.close()
        self._queues.clear()
        if self._service is not None:
            await self._service.close()
            self._service = None
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
                    props = await self._queue(self._trigger_queue(fn)).get_queue_properties()
                    counts.append(props.approximate_message_count or 0)
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

    # ----------------------------------------------------------------- queues

    def _trigger_queue(self, fn: HostFunction) -> str:
        return resolve_settings(fn.trigger.queue_name)

    def _queue(self, name: str) -> QueueClient:
        client = self._queues.get(name)
        if client is None:
            assert self._service is not None, "LocalHost not started"
            client = self._queues[name] = self._service.get_queue_client(name)
        return client

    async def _ensure_queue(self, name: str) -> QueueClient:
        client = self._queue(name)
        if name not in self._created:
            with contextlib.suppress(ResourceExistsError):
                await client.create_queue()
            self._created.add(name)
        return client

    def _encode(self, body: bytes) -> str:
        if self.queue_settings.message_encoding == "base64":
            return base64.b64encode(body).decode("ascii")
        return body.decode("utf-8")

    def _decode(self, content: str) -> bytes:
        if self.queue_settings.message_encoding == "base64":
            # The host fails the invocation on bad base64, so the message goes round to poison.
            return base64.b64decode(content.encode("ascii"), validate=True)
        return content.encode("utf-8")

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

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._invocations.add(task)
        task.add_done_callback(self._invocations.discard)

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

    # ----------------------------------------------------------------- invocation

    async def _invoke(self, fn: HostFunction, trigger_value: Any, invocation_id: str | None = None) -> Any:
        """Call the user function; on success write queue outputs and return the ``$return`` value."""
        invocation_id = str(uuid.uuid4()) if invocation_id is None else invocation_id
        kwargs: dict[str, Any] = {fn.trigger.name: trigger_value}
        outs = {b.name: LocalOut() for b in fn.outputs if b.name != "$return"}
        kwargs.update(outs)
        kwargs.update(dict.fromkeys(fn.unsupported_inputs))
        if fn.context_param:
            kwargs[fn.context_param] = LocalContext(invocation_id, fn.name, fn.directory)
        if fn.is_async:
            result = await fn.user_function(**kwargs)
        else:
            result = await asyncio.to_thread(fn.user_function, **kwargs)
        values = {name: out.get() for name, out in outs.items()}
        values["$return"] = result
        for binding in fn.outputs:
            if binding.type == "queue":
                await self._write_queue_output(fn, binding, values.get(binding.name))
            elif binding.type != "http" and values.get(binding.name) is not None:
                self._warn_once(fn.name, binding.type)
        return result

    def _warn_once(self, function_name: str, binding_type: str) -> None:
        if (function_name, binding_type) not in self._warned:
            self._warned.add((function_name, binding_type))
            log.warning(
                "%s: %r output bindings are not supported locally; value dropped", function_name, binding_type
            )

    async def _write_queue_output(self, fn: HostFunction, binding: Any, value: Any) -> None:
        if value is None:
            return
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        bodies = [self._output_body(fn, binding, item) for item in items]
        client = await self._ensure_queue(resolve_settings(binding.queue_name))
        for body in bodies:
            await client.send_message(self._encode(body))

    @staticmethod
    def _output_body(fn: HostFunction, binding: Any, item: Any) -> bytes:
        if isinstance(item, str):
            return item.encode("utf-8")
        if isinstance(item, (bytes, bytearray)):
            return bytes(item)
        if isinstance(item, func_abc.QueueMessage):
            body = item.get_body()
            return body.encode("utf-8") if isinstance(body, str) else body
        # The worker's queue converter rejects other types, which fails the invocation.
        raise TypeError(f"{fn.name}: output {binding.name!r} got unsupported {type(item).__name__}")

    # ----------------------------------------------------------------- timers

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

    # ----------------------------------------------------------------- HTTP

    def _route_for(self, fn: HostFunction) -> HttpRoute:
        trigger = fn.trigger
        template = resolve_settings(trigger.route or fn.name).strip("/")
        methods = frozenset(str(enum_value(m)).upper() for m in trigger.methods) if trigger.methods else None
        auth_level = str(enum_value(trigger.auth_level or func.AuthLevel.FUNCTION)).lower()
        return HttpRoute(fn, template, _compile_route(template), methods, auth_level)

    async def _start_http(self) -> None:
        server = web.Application(client_max_size=100 * 1024 * 1024)
        server.router.add_route("*", "/{tail:.*}", self._handle_http)
        self._runner = web.AppRunner(server, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.http_host, self.http_port or 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.http_base_url = f"http://{host}:{port}"

    def _match(self, method: str, path: str) -> tuple[HttpRoute, dict[str, str]] | None:
        prefix = f"/{self.route_prefix}/" if self.route_prefix else "/"
        if not (path + "/").lower().startswith(prefix.lower()):
            return None
        sub = path[len(prefix):].strip("/")
        for route in self._routes:
            m = route.pattern.fullmatch(sub)
            if m and (route.methods is None or method.upper() in route.methods):
                return route, {k: v for k, v in m.groupdict().items() if v is not None}
        return None

    def _authorized(self, route: HttpRoute, request: web.Request) -> bool:
        if route.auth_level == "anonymous":
            return True
        given = request.headers.get("x-functions-key") or request.query.get("code") or ""
        return hmac.compare_digest(given.encode(), self.function_key.encode())

    async def _handle_http(self, request: web.Request) -> web.StreamResponse:
        matched = self._match(request.method, request.path)
        if matched is None:
            return web.Response(status=404)
        route, route_params = matched
        if not self._authorized(route, request):
            return web.Response(status=401)
        fn = route.function
        headers: dict[str, str] = {}
        for key, value in request.headers.items():
            name = key.lower()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        http_request = func.HttpRequest(
            method=request.method,
            url=str(request.url),
            headers=headers,
            params=dict(request.query),
            route_params=route_params,
            body=await request.read(),
        )
        stats = self.stats[fn.name]
        stats["invoked"] += 1
        started = time.perf_counter()
        invocation_id = str(uuid.uuid4())
        task = asyncio.create_task(self._invoke(fn, http_request, invocation_id))
        self._track(task)
        try:
            result = await asyncio.shield(task)
            response = self._to_web_response(fn, result)
        except Exception:
            stats["failed"] += 1
            log.exception("%s: HTTP invocation failed", fn.name)
            response = web.Response(status=500)
        else:
            stats["succeeded"] += 1
        log.info(
            "%s id=%s dequeue=- outcome=%d %.0fms",
            fn.name, invocation_id, response.status, (time.perf_counter() - started) * 1000,
        )
        return response

    @staticmethod
    def _to_web_response(fn: HostFunction, result: Any) -> web.Response:
        if result is None:
            return web.Response(status=204)
        if isinstance(result, (str, bytes)):
            result = func.HttpResponse(result)
        if not isinstance(result, func_abc.HttpResponse):
            raise TypeError(f"{fn.name} returned {type(result).__name__}, not an HttpResponse")
        headers = {k: v for k, v in result.headers.items()}
        if not any(k.lower() == "content-type" for k in headers) and result.mimetype:
            headers["Content-Type"] = (
                f"{result.mimetype}; charset={result.charset}" if result.charset else result.mimetype
            )
        return web.Response(status=result.status_code, body=result.get_body(), headers=headers)
