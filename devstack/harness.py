"""Local Functions host: drives any ``azure.functions.FunctionApp`` from Azurite queues, timers and HTTP.

Core Tools cannot run here, so this reproduces the parts of the real host the app depends on, built from
the app's own binding metadata: queue triggers (batching, newBatchThreshold, maxDequeueCount, poison
queues, visibilityTimeout, base64 message encoding), queue output bindings written only on success,
HTTP triggers with function-key auth and route templates, and NCRONTAB timer triggers.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import calendar
import contextlib
import datetime as dt
import hmac
import importlib
import inspect
import json
import logging
import os
import re
import secrets
import signal
import sys
import threading
import time
import typing
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import azure.functions as func
from aiohttp import web
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.functions import _abc as func_abc
from azure.functions.queue import QueueMessage as TriggerQueueMessage
from azure.functions.timer import TimerRequest as LocalTimerRequest
from azure.storage.queue.aio import QueueClient, QueueServiceClient

log = logging.getLogger("devstack.harness")

DEFAULT_FUNCTION_KEY = "local-dev-function-key"
# The real host receives with a 10 minute lease and renews it; a fixed lease is enough locally.
RECEIVE_VISIBILITY_SECONDS = 600
MAX_BATCH_SIZE = 32
STAT_KEYS = ("invoked", "succeeded", "failed", "poisoned")

_SETTING_REF = re.compile(r"%([^%]+)%")


# --------------------------------------------------------------------------- host.json


def parse_timespan(value: str | int | float) -> float:
    """Parse a .NET TimeSpan (``[d.]hh:mm:ss[.fff]``) or a number of seconds into seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    text = value.strip()
    m = re.fullmatch(r"(?:(\d+)\.)?(\d{1,2}):(\d{1,2}):(\d{1,2}(?:\.\d+)?)", text)
    if not m:
        raise ValueError(f"not a TimeSpan: {value!r}")
    days, hours, minutes, seconds = m.groups()
    return int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _ci_get(mapping: Mapping[str, Any], key: str, default: Any = None) -> Any:
    # host.json keys are case-insensitive in the real host.
    for k, v in mapping.items():
        if k.lower() == key.lower():
            return v
    return default


@dataclass(frozen=True)
class QueueSettings:
    """The ``extensions.queues`` section of host.json, with the host's defaults."""

    max_dequeue_count: int = 5
    visibility_timeout: float = 0.0
    batch_size: int = 16
    new_batch_threshold: int = 8
    max_polling_interval: float = 60.0
    message_encoding: str = "base64"

    @classmethod
    def from_host_json(cls, host_json: Mapping[str, Any]) -> QueueSettings:
        """Read queue settings from a parsed host.json document."""
        queues = _ci_get(_ci_get(host_json, "extensions", {}) or {}, "queues", {}) or {}
        batch_size = min(int(_ci_get(queues, "batchSize", 16)), MAX_BATCH_SIZE)
        threshold = _ci_get(queues, "newBatchThreshold")
        encoding = str(_ci_get(queues, "messageEncoding", "base64")).lower()
        if encoding not in ("base64", "none"):
            raise ValueError(f"messageEncoding must be 'base64' or 'none', got {encoding!r}")
        return cls(
            max_dequeue_count=int(_ci_get(queues, "maxDequeueCount", 5)),
            visibility_timeout=parse_timespan(_ci_get(queues, "visibilityTimeout", "00:00:00")),
            batch_size=batch_size,
            new_batch_threshold=batch_size // 2 if threshold is None else int(threshold),
            max_polling_interval=parse_timespan(_ci_get(queues, "maxPollingInterval", "00:01:00")),
            message_encoding=encoding,
        )


def load_host_json(host_json: Path | str | Mapping[str, Any]) -> dict[str, Any]:
    """Return host.json as a dict, reading it from disk when given a path (missing file → ``{}``)."""
    if isinstance(host_json, Mapping):
        return dict(host_json)
    path = Path(host_json)
    if not path.exists():
        log.warning("host.json not found at %s; using the host's defaults", path)
        return {}
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


# --------------------------------------------------------------------------- NCRONTAB


_MONTHS = {name.upper(): i for i, name in enumerate(calendar.month_abbr) if name}
_DAYS = {name.upper(): (i + 1) % 7 for i, name in enumerate(calendar.day_abbr)}
# second, minute, hour, day of month, month, day of week (0 = Sunday; 7 also means Sunday)
_CRON_FIELDS: tuple[tuple[int, int, dict[str, int]], ...] = (
    (0, 59, {}), (0, 59, {}), (0, 23, {}), (1, 31, {}), (1, 12, _MONTHS), (0, 7, _DAYS),
)


