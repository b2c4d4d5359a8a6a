"""The Functions host's indexing rules, applied to function_app.py without the host."""

import ast
import inspect
import re
import typing
from pathlib import Path

import azure.functions as func
import pytest

pytestmark = pytest.mark.functional
ROOT = Path(__file__).resolve().parents[2]
QUEUE_NAME = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")


def test_exactly_one_function_app_at_module_top_level():
    tree = ast.parse((ROOT / "function_app.py").read_text())
    apps = [node for node in tree.body if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call) and getattr(node.value.func, "attr", "") == "FunctionApp"]
    assert len(apps) == 1


def test_expected_functions_are_indexed(indexed):
    assert {"process_appointment", "deliver_webhook", "get_join_url", "openapi"} <= set(indexed)


def test_parameter_names_equal_binding_names_and_outputs_are_out(indexed):
    for name, function in indexed.items():
        user_function = function.get_user_function()
        params = inspect.signature(user_function).parameters
        hints = typing.get_type_hints(user_function)
        bindings = {b.name: b for b in function.get_bindings() if b.name != "$return"}
        assert set(params) == set(bindings), name
        for binding in bindings.values():
            if binding.direction == 1:  # OUT
                assert typing.get_origin(hints[binding.name]) is func.Out, (name, binding.name)


def test_queue_names_are_valid_and_poison_names_fit(indexed):
    for function in indexed.values():
        for binding in function.get_bindings():
            queue = getattr(binding, "queue_name", None)
            if queue:
                assert QUEUE_NAME.match(queue) and len(queue + "-poison") <= 63, queue


def test_process_appointment_is_async_and_outputs_on_the_contract_queues(indexed):
    function = indexed["process_appointment"]
    assert inspect.iscoroutinefunction(function.get_user_function())
    queues = {b.name: getattr(b, "queue_name", None) for b in function.get_bindings()}
    # No binding for appointments-rejected nor sms-failed: the app writes those records itself, without expiry,
    # before their webhooks exist.
    assert queues == {"msg": "appointments", "results": "join-urls", "outbox": "webhook-outbox", "sms": "sms-outbox"}


def test_send_sms_reads_the_sms_outbox_and_records_failures(indexed):
    queues = {b.name: getattr(b, "queue_name", None) for b in indexed["send_sms"].get_bindings()}
    assert queues == {"msg": "sms-outbox", "outbox": "webhook-outbox"}


def test_deliver_webhook_reads_the_outbox_and_dead_letters(indexed):
    queues = {b.name: getattr(b, "queue_name", None) for b in indexed["deliver_webhook"].get_bindings()}
    assert queues == {"msg": "webhook-outbox"}  # dead letters: written by the app, without expiry


def test_graph_request_urls_are_not_logged_at_info(function_app_module):
    # The URL carries the organizer's UPN; httpx logs it per request at INFO.
    import logging

    # function_app_module: importing function_app configures the loggers

    assert logging.getLogger("httpx").getEffectiveLevel() >= logging.WARNING
