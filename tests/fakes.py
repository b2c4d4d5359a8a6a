"""Fakes shared by unit and functional tests (fakes over mocks: they behave, they don't script)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import azure.functions as func

from shared.identity.tokens import AccessToken, DelegatedTokenAcquirer


class FakeGraph:
    """Meetings by (organizer, id); failures queued per call and raised in order."""

    def __init__(self, meetings: dict[tuple[str, str], str] | None = None,
                 by_join_web_url: dict[tuple[str, str], str] | None = None) -> None:
        self.meetings = meetings or {}
        self.by_join_web_url = by_join_web_url or {}
        self.failures: list[BaseException] = []
        self.calls: list[tuple[str, str, str]] = []

    def _maybe_fail(self) -> None:
        if self.failures:
            raise self.failures.pop(0)

    async def join_web_url(self, organizer: str, meeting_id: str, tokens: Any = None) -> str:
        from shared.exceptions import MeetingNotFoundError

        self.calls.append(("join", organizer, meeting_id))
        self._maybe_fail()
        try:
            return self.meetings[(organizer, meeting_id)]
        except KeyError:
            raise MeetingNotFoundError("Graph 404 NotFound: no such meeting") from None

    async def find_meeting_id(self, organizer: str, join_web_url: str, tokens: Any = None) -> str:
        from shared.exceptions import MeetingNotFoundError

        self.calls.append(("find", organizer, join_web_url))
        self._maybe_fail()
        try:
            return self.by_join_web_url[(organizer, join_web_url)]
        except KeyError:
            raise MeetingNotFoundError("no online meeting of the organizer has that joinWebUrl") from None


class FakeAcquirer(DelegatedTokenAcquirer):
    """Hands out numbered tokens; counts how often it was asked."""

    def __init__(self, lifetime: float = 3600.0, token: str | None = None) -> None:
        self.lifetime = lifetime
        self.token = token
        self.calls = 0

    def acquire(self, organizer: str, scopes: Sequence[str]) -> AccessToken:
        import time

        self.calls += 1
        return AccessToken(self.token or f"token-{organizer}-{self.calls}", time.time() + self.lifetime)


class CapturingOut(func.Out[Any]):
    """A concrete func.Out (the library's is abstract)."""

    def __init__(self) -> None:
        self.value: Any = None

    def set(self, val: Any) -> None:
        self.value = val

    def get(self) -> Any:
        return self.value


async def no_sleep(seconds: float) -> None:
    """A sleep that records nothing and waits for nothing."""