def _parse_cron_field(text: str, low: int, high: int, names: dict[str, int]) -> frozenset[int]:
    def value(token: str) -> int:
        number = names.get(token.upper()) if names else None
        number = int(token) if number is None else number
        if not low <= number <= high:
            raise ValueError(f"{token!r} is outside {low}-{high}")
        return number

    result: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"bad step in {part!r}")
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, last = base.split("-", 1)
            start, end = value(first), value(last)
        else:
            start = value(base)
            # "5/10" means every 10 from 5, as in NCrontab.
            end = high if step_text else start
        result.update(range(start, end + 1, step))
    return frozenset(result)


class CronSchedule:
    """A minimal NCRONTAB schedule (6 fields, seconds first; 5 fields assume second 0), in UTC."""

    def __init__(self, expression: str) -> None:
        fields = expression.split()
        if len(fields) == 5:
            fields.insert(0, "0")
        if len(fields) != 6:
            raise ValueError(f"NCRONTAB needs 6 fields (second first): {expression!r}")
        self.expression = expression
        parsed = [_parse_cron_field(f, *spec) for f, spec in zip(fields, _CRON_FIELDS, strict=True)]
        self.seconds, self.minutes, self.hours, self.days, self.months = (sorted(p) for p in parsed[:5])
        self.weekdays = frozenset(d % 7 for d in parsed[5])

    def next_after(self, after: dt.datetime) -> dt.datetime:
        """Return the first occurrence strictly after ``after`` (an aware datetime)."""
        start = after.astimezone(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=1)
        day = start.date()
        for _ in range(366 * 8):  # leap-day schedules can be four years apart
            if day.month in self.months and day.day in self.days and (day.isoweekday() % 7) in self.weekdays:
                found = self._first_time_on(day, start)
                if found is not None:
                    return found
            day += dt.timedelta(days=1)
        raise ValueError(f"schedule {self.expression!r} never fires")

    def _first_time_on(self, day: dt.date, start: dt.datetime) -> dt.datetime | None:
        today = day == start.date()
        for hour in self.hours:
            if today and hour < start.hour:
                continue
            for minute in self.minutes:
                if today and (hour, minute) < (start.hour, start.minute):
                    continue
                for second in self.seconds:
                    if today and (hour, minute, second) < (start.hour, start.minute, start.second):
                        continue
                    return dt.datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=dt.UTC)
        return None


class IntervalSchedule:
    """A TimeSpan timer schedule (``hh:mm:ss``), which the host also accepts."""

    def __init__(self, expression: str) -> None:
        self.expression = expression
        self.interval = dt.timedelta(seconds=parse_timespan(expression))

    def next_after(self, after: dt.datetime) -> dt.datetime:
        """Return ``after`` plus the interval."""
        return after + self.interval


def parse_schedule(expression: str) -> CronSchedule | IntervalSchedule:
    """Parse a timer trigger schedule: NCRONTAB, or a TimeSpan when it contains ``:``."""
    return IntervalSchedule(expression) if ":" in expression else CronSchedule(expression)


# --------------------------------------------------------------------------- concrete azure.functions types


class LocalOut(func.Out[Any]):
    """Concrete ``func.Out``: holds whatever the function sets."""

    def __init__(self) -> None:
        self._value: Any = None

    def set(self, val: Any) -> None:
        """Set the output value."""
        self._value = val

    def get(self) -> Any:
        """Return the output value."""
        return self._value


class _TraceContext(func_abc.TraceContext):
    def __init__(self) -> None:
        self._parent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"

    @property
    def trace_state(self) -> str:
        return ""

    @property
    def trace_parent(self) -> str:
        return self._parent

    @property
    def attributes(self) -> dict[str, str]:
        return {}


class _RetryContext(func_abc.RetryContext):
    # Queue triggers do not use host retry policies, so the worker always sees a zero retry count.
    @property
    def retry_count(self) -> int:
        return 0

    @property
    def max_retry_count(self) -> int:
        return 0

    @property
    def exception(self) -> Any:
        return None


class LocalContext(func.Context):
    """Concrete ``func.Context`` for one invocation."""

    def __init__(self, invocation_id: str, function_name: str, function_directory: str) -> None:
        self._invocation_id = invocation_id
        self._function_name = function_name
        self._function_directory = function_directory
        self._trace = _TraceContext()
        self._retry = _RetryContext()
        self._tls = threading.local()
        self._tls.invocation_id = invocation_id

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> Any:
        return self._tls

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def trace_context(self) -> func_abc.TraceContext:
        return self._trace

    @property
    def retry_context(self) -> func_abc.RetryContext:
        return self._retry


