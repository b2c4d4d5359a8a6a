"""One "https, or plain http to loopback in development" rule for settings and webhook destinations."""

from __future__ import annotations

import pytest

from shared.common.urls import host_of, is_allowed_url, is_loopback_host

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST", "localhost.", "127.0.0.1", "127.8.9.1", "::1", "[::1]"])
def test_loopback_hosts(host: str) -> None:
    # "localhost." (the root dot) was loopback for webhooks but not for settings; both agree now.
    assert is_loopback_host(host)


@pytest.mark.parametrize("host", ["", "example.com", "localhost.example.com", "10.0.0.1", "::2", "0.0.0.0"])
def test_not_loopback(host: str) -> None:
    assert not is_loopback_host(host)


@pytest.mark.parametrize(("url", "development", "allowed"), [
    ("https://scheduler.example.com/hooks", False, True),
    ("https://127.0.0.1:5445/webhooks", False, True),
    ("http://127.0.0.1:5445/webhooks", True, True),
    ("http://localhost.:7071/api/auth/callback", True, True),
    ("http://[::1]:7071/api/auth/callback", True, True),
    ("http://127.0.0.1:5445/webhooks", False, False),   # never plain http in production
    ("http://scheduler.example.com/hooks", True, False),  # plain http only to loopback, even in development
    ("ftp://scheduler.example.com/", True, False),
    ("https:///no-host", False, False),
    ("http://[::1/broken", True, False),
])
def test_allowed_urls(url: str, development: bool, allowed: bool) -> None:
    assert is_allowed_url(url, development=development) is allowed


def test_host_of():
    assert host_of("https://Scheduler.Example.com:8443/x") == "scheduler.example.com"
    assert host_of("http://[::1/broken") == "" and host_of("not a url") == ""
