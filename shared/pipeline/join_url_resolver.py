"""Resolve an organizer's meeting to its join URL, shared by the queue function and the HTTP twin."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from shared.exceptions import ThrottledError
from shared.identity.tokens import OrganizerIdentity, TokenSource

T = TypeVar("T")
# Graph sends 429 without Retry-After rarely; a second is its documented minimum back-off.
_DEFAULT_THROTTLE_WAIT = 1.0


class JoinUrlLookup(Protocol):
    """The Graph calls the resolver needs (GraphGateway in production, a fake in unit tests)."""

    async def identify(self, organizer: str, tenant: str | None = None,
                       tokens: TokenSource | None = None) -> OrganizerIdentity:
        """Who the organizer is (tenant and object id); refused when not connected or not in `tenant`."""

    async def join_web_url(self, organizer: str, meeting_id: str, tokens: TokenSource | None = None,
                           tenant: str | None = None) -> str:
        """The join URL of the organizer's meeting (tokens: where the delegated token comes from)."""

    async def find_meeting_id(self, organizer: str, join_web_url: str, tokens: TokenSource | None = None,
                              tenant: str | None = None) -> str:
        """The meeting id behind a Teams joinWebUrl."""


class JoinUrlResolver:
    """Meeting (by id or joinWebUrl) → join URL, retrying short throttling inside a fixed sleep budget."""

    def __init__(self, graph: JoinUrlLookup, *, inline_throttle_budget: float,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
        self._graph = graph
        self._budget = inline_throttle_budget
        self._sleep = sleep

    async def identify(self, organizer: str, tenant: str | None = None,
                       tokens: TokenSource | None = None) -> OrganizerIdentity:
        """The organizer's tenant and object id, before anything is asked of Graph for them."""
        return await self._graph.identify(organizer, tenant, tokens)

    async def resolve(self, organizer: str, meeting_id: str | None, join_web_url: str | None,
                      *, inline_throttle_budget: float | None = None,
                      tokens: TokenSource | None = None, tenant: str | None = None) -> tuple[str, str]:
        """Return (meeting id, join URL); raise the app's classified errors.

        `tokens` overrides the worker's organizer credentials (the HTTP twin's On-Behalf-Of path); `tenant` is
        the organizer's tenant, whose token alone may be used.
        """
        budget = [self._budget if inline_throttle_budget is None else inline_throttle_budget]
        if meeting_id is None:
            if join_web_url is None:
                raise ValueError("a meeting id or a joinWebUrl is required")
            url = join_web_url
            meeting_id = await self._throttled(
                budget, lambda: self._graph.find_meeting_id(organizer, url, tokens, tenant))
        mid = meeting_id
        return mid, await self._throttled(budget, lambda: self._graph.join_web_url(organizer, mid, tokens, tenant))

    async def _throttled(self, budget: list[float], call: Callable[[], Awaitable[T]]) -> T:
        # The budget is shared by both calls of one resolution: an invocation never sleeps longer.
        while True:
            try:
                return await call()
            except ThrottledError as exc:
                wait = _DEFAULT_THROTTLE_WAIT if exc.retry_after is None else exc.retry_after
                if wait > budget[0]:
                    raise
                budget[0] -= wait
                await self._sleep(wait)