# --------------------------------------------------------------------------- function index


def _resolve_settings(value: str) -> str:
    """Replace ``%NAME%`` app-setting references the way the host does for binding expressions."""

    def lookup(m: re.Match[str]) -> str:
        if m.group(1) not in os.environ:
            raise KeyError(f"binding refers to app setting {m.group(1)!r}, which is not set")
        return os.environ[m.group(1)]

    return _SETTING_REF.sub(lookup, value)


def _enum_value(value: Any) -> Any:
    return getattr(value, "value", value)


@dataclass
class _Function:
    name: str
    user_function: Callable[..., Any]
    trigger_type: str
    trigger: Any
    outputs: list[Any]
    unsupported_inputs: list[str]
    context_param: str | None
    trigger_annotation: Any
    directory: str
    in_flight: int = 0
    receiving: bool = False
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.user_function)


def index_functions(app: func.FunctionApp) -> list[Any]:
    """The app's indexed functions, computed once per app and shared by every caller."""
    # get_functions() re-validates and fails on a second call, so cache the result on the app.
    cached = getattr(app, "_devstack_indexed_functions", None)
    if cached is None:
        cached = list(app.get_functions())
        app._devstack_indexed_functions = cached  # type: ignore[attr-defined]
    return cached


def _build_function(fn: Any) -> _Function:
    user_function = fn.get_user_function()
    trigger = fn.get_trigger()
    try:
        hints = typing.get_type_hints(user_function)
    except Exception:  # string annotations that do not resolve; fall back to raw ones
        hints = dict(getattr(user_function, "__annotations__", {}))
    params = inspect.signature(user_function).parameters
    binding_names = {b.name for b in fn.get_bindings()}
    context_param = None
    for name in params:
        hint = hints.get(name)
        if name not in binding_names and (
            name == "context" or (isinstance(hint, type) and issubclass(hint, func.Context))
        ):
            context_param = name
    outputs = [b for b in fn.get_bindings() if _enum_value(b.direction) == 1]
    inputs = [b.name for b in fn.get_bindings() if _enum_value(b.direction) != 1 and b is not trigger]
    try:
        directory = os.path.dirname(inspect.getfile(user_function))
    except TypeError:
        directory = os.getcwd()
    return _Function(
        name=fn.get_function_name(),
        user_function=user_function,
        trigger_type=trigger.type,
        trigger=trigger,
        outputs=outputs,
        unsupported_inputs=inputs,
        context_param=context_param,
        trigger_annotation=hints.get(trigger.name),
        directory=directory,
    )


@dataclass
class _HttpRoute:
    function: _Function
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


