"""Putting a message back on its queue for later, and the envelope that carries how often that happened.

A re-enqueued copy (a long Graph Retry-After, a webhook backing off) wraps the untouched original:
`{"$requeue": {"attempt": n, "reason": "..."}, "message": "<original text>"}`, so the original is kept
byte for byte and the attempt count survives the round trip.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Protocol

from shared.storage.queue_client import QueueWriter

REQUEUE_KEY = "$requeue"
# Azure Storage queues hide a message for at most 7 days; a minute short of that leaves room for clock skew.
MAX_REQUEUE_DELAY_SECONDS = 7 * 24 * 3600 - 60
# Each backed-off retry waits this many times longer than the one before.
BACKOFF_FACTOR = 3


def requeue_delay(seconds: float | None) -> int:
    """A wait as the whole seconds a queue can hide a copy for: rounded up, at least 1 s, at most 7 days."""
    wait = 1.0 if seconds is None or math.isnan(seconds) else seconds
    return math.ceil(min(max(wait, 1.0), MAX_REQUEUE_DELAY_SECONDS))


def backoff(base: float, attempt: int) -> float:
    """The wait before back-off step `attempt` (0-based): base, 3 x base, 9 x base, ..."""
    return base * float(BACKOFF_FACTOR ** max(attempt, 0))


@dataclass(frozen=True)
class Requeued:
    """A queue message's original text and how many times it has been re-enqueued (0: never)."""

    text: str
    attempt: int = 0


def unwrap_requeued(text: str) -> Requeued:
    """Split a re-enqueued copy into the original message text and its requeue attempt."""
    if REQUEUE_KEY not in text:
        return Requeued(text)
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return Requeued(text)
    meta = doc.get(REQUEUE_KEY) if isinstance(doc, dict) else None
    if not isinstance(meta, dict) or not isinstance(doc.get("message"), str):
        return Requeued(text)
    attempt = meta.get("attempt")
    return Requeued(doc["message"], attempt if isinstance(attempt, int) else 0)


def wrap_requeued(original_text: str, attempt: int, reason: str) -> str:
    """Wrap the original message for re-enqueueing, keeping it byte-for-byte."""
    return json.dumps({REQUEUE_KEY: {"attempt": attempt, "reason": reason}, "message": original_text})


class Requeuer(Protocol):
    """Puts a message back on a queue, hidden for a while."""

    async def requeue(self, text: str, delay_seconds: int) -> None:
        """Enqueue text, invisible for delay_seconds."""

    async def aclose(self) -> None:
        """Release connections."""


class QueueRequeuer(QueueWriter):
    """Requeues onto a storage queue (a QueueWriter that sends hidden copies)."""

    async def requeue(self, text: str, delay_seconds: int) -> None:
        """Enqueue text, invisible for delay_seconds."""
        await self.send(text, delay_seconds=delay_seconds)
