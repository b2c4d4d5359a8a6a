"""What a chaos run does to the app while it works: kill -9 an instance, pause storage, kill inside a refresh.

Each disruption fires once the run has reached its share of terminal messages, and is recorded with its
time (monotonic, from the run's start, and wall clock, to match the receiver's delivery times) and what
actually happened, since a refresh kill depends on a refresh happening while it is armed.

Refresh kills, by stage (the Entra emulator holds the grant; devstack/entra/hold.py):
- ``before``: the refresh grant is parked before the emulator redeems it; the waiting instance is killed.
- ``between``: the emulator has redeemed the refresh token (a new one exists), the waiting instance is
  killed before it gets the answer, so the vault never sees the new token ("between redeem and save").
- ``after``: the answer is let through, and the instance is killed as soon as the organizer's vault entry
  has been written.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from chaos.fleet import Fleet, Instance, socket_inode
from devstack.stack import start_storage, stop_storage

REFRESH_STAGES = {"before": "before_redeem", "between": "after_redeem", "after": "after_redeem"}
# A refresh comes when an instance's access token for an organizer is within 5 minutes of expiry; with the
# run's short lifetimes that is every half minute or so while events flow.
REFRESH_WAIT_SECONDS = 120.0
VAULT_WRITE_WAIT_SECONDS = 15.0


@dataclass(frozen=True)
class Disruptions:
    """What to do to the app during a run."""

    instances: int = 3
    kills: int = 2  # SIGKILLs of an instance (round robin), each restarted a second later
    storage_pause: float = 5.0  # seconds Azurite is stopped mid-run (0: no pause)
    refresh_kills: tuple[str, ...] = ("between",)  # stages, from REFRESH_STAGES

    def __post_init__(self) -> None:
        unknown = set(self.refresh_kills) - set(REFRESH_STAGES)
        if unknown or self.instances < 1 or self.kills < 0 or self.storage_pause < 0:
            raise ValueError(f"bad disruptions: {self} (refresh stages are {', '.join(REFRESH_STAGES)})")

    @property
    def any_kill(self) -> bool:
        """Whether any instance dies mid-run (which allows redelivered malformed messages)."""
        return bool(self.kills or self.refresh_kills)

    def plan(self) -> list[tuple[float, str]]:
        """(share of terminal messages, action), in order: refresh kills early, while tokens are refreshed."""
        steps = [(0.05 + 0.15 * n, f"refresh:{stage}") for n, stage in enumerate(self.refresh_kills)]
        steps += [((n + 1) / (self.kills + 1), "kill") for n in range(self.kills)]
        if self.storage_pause:
            steps.append((0.45, "pause"))  # apart from the kills, so their effects are told apart
        return sorted(steps)


@dataclass
class Disruption:
    """One disruption as it happened."""

    kind: str
    at: float  # seconds since the run started
    wall: float  # time.time() when it hit
    instance: int | None = None
    detail: str = ""

    def describe(self) -> str:
        """One line."""
        who = f" instance {self.instance}" if self.instance is not None else ""
        return f"t={self.at:.1f}s {self.kind}{who}{': ' + self.detail if self.detail else ''}"


@dataclass
class Disrupter:
    """Carries out the plan against a running fleet, a stack and its Entra emulator."""

    fleet: Fleet
    state_dir: Path
    entra_admin: httpx.AsyncClient
    vault_etag: Callable[[str], str | None]  # organizer (object id) -> its vault entry's ETag
    started: float
    entra_port: int
    pause_seconds: float = 5.0
    # A calendar-backed run's notification faults (chaos.organizer.NotificationDisrupter): the `notify:*` steps.
    notify: Any = None
    done: list[Disruption] = field(default_factory=list)
    _next_victim: int = 0

    def _record(self, kind: str, instance: Instance | None = None, detail: str = "") -> Disruption:
        event = Disruption(kind, round(time.monotonic() - self.started, 1), time.time(),
                           instance.number if instance else None, detail)
        self.done.append(event)
        return event

    async def run(self, action: str) -> None:
        """Carry out one step of the plan; a step that breaks is recorded as such (the run goes on)."""
        try:
            await self._run(action)
        except Exception as exc:
            self._record(f"{action} failed", detail=f"{type(exc).__name__}: {exc}"[:200])

    async def _run(self, action: str) -> None:
        if action == "kill":
            victim = self.fleet.instances[self._next_victim % len(self.fleet.instances)]
            self._next_victim += 1
            self._record("kill -9", victim)
            await asyncio.to_thread(self.fleet.kill_and_restart, victim)
        elif action == "pause":
            seconds = self.pause_seconds
            event = self._record("storage paused", detail=f"Azurite stopped for {seconds:.0f}s")
            await asyncio.to_thread(stop_storage, self.state_dir)
            await asyncio.sleep(seconds)
            await asyncio.to_thread(start_storage, self.state_dir)
            event.detail += f", back at t={time.monotonic() - self.started:.1f}s"
        elif action.startswith("refresh:"):
            await self._refresh_kill(action.split(":", 1)[1])
        elif action.startswith("notify:") and self.notify is not None:
            event = self._record(action)
            event.detail = await self.notify.run(action)
        else:
            raise ValueError(action)

    async def _parked(self) -> dict[str, Any] | None:
        deadline = time.monotonic() + REFRESH_WAIT_SECONDS
        while time.monotonic() < deadline:
            parked = (await self.entra_admin.get("hold")).json()["parked"]
            if parked:
                return dict(parked[0])
            await asyncio.sleep(0.05)
        return None

    async def _release(self, action: str) -> None:
        await self.entra_admin.request("DELETE", "hold", json={"action": action})

    async def _refresh_kill(self, stage: str) -> None:
        (await self.entra_admin.put("hold", json={"stage": REFRESH_STAGES[stage], "times": 1})).raise_for_status()
        parked = await self._parked()
        if parked is None:
            await self._release("answer")
            self._record(f"refresh kill ({stage})", detail="no refresh happened while armed: nothing killed")
            return
        port = int(parked["peer_port"] or 0)
        victim = self.fleet.owner_of_port(port, self.entra_port)
        if victim is None:
            await self._release("answer")
            self._record(f"refresh kill ({stage})", detail=f"the caller waiting on port {port} is no live instance "
                         f"(socket {'found' if socket_inode(port, self.entra_port) else 'gone'}): nothing killed")
            return
        organizer = str(parked["user"])
        if stage == "after":
            before = await asyncio.to_thread(self.vault_etag, organizer)
            await self._release("answer")
            saved = False
            for _ in range(int(VAULT_WRITE_WAIT_SECONDS / 0.02)):
                saved = await asyncio.to_thread(self.vault_etag, organizer) != before
                if saved:
                    break
                await asyncio.sleep(0.02)
            detail = "killed after its vault write" if saved else "vault not written within 15s; killed anyway"
            self._record(f"refresh kill ({stage})", victim, f"organizer {organizer[:8]}…: {detail}")
            await asyncio.to_thread(self.fleet.kill_and_restart, victim)
            return
        self._record(f"refresh kill ({stage})", victim,
                     f"organizer {organizer[:8]}…: killed while waiting on its refresh "
                     + ("before the redeem" if stage == "before" else "after the redeem, before the save"))
        await asyncio.to_thread(victim.kill)
        await self._release("drop")
        await asyncio.sleep(1.0)
        await asyncio.to_thread(victim.start)
