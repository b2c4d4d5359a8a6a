"""Calling a user function: its arguments, then its output bindings written only on success."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from azure.functions import _abc as func_abc

from devstack.harness.func_types import LocalContext, LocalOut
from devstack.harness.index import HostFunction, resolve_settings
from devstack.harness.queue_clients import QueueClients

# One logger for the whole harness: tests/log_scan.py scans its records for credentials.
log = logging.getLogger("devstack.harness")


class Invocations(QueueClients):
    """Invoke functions and keep track of the invocations still running.

    Part of LocalHost, whose __init__ sets the attributes declared here.
    """

    _invocations: set[asyncio.Task[Any]]
    _warned: set[tuple[str, str]]

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._invocations.add(task)
        task.add_done_callback(self._invocations.discard)

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
        queue = await self._ensure_queue(resolve_settings(binding.queue_name))
        # One after another, in the order the function declares them: an app may rely on one output
        # (a rejection record, say) being stored before the next (its webhook) can be seen.
        for body in bodies:
            await self._queues.send(queue, self._encode(body))

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
