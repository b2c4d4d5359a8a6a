"""Graph request routing: /v1.0, then /me or /users/{id}, then a Route by HTTP method and path."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from devstack.graph.emulator import Caller, GraphEmulator, GraphError


@dataclass(frozen=True)
class Call:
    """One Graph request as an endpoint sees it: routed, its caller authenticated, past fault injection."""

    request: web.Request
    emu: GraphEmulator
    caller: Caller
    # The id or UPN after /users/, or None for /me.
    user_ref: str | None
    params: Mapping[str, str]


Endpoint = Callable[[Call], Awaitable[tuple[int, Any]]]
# Collections served at /v1.0/<name> rather than under a user.
ROOT_COLLECTIONS = frozenset({"subscriptions"})


@dataclass(frozen=True)
class Route:
    """An endpoint under /v1.0/me/ or /v1.0/users/{id}/, by HTTP method and the path that follows.

    Segments of `path` match without regard to case; `{name}` takes any one segment as a parameter; a
    trailing `()` (an OData function call) may be left out. A `{meeting_id}` parameter also keys the
    per-meeting counters and fault rules.
    """

    method: str
    path: str
    endpoint: Endpoint
    # Rooted at /v1.0 itself (`/v1.0/subscriptions`) rather than under /me or /users/{id}.
    rooted: bool = False

    def match(self, segments: Sequence[str]) -> dict[str, str] | None:
        """The path parameters if the segments fit this route's path, else None."""
        pattern = self.path.split("/")
        if len(pattern) != len(segments):
            return None
        params: dict[str, str] = {}
        for part, segment in zip(pattern, segments, strict=True):
            if part.startswith("{") and part.endswith("}"):
                params[part[1:-1]] = segment
            elif segment.lower() not in (part.lower(), part.lower().removesuffix("()")):
                return None
        return params


def parse_path(raw_path: str) -> tuple[str | None, list[str], bool]:
    """Split `/v1.0/users/{id}/...` or `/v1.0/me/...` into (user ref or None for me, rest, False), or a path
    rooted at /v1.0 itself (`/v1.0/subscriptions/...`) into (None, rest, True)."""
    parts = [unquote(p) for p in raw_path.split("/") if p]
    if not parts or parts[0] != "v1.0":
        raise GraphError(400, "BadRequest", "Invalid version: only v1.0 is emulated.")
    if len(parts) >= 2 and parts[1].lower() == "me":
        return None, parts[2:], False
    if len(parts) >= 3 and parts[1].lower() == "users":
        return parts[2], parts[3:], False
    if len(parts) >= 2 and parts[1].lower() in ROOT_COLLECTIONS:
        return None, parts[1:], True
    segment = parts[1] if len(parts) > 1 else ""
    raise GraphError(400, "BadRequest", f"Resource not found for the segment '{segment}'.")


def resolve(routes: Sequence[Route], method: str, user_ref: str | None, rest: Sequence[str],
            rooted: bool = False) -> tuple[Route, dict[str, str]]:
    """The first route for this method and path, with its path parameters; else Graph's 405 or 400."""
    # A method no route takes is a 405 even on an unknown path.
    if all(route.method != method for route in routes):
        raise _method_not_allowed(method)
    path_known = False
    for route in routes:
        if route.rooted != rooted:
            continue
        params = route.match(rest)
        if params is None:
            continue
        if route.method == method:
            return route, params
        path_known = True
    if path_known:
        raise _method_not_allowed(method)
    segment = rest[-1] if rest else (user_ref or "me")
    raise GraphError(400, "BadRequest", f"Resource not found for the segment '{segment}'.")


def _method_not_allowed(method: str) -> GraphError:
    return GraphError(405, "MethodNotAllowed", f"The method {method} is not allowed here.")
