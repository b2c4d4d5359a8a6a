"""Application Insights through azure-monitor-opentelemetry: set up on first invocation, only when configured."""

from __future__ import annotations

import functools
import inspect
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
# Only the app's own loggers are exported: the host already records its own, and exporting the
# root logger would send every line twice.
APP_LOGGER = "shared"
METER_NAME = "va_join_links"

_lock = threading.Lock()
_configured = False
_exporting = False
_gauges: dict[str, Any] = {}
_readings: dict[str, dict[tuple[tuple[str, str], ...], tuple[float, dict[str, str]]]] = {}


def parse_authentication_string(value: str | None) -> str | None:
    """The managed identity client id in `Authorization=AAD;ClientId=…` (None: key-less auth not asked for)."""
    if not value:
        return None
    parts = dict(item.split("=", 1) for item in value.split(";") if "=" in item)
    if parts.get("Authorization", "").upper() != "AAD":
        return None
    return parts.get("ClientId", "")


def configure(env: Mapping[str, str]) -> bool:
    """Start exporting to Application Insights if a connection string is set; True when exporting.

    Deferred to the first invocation: the distro costs ~0.65 s to import, which cold start should not pay.
    """
    global _configured
    if _configured:
        return _exporting
    with _lock:
        if not _configured:
            _start(env)
            _configured = True
    return _exporting


def _start(env: Mapping[str, str]) -> None:
    global _exporting
    connection_string = env.get("APPLICATIONINSIGHTS_CONNECTION_STRING", "").strip()
    if not connection_string:
        return
    from azure.monitor.opentelemetry import configure_azure_monitor

    credential = None
    client_id = parse_authentication_string(env.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING"))
    if client_id is not None:
        # Local authentication is off on the resource: send with the app's managed identity.
        from azure.identity import ManagedIdentityCredential

        credential = ManagedIdentityCredential(client_id=client_id or None)
    configure_azure_monitor(connection_string=connection_string, credential=credential, logger_name=APP_LOGGER,
                            enable_live_metrics=False)
    logging.getLogger(APP_LOGGER).setLevel(logging.INFO)
    _exporting = True
    log.info("exporting telemetry to Application Insights")


def instrumented(env: Mapping[str, str]) -> Callable[[F], F]:
    """Decorator for function-app functions: telemetry is configured before the first invocation runs."""

    def decorate(function: F) -> F:
        if inspect.iscoroutinefunction(function):
            @functools.wraps(function)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                configure(env)
                return await function(*args, **kwargs)

            return run_async  # type: ignore[return-value]

        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            configure(env)
            return function(*args, **kwargs)

        return run  # type: ignore[return-value]

    return decorate


def record_gauge(name: str, value: float, attributes: Mapping[str, str]) -> None:
    """Record one reading of a gauge (a no-op until telemetry is exporting).

    Each reading is exported once, by the next collection, and then forgotten: a synchronous gauge would re-send
    its last value at every export, so a queue that could not be read would still show its old depth (and
    keep alerting, from every instance that once read it). A reading that was not taken is simply missing.
    """
    if not _exporting:
        return
    with _lock:
        if name not in _gauges:
            from opentelemetry import metrics

            _gauges[name] = metrics.get_meter(METER_NAME).create_observable_gauge(
                name, callbacks=[functools.partial(_take_readings, name)])
        _readings.setdefault(name, {})[tuple(sorted(attributes.items()))] = (value, dict(attributes))


def _take_readings(name: str, options: Any) -> list[Any]:
    from opentelemetry.metrics import Observation

    with _lock:
        taken = _readings.pop(name, {})
    return [Observation(value, attributes) for value, attributes in taken.values()]


def flush_metrics() -> None:
    """Export the readings taken so far now (a timer's instance may be gone before the next export)."""
    if not _exporting:
        return
    from opentelemetry import metrics

    provider = metrics.get_meter_provider()
    if hasattr(provider, "force_flush"):
        provider.force_flush()
