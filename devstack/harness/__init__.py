"""Local Functions host: drives any ``azure.functions.FunctionApp`` from Azurite queues, timers and HTTP.

Core Tools cannot run here, so this reproduces the parts of the real host the app depends on, built from
the app's own binding metadata: queue triggers (batching, newBatchThreshold, maxDequeueCount, poison
queues, visibilityTimeout, base64 message encoding, the lease renewed while an invocation runs, undecodable
messages poisoned unrun), queue output bindings written only on success, HTTP triggers with function-key
auth and route templates, and NCRONTAB timer triggers run on one instance at a time (a blob lease).

LocalHost (host.py) is built from mixins, one per concern: QueueTriggers (queues.py), TimerTriggers
(timers.py, with the listener lock of singleton.py) and HttpTriggers (http.py), all on Invocations
(invocation.py: calling a function and writing its outputs) and QueueClients (queue_clients.py, over the
Queue REST client of queue_rest.py). The rest: host_json.py, schedule.py (NCRONTAB), func_types.py (Out and
Context), index.py (the app's functions) and cli.py (``python -m devstack.harness``).
"""

from azure.functions.timer import TimerRequest as LocalTimerRequest

from devstack.harness.cli import main
from devstack.harness.func_types import LocalOut
from devstack.harness.host import RECEIVE_VISIBILITY_SECONDS, LocalHost
from devstack.harness.host_json import QueueSettings, parse_timespan
from devstack.harness.index import index_functions
from devstack.harness.schedule import CronSchedule

__all__ = [
    "RECEIVE_VISIBILITY_SECONDS",
    "CronSchedule",
    "LocalHost",
    "LocalOut",
    "LocalTimerRequest",
    "QueueSettings",
    "index_functions",
    "main",
    "parse_timespan",
]
