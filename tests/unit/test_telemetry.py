"""Telemetry: nothing attempted without a connection string; the decorator keeps signatures intact."""

import inspect
import sys

import pytest

from shared import telemetry

pytestmark = pytest.mark.unit


def test_authentication_string_names_the_managed_identity():
    assert telemetry.parse_authentication_string("Authorization=AAD;ClientId=abc") == "abc"
    assert telemetry.parse_authentication_string("Authorization=AAD") == ""
    assert telemetry.parse_authentication_string("") is None
    assert telemetry.parse_authentication_string("InstrumentationKey=x") is None


def test_without_a_connection_string_nothing_is_imported_or_exported(monkeypatch):
    # GIVEN a fresh telemetry state and no connection string
    monkeypatch.setattr(telemetry, "_configured", False)
    monkeypatch.setattr(telemetry, "_exporting", False)
    sys.modules.pop("azure.monitor.opentelemetry", None)
    # WHEN configured THEN nothing is exported and the distro was never imported
    assert telemetry.configure({}) is False
    assert "azure.monitor.opentelemetry" not in sys.modules
    telemetry.record_gauge("queue_depth", 3, {"queue": "x"})  # a no-op, not an error


async def test_instrumented_functions_keep_their_signature_and_kind(monkeypatch):
    monkeypatch.setattr(telemetry, "_configured", True)

    @telemetry.instrumented({})
    async def handler(msg: str, out: int) -> str:
        return msg * out

    @telemetry.instrumented({})
    def sync_handler(req: str) -> str:
        return req

    assert inspect.iscoroutinefunction(handler)
    assert list(inspect.signature(handler).parameters) == ["msg", "out"]
    assert await handler("a", out=2) == "aa" and sync_handler("r") == "r"
