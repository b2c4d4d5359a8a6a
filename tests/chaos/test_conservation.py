"""Conservation on the local stack: one instance under the full fault mix (standalone meetings); three instances
killed mid-run; and the default `make chaos` disruptions (three instances, kills, a storage pause, a kill inside a
refresh). The last two are calendar-backed, as `make chaos` is: the staff member edits some appointments in Outlook
and Graph's notifications come back under faults.

`make chaos` runs the same code at 2,000 events (python -m chaos); these keep it honest in `make test`.
The ledger comes from the queues and the webhook receiver only (chaos.ledger), the rest from the vault and
the emulators (chaos.accounts).
"""

from __future__ import annotations

import pytest

from chaos.disruptions import Disruptions
from chaos.runner import RunOptions, run
from tests.log_scan import scan_text_file

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]
CONTOSO, FABRIKAM = "7d0c2e5a-1b3f-4c8e-9a6d-0e5f4b3c2a10", "3f9a7c21-6b4d-4e8a-a1c5-9d2e8f7b6a40"


def _check(report) -> None:
    ledger = report.ledger
    print(ledger.line(), ledger.details(), report.realised_mix(), sep="\n")
    assert report.completed, f"queues did not settle within {report.options.timeout}s"
    assert len(ledger.lost) == 0, ledger.problems()
    assert ledger.ok, ledger.problems()
    # Every malformed message was rejected on its first attempt with its reason code (late_rejections == 0,
    # part of ok), the transport-level ones poisoned; the duplicates made no second webhook id.
    assert ledger.events == report.options.events
    assert ledger.ready + ledger.rejected + ledger.poison == ledger.events
    # Organizers of two tenants: each tenant's events resolved, under its own tenant.
    assert set(report.ready_by_tenant) == {CONTOSO, FABRIKAM}, report.ready_by_tenant
    findings = [finding for log in report.harness_logs for finding in scan_text_file(log)]
    assert not findings, "the app logged credentials or join links:\n" + "\n".join(map(str, findings[:10]))


async def test_nothing_is_lost_under_faults_duplicates_and_bad_input(tmp_path):
    # GIVEN 150 events, 5% malformed and 5% sent twice, with Graph answering 503 (10%), 429 with Retry-After
    # 1-30 s (5%) and hanging past the timeout (2%), and the receiver failing 20% and slow on 5%
    calm = Disruptions(instances=1, kills=0, storage_pause=0, refresh_kills=())
    report = await run(RunOptions(events=150, seed=20261121, disruptions=calm, state_dir=tmp_path, quiet=True,
                                  timeout=420, meeting_kind="standalone"))
    # THEN every event ends in exactly one terminal place, each owed webhook reaches the receiver once
    _check(report)
    assert report.ledger.duplicate_deliveries == 0, "the dispatcher delivers each webhook id once"
    assert report.graph_stats["by_status"].get("503") and report.receiver_stats["5xx"], "faults were injected"


async def test_nothing_is_lost_when_instances_are_killed_mid_run(tmp_path):
    # GIVEN the same mix on three instances, WHEN two of them are SIGKILLed mid-run and started again
    # (access tokens live an hour here: refreshes under kills are the next test's subject)
    kills = Disruptions(instances=3, kills=2, storage_pause=0, refresh_kills=())
    report = await run(RunOptions(events=150, seed=4242, disruptions=kills, token_lifetime=3600, state_dir=tmp_path,
                                  quiet=True, timeout=420))
    # THEN nothing is lost: in-flight messages come back after their lease, claims left by the dead process
    # are taken over once stale, and duplicates are absorbed by the idempotency records
    assert len(report.kills) == 2 and len(report.harness_logs) == 5
    _check(report)
    # A webhook is delivered again only when an instance died in the middle of delivering it.
    assert report.accounts.duplicate_deliveries == []


async def test_the_default_disruptions_leave_everyone_connected_and_send_each_webhook_once(tmp_path):
    # GIVEN three instances with 10 s access tokens (a refresh comes soon in a short run), WHEN one is killed,
    # storage is stopped for 5 s, and an instance is killed while it waits on a refresh the identity platform
    # has already redeemed
    report = await run(RunOptions(events=150, seed=777, disruptions=Disruptions(kills=1), token_lifetime=310,
                                  state_dir=tmp_path, quiet=True, timeout=420))
    print(report.targets(), report.accounts.organizers_line(), *(d.describe() for d in report.disruptions), sep="\n")
    assert any("refresh kill" in d.kind and d.instance for d in report.disruptions), "no kill inside a refresh"
    # THEN the events' ledger balances, nobody is disconnected, no webhook is sent twice
    _check(report)
    assert report.accounts.duplicate_deliveries == [] and report.accounts.wrongly_disconnected == []
    # AND the organizer side: every edit told once, none of the app's own writes told as the organizer's, every
    # record as its calendar event
    assert report.organizer is None or report.organizer.ok, report.organizer.problems()
    # AND so the targets of `make chaos`
    assert report.targets() == "lost=0 duplicate_deliveries=0 wrongly_disconnected=0 attendance_wrong=0 diverged=0"