# --------------------------------------------------------------------------- host


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
        http_section = _ci_get(_ci_get(self.host_json, "extensions", {}) or {}, "http", {}) or {}
        self.route_prefix = str(_ci_get(http_section, "routePrefix", "api")).strip("/")
        self._api_version = api_version
        self._functions = [_build_function(fn) for fn in index_functions(app)]
        self.functions: dict[str, _Function] = {f.name: f for f in self._functions}
        self.stats: dict[str, dict[str, int]] = {f.name: dict.fromkeys(STAT_KEYS, 0) for f in self._functions}
        self._service: QueueServiceClient | None = None
        self._queues: dict[str, QueueClient] = {}
        self._created: set[str] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._invocations: set[asyncio.Task[Any]] = set()
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._routes: list[_HttpRoute] = []
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

    def _trigger_queue(self, fn: _Function) -> str:
        return _resolve_settings(fn.trigger.queue_name)

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

    async def _poll(self, fn: _Function) -> None:
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

    async def _process_message(self, fn: _Function, client: QueueClient, message: Any) -> None:
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

    async def _poison(self, fn: _Function, client: QueueClient, message: Any) -> None:
        poison = await self._ensure_queue(f"{client.queue_name}-poison")
        # The message text is copied as received, so it keeps its encoding.
        await poison.send_message(message.content or "")
        await client.delete_message(message.id, message.pop_receipt)
        self.stats[fn.name]["poisoned"] += 1
        log.warning("%s: message %s moved to %s", fn.name, message.id, poison.queue_name)

    def _trigger_value(self, fn: _Function, message: Any, body: bytes) -> Any:
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

    async def _invoke(self, fn: _Function, trigger_value: Any, invocation_id: str | None = None) -> Any:
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

    async def _write_queue_output(self, fn: _Function, binding: Any, value: Any) -> None:
        if value is None:
            return
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        bodies = [self._output_body(fn, binding, item) for item in items]
        client = await self._ensure_queue(_resolve_settings(binding.queue_name))
        for body in bodies:
            await client.send_message(self._encode(body))

    @staticmethod
    def _output_body(fn: _Function, binding: Any, item: Any) -> bytes:
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

    async def _run_timer_once(self, fn: _Function, *, past_due: bool) -> bool:
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

    async def _run_timer(self, fn: _Function) -> None:
        schedule = parse_schedule(_resolve_settings(fn.trigger.schedule))
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

    async def _timer_invocation(self, fn: _Function) -> None:
        task = asyncio.create_task(self._run_timer_once(fn, past_due=False))
        self._track(task)
        await asyncio.shield(task)

    # ----------------------------------------------------------------- HTTP

    def _route_for(self, fn: _Function) -> _HttpRoute:
        trigger = fn.trigger
        template = _resolve_settings(trigger.route or fn.name).strip("/")
        methods = frozenset(str(_enum_value(m)).upper() for m in trigger.methods) if trigger.methods else None
        auth_level = str(_enum_value(trigger.auth_level or func.AuthLevel.FUNCTION)).lower()
        return _HttpRoute(fn, template, _compile_route(template), methods, auth_level)

    async def _start_http(self) -> None:
        server = web.Application(client_max_size=100 * 1024 * 1024)
        server.router.add_route("*", "/{tail:.*}", self._handle_http)
        self._runner = web.AppRunner(server, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.http_host, self.http_port or 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.http_base_url = f"http://{host}:{port}"

    def _match(self, method: str, path: str) -> tuple[_HttpRoute, dict[str, str]] | None:
        prefix = f"/{self.route_prefix}/" if self.route_prefix else "/"
        if not (path + "/").lower().startswith(prefix.lower()):
            return None
        sub = path[len(prefix):].strip("/")
        for route in self._routes:
            m = route.pattern.fullmatch(sub)
            if m and (route.methods is None or method.upper() in route.methods):
                return route, {k: v for k, v in m.groupdict().items() if v is not None}
        return None

    def _authorized(self, route: _HttpRoute, request: web.Request) -> bool:
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
    def _to_web_response(fn: _Function, result: Any) -> web.Response:
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


# --------------------------------------------------------------------------- CLI


def _load_app(spec: str) -> tuple[func.FunctionApp, Path]:
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    app = getattr(module, attr or "app")
    if not isinstance(app, func.FunctionApp):
        raise TypeError(f"{module_name}.{attr or 'app'} is not a FunctionApp")
    return app, Path(module.__file__ or ".").resolve().parent / "host.json"


async def _serve(host: LocalHost) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with host:
        if host.http_base_url:
            log.info("HTTP functions at %s/%s/", host.http_base_url, host.route_prefix)
        await stop.wait()
        log.info("stopping")


def main(argv: list[str] | None = None) -> None:
    """Run the function app against the devstack until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m devstack.harness", description=main.__doc__)
    parser.add_argument("--state-dir", type=Path, default=Path(".devstack"))
    parser.add_argument("--http-port", type=int, default=7071, help="0 picks a free port; -1 disables HTTP")
    parser.add_argument("--function-app", default="function_app", help="module[:attribute]; attribute app")
    parser.add_argument("--poll-interval", type=float, default=0.2)
    parser.add_argument("--max-polling-cap", type=float, default=1.0)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--host-json", type=Path, help="host.json to read instead of the app's own")
    parser.add_argument("--lease-seconds", type=int, default=RECEIVE_VISIBILITY_SECONDS,
                        help="visibility lease taken on each received message: how long a crashed harness's "
                             "in-flight messages stay hidden (default %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # The storage SDK logs every request at INFO.
    logging.getLogger("azure").setLevel(logging.WARNING)

    state = json.loads((args.state_dir / "endpoints.json").read_text(encoding="utf-8"))
    for key, value in (state.get("settings") or {}).items():
        os.environ.setdefault(key, str(value))
    connection_string = os.environ.get("AzureWebJobsStorage") or state["azurite"]["connection_string"]
    app, host_json = _load_app(args.function_app)
    host = LocalHost(
        app,
        connection_string=connection_string,
        host_json=args.host_json or host_json,
        http_port=None if args.http_port < 0 else args.http_port,
        poll_interval=args.poll_interval,
        max_polling_cap=args.max_polling_cap,
        lease_seconds=args.lease_seconds,
    )
    asyncio.run(_serve(host))


if __name__ == "__main__":
    main()
