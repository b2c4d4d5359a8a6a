"""The run's other findings (no I/O): repeated deliveries a kill explains, disconnected organizers, Graph calls,
and the order disruptions fire in."""

from __future__ import annotations

import datetime as dt

import pytest

from chaos.accounts import Accounts, graph_accounts, split_duplicates, wrongly_disconnected
from chaos.disruptions import Disruptions
from chaos.workload import READY, build_workload

pytestmark = pytest.mark.unit

T0 = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)


def delivery(webhook_id: str, seconds: float, status: int = 200) -> dict[str, object]:
    return {"webhook_id": webhook_id, "status": status, "verified": True,
            "received_at": (T0 + dt.timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")}


def test_a_redelivery_after_a_kill_mid_delivery_is_told_apart_from_a_real_duplicate():
    # GIVEN three webhooks delivered twice, an instance killed 2 s after the first one's first delivery
    deliveries = [delivery("a_ready", 0), delivery("a_ready", 40), delivery("b_ready", 100), delivery("b_ready", 140),
                  delivery("c_ready", 200, status=503), delivery("c_ready", 210)]
    kills = [(T0 + dt.timedelta(seconds=2)).timestamp()]
    # WHEN they are split
    real, explained = split_duplicates(deliveries, kills)
    # THEN the killed delivery is explained, the other is a duplicate, a failed attempt is no delivery
    assert explained == ["a_ready"] and real == ["b_ready"]


def test_an_organizer_not_connected_is_wrongly_disconnected_when_nothing_was_revoked():
    status, disconnected = wrongly_disconnected([{"upn": "a@x", "status": "connected"},
                                                 {"upn": "b@x", "status": "needs_reconnect"}])
    assert status == {"a@x": "connected", "b@x": "needs_reconnect"} and disconnected == ["b@x"]


def test_graph_calls_beyond_what_the_ready_events_needed_are_explained():
    workload = build_workload(40, seed=3, malformed=0, duplicates=0)
    places = {e.key: {READY} for e in workload.events}
    needed = sum(2 if '"joinWebUrl"' in e.text else 1 for e in workload.events)
    stats = {"requests": needed + 9, "by_status": {"200": needed + 2, "503": 4, "429": 1, "504": 1}}
    calls, counted, surplus = graph_accounts(workload.events, places, stats)
    assert (calls, counted) == (needed + 9, needed)
    assert surplus == {"503": 4, "429": 1, "hang": 2, "401": 0, "other_errors": 0, "resolved_again": 2}
    accounts = Accounts({}, [], {"a@x": 6}, 330, 90.0, calls, counted, surplus, [], [], 3)
    assert accounts.lifetimes == 3.0 and "a@x=2.0" in accounts.token_line()


def test_disruptions_fire_refresh_kills_first_and_the_pause_apart_from_the_kills():
    plan = Disruptions(kills=2, storage_pause=5, refresh_kills=("before", "between")).plan()
    assert [action for _, action in plan] == ["refresh:before", "refresh:between", "kill", "pause", "kill"]
    with pytest.raises(ValueError):
        Disruptions(refresh_kills=("during",))
