"""Webhooks a receiver can order: every result and webhook carries the appointment's version, and a receiver
that drops older versions (devstack/receiver.py, as docs/integrate/webhooks.md says) ends with the newest state
whatever order a burst of webhooks arrives in."""

from __future__ import annotations

import random

import pytest

from devstack.receiver import keep_newest
from shared import queues
from tests.e2e.conftest import send
from tests.e2e.test_lifecycle import T1, T2, apt, by_type, lifecycle, outputs

pytestmark = pytest.mark.e2e


async def test_a_burst_out_of_order_ends_with_the_newest_version_at_the_receiver(
        host, queues_client, receiver_admin):
    # GIVEN one appointment's create, four reschedules and a cancel, sent at once in a shuffled order, while the
    # receiver is slow on a third of deliveries (so webhooks overtake each other)
    receiver_admin.put("fail", json={"status": 200, "times": 0, "slow_probability": 0.35, "slow_ms": 400,
                                     "seed": 21}).raise_for_status()
    appointment = apt()
    burst = [lifecycle("created", appointment, sequence=1, times=T1)]
    burst += [lifecycle("rescheduled", appointment, sequence=n, times=T2 if n % 2 else T1) for n in range(2, 6)]
    burst.append(lifecycle("cancelled", appointment, sequence=6))
    random.Random(21).shuffle(burst)
    for text in burst:
        await send(queues_client, text)
    await host.drain(timeout=90)
    await host.drain(timeout=30)
    # THEN every result carries a version, and versions are distinct per applied change
    results = [r for r in await outputs(queues_client, queues.JOIN_URLS) if r["appointmentId"] == appointment]
    assert results and all(isinstance(r["version"], int) and r["version"] >= 1 for r in results)
    newest = max(results, key=lambda r: r["version"])
    assert newest["status"] == "cancelled"
    # AND the receiver, dropping older versions, holds the newest: the cancelled appointment
    held = receiver_admin.get("appointments").json()[appointment]
    assert held["version"] == newest["version"] and held["status"] == "cancelled" and held["joinUrl"] is None
    # AND so would it in any arrival order of the same webhooks
    sent = [d for hooks in by_type(receiver_admin.get("deliveries").json()["deliveries"], appointment).values()
            for d in hooks]
    for seed in range(50):
        order = sent[:]
        random.Random(seed).shuffle(order)
        state: dict[str, dict[str, object]] = {}
        for data in order:
            keep_newest(state, data)
        assert state[appointment]["version"] == newest["version"] and state[appointment]["status"] == "cancelled"
