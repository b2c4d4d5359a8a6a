"""Local Functions host: the host's duties around Azure's own Python worker, against Azurite.

Core Tools cannot run here, so this stands in for the .NET host, and only for the host: Azure's Python worker
library (``azure-functions-runtime``) indexes the app and runs every invocation, driven in-process with
protobuf messages as the host's proxy worker drives it (worker.py; conversions in rpc.py). The host's
function table (bindings, routes, auth levels, queue names, schedules) is read from the worker's function
metadata. Around it, the host's own duties: queue triggers (batching, newBatchThreshold, maxDequeueCount,
poison queues, visibilityTimeout, base64 message encoding, the lease renewed while an invocation runs,
undecodable messages poisoned unrun), queue output bindings written only on success (a list as one message
per item), HTTP triggers with function-key auth and route templates, and NCRONTAB timer triggers run on one
instance at a time (a blob lease).

LocalHost (host.py) is built from mixins, one per concern: QueueTriggers (queues.py), TimerTriggers
(timers.py, with the listener lock of singleton.py) and HttpTriggers (http.py), all on Invocations
(invocation.py: an InvocationRequest and its outputs) and QueueClients (queue_clients.py, over the Queue REST
client of queue_rest.py). The rest: host_json.py, schedule.py (NCRONTAB), index.py (the function table) and
calls.py (one function triggered
through the worker, for tests and benches) and cli.py (``python -m devstack.harness``).
"""

from importlib import import_module
from typing import Any

# Where each public name lives. Imported on first use (PEP 562), so that loading the worker alone
# (`devstack.harness.worker`, as `make bench` times a cold start) does not load the host's HTTP stack.
_EXPORTS = {
    "Called": "calls", "call_http": "calls", "call_queue": "calls", "call_timer": "calls",
    "main": "cli",
    "RECEIVE_VISIBILITY_SECONDS": "host", "LocalHost": "host",
    "QueueSettings": "host_json", "parse_timespan": "host_json",
    "CronSchedule": "schedule",
    "FunctionMetadata": "worker", "InvocationFailed": "worker", "Outcome": "worker", "Worker": "worker",
    "WorkerError": "worker", "script_of": "worker",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"devstack.harness.{_EXPORTS[name]}"), name)


__all__ = [
    "RECEIVE_VISIBILITY_SECONDS",
    "Called",
    "CronSchedule",
    "FunctionMetadata",
    "InvocationFailed",
    "LocalHost",
    "Outcome",
    "QueueSettings",
    "Worker",
    "WorkerError",
    "call_http",
    "call_queue",
    "call_timer",
    "main",
    "parse_timespan",
    "script_of",
]
