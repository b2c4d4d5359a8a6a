"""Azure's Python worker indexes function_app.py, in a fresh process as at the host's start-up, and tells the host
exactly the functions, triggers, routes, auth levels and queues the docs promise.

The worker refuses a whole app for one binding it cannot load ("0 functions found" in the portal), and nothing
short of the worker itself shows that: these tests run it.
"""

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.functional
ROOT = Path(__file__).resolve().parents[2]
QUEUE_NAME = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")

# The documented function table: name -> (trigger, route or queue or schedule, auth level, output queues).
FUNCTIONS = {
    "process_appointment": ("queueTrigger", "appointments", None,
                            {"results": "join-urls", "outbox": "webhook-outbox", "sms": "sms-outbox",
                             "checks": "attendance-checks"}),
    "check_attendance": ("queueTrigger", "attendance-checks", None,
                         {"results": "attendance", "outbox": "webhook-outbox"}),
    # Rejections, SMS failures and dead letters are the app's own writes (without expiry), not output bindings.
    "send_sms": ("queueTrigger", "sms-outbox", None, {"outbox": "webhook-outbox"}),
    "deliver_webhook": ("queueTrigger", "webhook-outbox", None, {}),
    "get_join_url": ("httpTrigger", "join-url", "FUNCTION", {}),
    "get_appointment": ("httpTrigger", "appointments/{appointmentId?}", "FUNCTION", {}),
    "openapi": ("httpTrigger", "openapi.json", "ANONYMOUS", {}),
    "get_my_join_url": ("httpTrigger", "me/join-url", "ANONYMOUS", {}),
    "intake_calcom": ("httpTrigger", "intake/calcom", "FUNCTION", {"appointments": "appointments"}),
    "intake_calendly": ("httpTrigger", "intake/calendly", "FUNCTION", {"appointments": "appointments"}),
    "intake_standard_webhooks": ("httpTrigger", "intake/standard-webhooks", "FUNCTION",
                                 {"appointments": "appointments"}),
    "connect": ("httpTrigger", "auth/connect", "FUNCTION", {}),
    "request_admin_consent": ("httpTrigger", "auth/admin-consent", "FUNCTION", {}),
    "callback": ("httpTrigger", "auth/callback", "ANONYMOUS", {}),
    "manage_organizers": ("httpTrigger", "manage/organizers", "FUNCTION", {}),
    # Graph posts with no credential: each notification's clientState is checked by handle_calendar_notification.
    "graph_notifications": ("httpTrigger", "graph/notifications", "ANONYMOUS",
                            {"notifications": "calendar-notifications"}),
    "graph_lifecycle": ("httpTrigger", "graph/lifecycle", "ANONYMOUS", {"notifications": "calendar-notifications"}),
    "handle_calendar_notification": ("queueTrigger", "calendar-notifications", None, {"outbox": "webhook-outbox"}),
    "sync_calendars": ("timerTrigger", "0 */30 * * * *", None, {"outbox": "webhook-outbox"}),
    "keep_alive": ("timerTrigger", "0 0 */6 * * *", None, {}),
    "queue_metrics": ("timerTrigger", "0 */5 * * * *", None, {}),
    "archive_parked": ("timerTrigger", "0 20 * * * *", None, {}),
}


def sample_env() -> dict[str, str]:
    values = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    values["DEV_USERS_FILE"] = str(ROOT / values["DEV_USERS_FILE"])
    values.pop("TLS_CA_BUNDLE")
    return {**os.environ, **values, "PYTHONPATH": str(ROOT)}


def worker_metadata(script: Path) -> subprocess.CompletedProcess[str]:
    """`python -m devstack.harness.metadata`: worker init + FunctionsMetadataRequest in a new process."""
    return subprocess.run([sys.executable, "-m", "devstack.harness.metadata", str(script)], cwd=script.parent,
                          env=sample_env(), capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def indexed() -> dict[str, dict[str, object]]:
    done = worker_metadata(ROOT / "function_app.py")
    assert done.returncode == 0, f"the worker refused function_app.py:\n{done.stderr}"
    return {f["name"]: f for f in json.loads(done.stdout)}


def _trigger(function: dict[str, object]) -> dict[str, object]:
    return next(b for b in function["bindings"] if str(b["type"]).endswith("Trigger"))  # type: ignore[union-attr]


def test_the_worker_indexes_every_function_with_its_documented_trigger_route_auth_and_queues(indexed):
    assert set(indexed) == set(FUNCTIONS)
    for name, (kind, where, auth, outputs) in FUNCTIONS.items():
        trigger = _trigger(indexed[name])
        assert trigger["type"] == kind, name
        key = {"queueTrigger": "queueName", "httpTrigger": "route", "timerTrigger": "schedule"}[kind]
        assert trigger[key] == where, name
        assert trigger.get("authLevel") == auth, name
        queues = {b["name"]: b["queueName"] for b in indexed[name]["bindings"]  # type: ignore[union-attr]
                  if b["type"] == "queue" and b["direction"] == "OUT"}
        assert queues == outputs, name


def test_appointment_events_reach_the_app_as_the_bytes_the_producer_sent(indexed):
    # Without dataType binary the host decodes the message as UTF-8 with U+FFFD for what is not UTF-8.
    assert _trigger(indexed["process_appointment"])["dataType"].lower() == "binary"


def test_queue_names_are_valid_and_poison_names_fit(indexed):
    for function in indexed.values():
        for binding in function["bindings"]:  # type: ignore[union-attr]
            queue = binding.get("queueName")
            if queue:
                assert QUEUE_NAME.match(queue) and len(queue + "-poison") <= 63, queue


def test_exactly_one_function_app_at_module_top_level():
    tree = ast.parse((ROOT / "function_app.py").read_text())
    apps = [node for node in tree.body if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call) and getattr(node.value.func, "attr", "") == "FunctionApp"]
    assert len(apps) == 1


def test_the_worker_refuses_the_whole_app_for_one_pep585_output_annotation(tmp_path):
    # The regression this file exists for: func.Out[list[str]] made the worker index none of the functions.
    broken = tmp_path / "function_app.py"
    source = (ROOT / "function_app.py").read_text()
    assert "func.Out[typing.List[str]]" in source
    broken.write_text(source.replace("func.Out[typing.List[str]]", "func.Out[list[str]]", 1))
    shutil.copy(ROOT / "host.json", tmp_path / "host.json")
    done = worker_metadata(broken)
    assert done.returncode == 1
    assert "invalid non-type annotation" in done.stderr and "Out[list[str]]" in done.stderr


def test_graph_request_urls_are_not_logged_at_info(function_app_module):
    # The URL carries the organizer's UPN; httpx logs it per request at INFO.
    import logging

    # function_app_module: importing function_app configures the loggers

    assert logging.getLogger("httpx").getEffectiveLevel() >= logging.WARNING
