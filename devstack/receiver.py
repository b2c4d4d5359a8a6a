"""Local webhook receiver: verifies Standard Webhooks signatures, records deliveries, fails on request."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import ssl
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from shared.common.standard_webhooks import verify
from shared.exceptions import WebhookSignatureError

log = logging.getLogger("devstack.receiver")

WEBHOOK_PATH = "/webhooks"
DEFAULT_PORT = 5445
SAMPLE_SETTINGS = Path(__file__).resolve().parents[1] / "local.settings.sample.json"


@dataclass
class FailurePlan:
    """Answers the next deliveries with `status`: `times` more (None: until reset), after `delay_ms`.

    `statuses` (optional) spreads failures over several codes, picked at random. Independently of
    failures, `slow_probability` of deliveries are answered only after `slow_ms` (a slow receiver).
    `seed` makes the random choices repeatable.
    """

    status: int = 200
    times: int | None = 0
    delay_ms: int = 0
    probability: float = 1.0
    retry_after: str | None = None
    statuses: list[int] = field(default_factory=list)
    slow_probability: float = 0.0
    slow_ms: int = 0
    seed: int | None = None

    def armed(self) -> bool:
        """Whether the plan still applies to the next delivery."""
        return self.times is None or self.times > 0


@dataclass
class Delivery:
    """One request as received."""

    webhook_id: str | None
    type: str | None
    verified: bool
    received_at: str
    status: int
    error: str | None = None
    timestamp: str | None = None
    user_agent: str | None = None
    body: Any = None
    raw_body: str = ""
    signature: str | None = None
    delay_ms: int = 0


@dataclass
class ReceiverState:
    """Everything the admin endpoints read and change."""

    secrets: list[str]
    deliveries: list[Delivery] = field(default_factory=list)
    plan: FailurePlan = field(default_factory=FailurePlan)
    rng: random.Random = field(default_factory=random.Random)
    # What a scheduler following the docs holds per appointment: the webhook data of the highest version.
    appointments: dict[str, dict[str, Any]] = field(default_factory=dict)


def keep_newest(held: dict[str, dict[str, Any]], data: Any) -> bool:
    """Apply one webhook's data as docs/integrate/webhooks.md tells receivers: drop it when its version is older
    than the one held (a webhook without a version, such as .failed, changes nothing held). True if kept."""
    if not isinstance(data, dict) or not isinstance(data.get("version"), int) or not data.get("appointmentId"):
        return False
    current = held.get(str(data["appointmentId"]))
    if current is not None and current["version"] >= data["version"]:
        return False
    held[str(data["appointmentId"])] = data
    return True


STATE_KEY = web.AppKey("receiver_state", ReceiverState)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def receive(request: web.Request) -> web.Response:
    """POST /webhooks: verify, record, then answer as the failure plan says."""
    state = request.app[STATE_KEY]
    body = await request.read()
    headers = {key.lower(): value for key, value in request.headers.items()}
    error: str | None = None
    try:
        verify(state.secrets, headers, body)
        verified = True
    except WebhookSignatureError as exc:
        verified, error = False, str(exc)
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        parsed = None
    event_type = parsed.get("type") if isinstance(parsed, dict) else None
    plan = state.plan
    delay = 0
    status = 200 if verified else 401
    extra_headers: dict[str, str] = {}
    # A bad signature always gets 401: injected faults must not mask a signing bug.
    if verified and plan.armed() and state.rng.random() < plan.probability:
        status, delay = plan.status, plan.delay_ms
        if plan.statuses:
            status = state.rng.choice(plan.statuses)
        if plan.times is not None:
            plan.times -= 1
        if plan.retry_after is not None:
            extra_headers["Retry-After"] = plan.retry_after
    if verified and plan.slow_probability and state.rng.random() < plan.slow_probability:
        delay = max(delay, plan.slow_ms)
    state.deliveries.append(Delivery(
        webhook_id=headers.get("webhook-id"), type=event_type, verified=verified, received_at=_now(),
        status=status, error=error, timestamp=headers.get("webhook-timestamp"),
        user_agent=headers.get("user-agent"), body=parsed, raw_body=body.decode("utf-8", "replace"),
        signature=headers.get("webhook-signature"), delay_ms=delay))
    log.info("delivery %s type=%s verified=%s answered=%d", headers.get("webhook-id"), event_type, verified, status)
    if delay:
        await asyncio.sleep(delay / 1000)
    if status == 401:
        return web.json_response({"error": "invalid_signature", "detail": error}, status=401)
    if status < 300 and isinstance(parsed, dict):
        keep_newest(state.appointments, parsed.get("data"))
    if status >= 300:
        return web.json_response({"error": "injected_failure", "status": status}, status=status,
                                 headers=extra_headers)
    return web.json_response({"received": True})


async def admin_deliveries(request: web.Request) -> web.Response:
    """GET /_admin/deliveries: everything received since the last reset, oldest first."""
    state = request.app[STATE_KEY]
    return web.json_response({"deliveries": [asdict(d) for d in state.deliveries]})


async def admin_appointments(request: web.Request) -> web.Response:
    """GET /_admin/appointments: per appointment, the data of the newest webhook (by version) accepted."""
    return web.json_response(request.app[STATE_KEY].appointments)


async def admin_fail(request: web.Request) -> web.Response:
    """PUT /_admin/fail: arm a failure plan.

    `{"status": 503, "times": 2, "delay_ms": 0, "probability": 1}`; optional `statuses` (a list to pick
    from), `slow_probability` + `slow_ms` (slow answers, independent of failures) and `seed`.
    """
    try:
        doc = await request.json()
        status = int(doc.get("status", 503))
        times = doc.get("times")
        seed = doc.get("seed")
        plan = FailurePlan(status=status, times=None if times is None else int(times),
                           delay_ms=int(doc.get("delay_ms", 0)), probability=float(doc.get("probability", 1.0)),
                           retry_after=None if doc.get("retry_after") is None else str(doc["retry_after"]),
                           statuses=[int(code) for code in doc.get("statuses") or []],
                           slow_probability=float(doc.get("slow_probability", 0.0)),
                           slow_ms=int(doc.get("slow_ms", 0)), seed=None if seed is None else int(seed))
    except (ValueError, TypeError, AttributeError) as exc:
        return web.json_response({"error": f"bad failure plan: {exc}"}, status=400)
    codes = [plan.status, *plan.statuses]
    if (not all(100 <= code <= 599 for code in codes) or not 0.0 <= plan.probability <= 1.0 or plan.delay_ms < 0
            or not 0.0 <= plan.slow_probability <= 1.0 or plan.slow_ms < 0):
        return web.json_response({"error": "status 100-599, probability 0..1, delay_ms >= 0"}, status=400)
    state = request.app[STATE_KEY]
    state.plan = plan
    state.rng = random.Random(plan.seed)
    return web.json_response(asdict(plan))


async def admin_reset(request: web.Request) -> web.Response:
    """POST /_admin/reset: forget deliveries and disarm failures."""
    state = request.app[STATE_KEY]
    state.deliveries.clear()
    state.appointments.clear()
    state.plan = FailurePlan()
    return web.json_response({"reset": True})


@web.middleware
async def loopback_admin(request: web.Request, handler: Any) -> web.StreamResponse:
    """Admin endpoints answer loopback callers only."""
    remote = request.remote or ""
    if request.path.startswith("/_admin") and not (remote == "::1" or remote.startswith("127.")):
        return web.json_response({"error": "admin endpoints are loopback-only"}, status=403)
    response: web.StreamResponse = await handler(request)
    return response


def create_receiver_app(secrets: list[str]) -> web.Application:
    """The receiver as an aiohttp application (mount it on any runner/site)."""
    if not secrets:
        raise ValueError("the receiver needs at least one whsec_ secret to verify with")
    app = web.Application(middlewares=[loopback_admin])
    app[STATE_KEY] = ReceiverState(secrets=list(secrets))
    app.router.add_post(WEBHOOK_PATH, receive)
    app.router.add_get("/_admin/deliveries", admin_deliveries)
    app.router.add_get("/_admin/appointments", admin_appointments)
    app.router.add_put("/_admin/fail", admin_fail)
    app.router.add_post("/_admin/reset", admin_reset)
    return app


def secrets_from_env(value: str | None) -> list[str]:
    """Split a WEBHOOK_SECRET value (one or two comma-separated secrets)."""
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def default_secrets(env: Mapping[str, str] | None = None) -> list[str]:
    """WEBHOOK_SECRET from the environment, else the sample settings' value (what the local app signs with)."""
    found = secrets_from_env((os.environ if env is None else env).get("WEBHOOK_SECRET"))
    if found:
        return found
    values = json.loads(SAMPLE_SETTINGS.read_text())["Values"]
    return secrets_from_env(values.get("WEBHOOK_SECRET"))


async def _serve(secrets: list[str], host: str, port: int, cert: Path | None, key: Path | None) -> None:
    ctx: ssl.SSLContext | None = None
    if cert is not None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
    runner = web.AppRunner(create_receiver_app(secrets), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=ctx).start()
    log.info("webhook receiver on %s://%s:%d%s", "https" if ctx else "http", host, port, WEBHOOK_PATH)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    """Run the receiver alone (the local stack normally mounts it next to the emulators)."""
    parser = argparse.ArgumentParser(prog="python -m devstack.receiver", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--cert", type=Path, help="server certificate chain (PEM); plain http without it")
    parser.add_argument("--key", type=Path)
    parser.add_argument("--secret", action="append",
                        help="whsec_ secret (repeatable); default WEBHOOK_SECRET, else the sample settings' value")
    args = parser.parse_args(argv)
    secrets = args.secret or default_secrets()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve(secrets, args.host, args.port, args.cert, args.key))


if __name__ == "__main__":
    main()
