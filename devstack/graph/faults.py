"""Injected faults: what an armed rule does to a request, and the rules as PUT /_admin/faults sets them."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from typing import Any

from devstack.graph.emulator import FaultConfig, FaultRule, GraphEmulator, GraphError

FAULT_STATUSES = {429, 500, 502, 503, 504, "hang"}
HANG_SECONDS = 120.0
FAULT_ERRORS: dict[int, tuple[str, str]] = {
    429: ("TooManyRequests", "Too many requests. Please retry after the time given in Retry-After."),
    500: ("generalException", "General exception while processing."),
    502: ("BadGateway", "The server received an invalid response from an upstream server."),
    503: ("serviceNotAvailable", "The service is temporarily unavailable. Please retry later."),
    504: ("GatewayTimeout", "The request timed out."),
}


async def apply_fault(emu: GraphEmulator, meeting_id: str | None) -> None:
    """Raise the error of the first armed fault rule for this meeting, if any (a hang ends in 504)."""
    rule = emu.pick_fault(meeting_id)
    if rule is None:
        return
    if rule.status == "hang":
        await asyncio.sleep(HANG_SECONDS)
        raise GraphError(504, *FAULT_ERRORS[504])
    status = int(rule.status)
    headers = {}
    if status in (429, 503) and rule.retry_after is not None:
        headers["Retry-After"] = str(rule.retry_after)
    raise GraphError(status, *FAULT_ERRORS[status], headers=headers)


def parse_faults(body: Mapping[str, Any]) -> FaultConfig:
    """The fault configuration a PUT /_admin/faults body describes."""
    rules = []
    for raw in body.get("rules", []):
        status = raw.get("status")
        if status not in FAULT_STATUSES:
            raise ValueError(f"status must be one of 429, 500, 502, 503, 504, 'hang'; got {status!r}")
        times = raw.get("times")
        retry_after = raw.get("retry_after")
        rules.append(FaultRule(meeting_id=str(raw.get("meeting_id", "*")), status=status,
                               retry_after=None if retry_after is None else int(retry_after),
                               remaining=None if times is None else int(times),
                               probability=float(raw.get("probability", 1.0))))
    seed = body.get("seed")
    return FaultConfig(latency_ms=float(body.get("latency_ms", 0) or 0), rules=rules, seed=seed,
                       rng=random.Random(seed))
