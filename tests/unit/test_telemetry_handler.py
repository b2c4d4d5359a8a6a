"""The Graph telemetry handler's endpoint check answers as msgraph-core's own does."""

from __future__ import annotations

import httpx
import pytest
from msgraph_core.middleware import GraphTelemetryHandler

from shared.graph.telemetry_handler import TelemetryHandler

URLS = [
    "https://graph.microsoft.com/v1.0/users/x/onlineMeetings/y/getVirtualAppointmentJoinWebUrl()",
    "https://graph.microsoft.com:443/v1.0/me",
    "https://GRAPH.microsoft.com/v1.0/me",
    "https://graph.microsoft.us/v1.0/me",
    "https://dod-graph.microsoft.us/beta/me",
    "https://microsoftgraph.chinacloudapi.cn/v1.0/me",
    "https://canary.graph.microsoft.com/v1.0/me",
    "http://graph.microsoft.com/v1.0/me",
    "https://127.0.0.1:8443/v1.0/me",
    "https://localhost/v1.0/me?$filter=JoinWebUrl%20eq%20'x'",
    "https://graph.microsoft.com.evil.example/v1.0/me",
]


@pytest.mark.parametrize("url", URLS)
def test_same_answer_as_the_sdk(url: str) -> None:
    parsed = httpx.URL(url)
    assert TelemetryHandler().is_graph_url(parsed) == GraphTelemetryHandler().is_graph_url(parsed)


def test_graph_is_recognised() -> None:
    assert TelemetryHandler().is_graph_url(httpx.URL(URLS[0]))
    assert not TelemetryHandler().is_graph_url(httpx.URL("https://127.0.0.1:8443/v1.0/me"))
