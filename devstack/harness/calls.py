"""One function triggered through the worker without a queue or a socket: what tests and benches call.

The inputs are converted exactly as LocalHost converts them (rpc.py) and go through the same
``Worker.invoke``; only the polling and the writing of outputs are left out, so a test sees the messages the
host would write.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

from devstack.harness.rpc import (
    HttpAnswer,
    HttpCall,
    QueueTriggerMessage,
    http_answer,
    http_invocation,
    queue_invocation,
    queue_messages,
    timer_invocation,
)
from devstack.harness.worker import Outcome, Worker


@dataclass
class Called:
    """What an invocation left for the host: each queue output's messages, and an HTTP function's answer."""

    queues: dict[str, list[bytes]]
    http: HttpAnswer | None

    def texts(self, binding: str) -> list[str]:
        """The messages one queue output would write, as text."""
        return [body.decode("utf-8") for body in self.queues.get(binding, [])]


def _called(worker: Worker, name: str, outcome: Outcome) -> Called:
    meta = worker.functions[name]
    queues: dict[str, list[bytes]] = {}
    answer = None
    for binding in meta.outputs:
        data = outcome.values.get(binding["name"])
        if binding["type"] == "queue":
            queues[binding["name"]] = queue_messages(data) if data is not None else []
        elif binding["type"] == "http":
            answer = http_answer(data)
    return Called(queues, answer)


async def call_queue(worker: Worker, name: str, body: bytes | str, *, dequeue_count: int = 1,
                     message_id: str | None = None) -> Called:
    """Invoke a queue-triggered function with one message, as the host would after receiving it."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    message = QueueTriggerMessage(
        id=message_id or str(uuid.uuid4()), body=body.encode("utf-8") if isinstance(body, str) else body,
        dequeue_count=dequeue_count, pop_receipt="AgAAAAMAAAAAAAAA", inserted_on=now,
        expires_on=now + dt.timedelta(days=7), next_visible_on=now + dt.timedelta(minutes=10))
    meta = worker.functions[name]
    outcome = await worker.invoke(meta, queue_invocation(worker.protos, name, meta.trigger, message))
    return _called(worker, name, outcome)


async def call_http(worker: Worker, name: str, *, method: str = "GET", path: str = "/",
                    params: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
                    route_params: Mapping[str, str] | None = None, body: bytes = b"",
                    base_url: str = "http://localhost:7071") -> Called:
    """Invoke an HTTP-triggered function as the host would after routing a request to it."""
    query = list((params or {}).items())
    url = f"{base_url}{path}" + (f"?{urlencode(query)}" if query else "")
    call = HttpCall(method=method, url=url, headers=list((headers or {}).items()), query=query,
                    route_params=dict(route_params or {}), body=body)
    meta = worker.functions[name]
    outcome = await worker.invoke(meta, http_invocation(worker.protos, name, meta.trigger, call))
    return _called(worker, name, outcome)


async def call_timer(worker: Worker, name: str, *, past_due: bool = False) -> Called:
    """Invoke a timer-triggered function now."""
    meta = worker.functions[name]
    outcome = await worker.invoke(meta, timer_invocation(worker.protos, name, meta.trigger, past_due=past_due))
    return _called(worker, name, outcome)


