"""Calling a function through the worker: an InvocationRequest, then its outputs written only on success."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from devstack.harness.index import HostFunction, resolve_settings
from devstack.harness.queue_clients import QueueClients
from devstack.harness.rpc import queue_messages
from devstack.harness.worker import Worker

# One logger for the whole harness: tests/log_scan.py scans its records for credentials.
log = logging.getLogger("devstack.harness")


class Invocations(QueueClients):
    """Invoke functions through the worker and keep track of the invocations still running.

    Part of LocalHost, whose start() sets the attributes declared here.
    """

    worker: Worker
    _invocations: set[asyncio.Task[Any]]
    _warned: set[tuple[str, str]]

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._invocations.add(task)
        task.add_done_callback(self._invocations.discard)

    async def _invoke(self, fn: HostFunction, inputs: tuple[list[Any], dict[str, Any]],
                      invocation_id: str | None = None) -> Any:
        """One invocation; on success write its queue outputs and return its ``$return`` TypedData (or None)."""
        values = (await self.worker.invoke(fn.meta, inputs, invocation_id)).values
        for binding in fn.outputs:
            data = values.get(binding["name"])
            if data is None:
                continue
            if binding["type"] == "queue":
                await self._write_queue_output(fn, binding, queue_messages(data))
            elif binding["type"] != "http":
                self._warn_once(fn.name, str(binding["type"]))
        return values.get("$return")

    def _warn_once(self, function_name: str, binding_type: str) -> None:
        if (function_name, binding_type) not in self._warned:
            self._warned.add((function_name, binding_type))
            log.warning(
                "%s: %r output bindings are not supported locally; value dropped", function_name, binding_type
            )

    async def _write_queue_output(self, fn: HostFunction, binding: dict[str, Any], bodies: list[bytes]) -> None:
        if not bodies:
            return
        # As the queue output binding does: the queue is created when it does not exist yet.
        queue = await self._ensure_queue(resolve_settings(str(binding["queueName"])))
        # One after another, in the order the function declares them: an app may rely on one output
        # (a rejection record, say) being stored before the next (its webhook) can be seen.
        for body in bodies:
            await self._queues.send(queue, self._encode(body))
