"""Where a webhook may go: the allow-list, and public addresses only, checked at connect time (no DNS rebinding)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpcore
import httpx

from shared.exceptions import DestinationRefusedError

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def host_allowed(host: str, patterns: Iterable[str]) -> bool:
    """Whether host equals an exact pattern or sits under a `*.suffix` one (the bare suffix does not)."""
    name = host.lower().rstrip(".")
    for pattern in patterns:
        if pattern.startswith("*."):
            if name.endswith(pattern[1:]) and len(name) > len(pattern) - 1:
                return True
        elif name == pattern:
            return True
    return False


def address_refusal(address: str, *, allow_loopback: bool = False) -> str | None:
    """Why an IP address may not be connected to (a category name), or None for a public address."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        # IPv6 forms that carry an IPv4 address are judged by that address, or ::ffff:10.0.0.1 slips by.
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is None and ip.teredo:
            embedded = ip.teredo[1]
        if embedded is not None:
            return address_refusal(str(embedded), allow_loopback=allow_loopback)
    if ip.is_loopback:
        return None if allow_loopback else "loopback"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_link_local:
        return "link_local"
    if ip.is_multicast:
        return "multicast"
    if ip in _CGNAT:
        return "cgnat"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private:
        return "private"
    if not ip.is_global:
        return "not_global"
    return None


# Host name and port -> every address it resolves to. Not the join-URL resolver: this one is DNS.
DnsResolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve_host(host: str, port: int) -> list[str]:
    """Every address the name resolves to (TCP), in resolver order, without duplicates."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[str] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """Resolves once, refuses if any address is non-public, then connects to a checked IP.

    TLS still runs against the URL's host name (httpcore passes the origin host as SNI and for certificate
    checks), so the name is verified while DNS rebinding between check and connect is impossible.
    """

    def __init__(self, *, allow_loopback: bool, resolver: DnsResolver | None = None,
                 inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._allow_loopback = allow_loopback
        self._resolver = resolver
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,  # noqa: ASYNC109 (httpcore's API)
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        """Connect to host:port only if every address it resolves to is allowed."""
        # Looked up per call so tests can monkeypatch the module-level resolver.
        resolver = self._resolver or resolve_host
        try:
            addresses = await asyncio.wait_for(resolver(host, port), timeout)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        if not addresses:
            raise httpcore.ConnectError(f"{host} resolved to no address")
        for address in addresses:
            refusal = address_refusal(address, allow_loopback=self._allow_loopback)
            if refusal is not None:
                # Refuse the whole name, not just this address: a mixed answer is how rebinding starts.
                raise DestinationRefusedError(f"{host} resolves to a {refusal} address", reason="destination_refused")
        last: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                                     socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(self, path: str, timeout: float | None = None,  # noqa: ASYNC109
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        """Refused: webhooks go over TCP only."""
        raise DestinationRefusedError("unix sockets are not a webhook destination")

    async def sleep(self, seconds: float) -> None:
        """Delegate to the inner backend."""
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """An httpx transport whose connections go through GuardedNetworkBackend; no proxies, HTTP/1.1."""

    def __init__(self, ssl_context: ssl.SSLContext, *, allow_loopback: bool, resolver: DnsResolver | None = None,
                 limits: httpx.Limits | None = None) -> None:
        limits = limits or httpx.Limits(max_connections=32, max_keepalive_connections=16, keepalive_expiry=30)
        # trust_env=False: a proxy from the environment would be checked instead of the real destination.
        super().__init__(verify=ssl_context, trust_env=False)
        # httpx has no public hook for the network backend; the pool it builds is replaced by an equal one
        # that differs only in the backend (httpx is pinned to 0.28.x in requirements.txt).
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=GuardedNetworkBackend(allow_loopback=allow_loopback, resolver=resolver),
        )
