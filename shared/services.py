"""The worker's long-lived objects, built on first use so that start-up imports stay cheap."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import cached_property
from typing import TYPE_CHECKING

from shared.common.vocabulary import MeetingKind
from shared.exceptions import OrganizerNotConnectedError, SettingsError
from shared.graph.calendar import CalendarWriter
from shared.graph.gateway import GraphGateway
from shared.graph.meetings import MeetingWriter
from shared.identity.app_credential import AppCredential
from shared.identity.bearer import BearerValidator
from shared.identity.dev_password import DevPasswordAcquirer
from shared.identity.msal import MsalClients
from shared.identity.tokens import DelegatedCredentials, DelegatedTokenAcquirer
from shared.identity.vault import ConnectionStatus, TokenVault, VaultEntry
from shared.identity.vault_acquirer import VaultTokenAcquirer
from shared.identity.vault_blob import BlobTokenVault
from shared.intake.config import IntakeSettings
from shared.intake.organizers import OrganizerMap
from shared.pipeline.appointment_flow import AppointmentFlow
from shared.pipeline.join_url_resolver import JoinUrlResolver
from shared.pipeline.processor import AppointmentProcessor
from shared.pipeline.rejections import RejectionRecorder
from shared.queues import (
    APPOINTMENTS,
    APPOINTMENTS_REJECTED,
    ATTENDANCE_CHECKS,
    CALENDAR_NOTIFICATIONS,
    SMS_FAILED,
    WEBHOOK_DEAD_LETTER,
    WEBHOOK_OUTBOX,
)
from shared.settings import Settings
from shared.storage.aliases import TableAliasStore
from shared.storage.appointments import TableAppointmentStore
from shared.storage.idempotency import TableIdempotencyStore
from shared.storage.overflow import BlobOverflowStore
from shared.storage.queue_client import NEVER_EXPIRES, QueueWriter
from shared.storage.requeue import QueueRequeuer

if TYPE_CHECKING:
    from shared.attendance.checker import AttendanceChecker
    from shared.calendar_sync.keeper import SubscriptionKeeper
    from shared.calendar_sync.sync import CalendarSync, Connected, SyncOutcome
    from shared.graph.subscriptions import MailboxLimiter
    from shared.webhooks.dispatcher import WebhookDispatcher


def build_acquirer(settings: Settings, *, vault: TokenVault | None = None,
                   msal_clients: MsalClients | None = None) -> DelegatedTokenAcquirer:
    """The acquirer CREDENTIAL_MODE asks for (settings validation already refused app-only modes).

    `vault` and `msal_clients` let the worker share its token vault and MSAL applications (vault mode).
    """
    if settings.credential_mode == "vault":
        return VaultTokenAcquirer(settings, vault or blob_vault(settings), msal_clients)
    if settings.credential_mode == "dev_password":
        return DevPasswordAcquirer(settings, msal_clients.credential if msal_clients else None)
    raise SettingsError([f"CREDENTIAL_MODE={settings.credential_mode!r} has no implementation"])


def blob_vault(settings: Settings) -> BlobTokenVault:
    """The token vault the settings name (entries before tenancy belong to ENTRA_TENANT_ID)."""
    return BlobTokenVault(settings.storage, settings.token_vault_container, settings.tenant_id)


class Services:
    """One instance per worker process: one Graph client, one token cache, reused by every invocation."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def credentials(self) -> DelegatedCredentials:
        """Delegated tokens per organizer, cached in memory."""
        return DelegatedCredentials(build_acquirer(self.settings, vault=self.vault, msal_clients=self.msal_clients))

    @cached_property
    def vault(self) -> TokenVault:
        """The token vault: organizer token caches and sign-in flows in a private blob container."""
        return blob_vault(self.settings)

    @cached_property
    def app_credential(self) -> AppCredential:
        """How the app proves itself to Entra (ENTRA_APP_CREDENTIAL), shared by MSAL and On-Behalf-Of."""
        return AppCredential(self.settings)

    @cached_property
    def msal_clients(self) -> MsalClients:
        """The worker's MSAL applications (built on first use)."""
        return MsalClients(self.settings, self.app_credential)

    @cached_property
    def vault_acquirer(self) -> VaultTokenAcquirer:
        """Refreshes vault entries (keep-alive), whatever CREDENTIAL_MODE the queue path uses."""
        return VaultTokenAcquirer(self.settings, self.vault, self.msal_clients)

    @cached_property
    def bearer(self) -> BearerValidator:
        """Validates the HTTP twin's bearer tokens (keys fetched on first use)."""
        return BearerValidator(self.settings)

    @cached_property
    def intake(self) -> IntakeSettings:
        """The webhook intakes' secrets and organizer mapping."""
        return IntakeSettings(
            calcom_secret=self.settings.calcom_webhook_secret,
            calendly_signing_key=self.settings.calendly_webhook_signing_key,
            standard_secrets=self.settings.intake_webhook_secrets,
            organizers=OrganizerMap(self.settings.intake_organizer_map, self.settings.intake_organizer_domains,
                                    connected=self._is_connected))

    def _is_connected(self, upn: str) -> bool:
        """Whether a UPN names an organizer connected in the token vault (blocking: a blob read)."""
        try:
            entry = self.vault.get(upn)
        except OrganizerNotConnectedError:
            return False  # known in several tenants: only a configured mapping can say which
        return entry is not None and entry.status == ConnectionStatus.CONNECTED

    @cached_property
    def graph(self) -> GraphGateway:
        """The worker's Graph client."""
        return GraphGateway(self.settings, self.credentials)

    @cached_property
    def resolver(self) -> JoinUrlResolver:
        """Meeting → join URL, shared by the queue function and the HTTP twin."""
        return JoinUrlResolver(self.graph, inline_throttle_budget=self.settings.throttle_inline_max_seconds)

    @cached_property
    def idempotency(self) -> TableIdempotencyStore:
        """One record per event id and per webhook id, in the app's storage account."""
        return TableIdempotencyStore(self.settings.storage, self.settings.idempotency_table,
                                     self.settings.idempotency_window_hours * 3600)

    @cached_property
    def overflow(self) -> BlobOverflowStore:
        """Originals too big for their rejection or dead-letter record, kept whole in a blob."""
        return BlobOverflowStore(self.settings.storage, self.settings.message_overflow_container)

    @cached_property
    def meetings(self) -> MeetingWriter:
        """Meeting writes and client SMS as the organizer (same Graph client)."""
        return MeetingWriter(self.graph)

    @cached_property
    def appointments(self) -> TableAppointmentStore:
        """One record per appointment: its meeting, the last change applied, its status."""
        return TableAppointmentStore(self.settings.storage, self.settings.appointments_table)

    @cached_property
    def aliases(self) -> TableAliasStore:
        """Which earlier booking a rescheduled booking stands for (Calendly), in the appointments table."""
        return TableAliasStore(self.settings.storage, self.settings.appointments_table)

    @cached_property
    def flow(self) -> AppointmentFlow:
        """The appointment lifecycle against the record store and Graph."""
        return AppointmentFlow(self.resolver, self.meetings, self.appointments,
                               meeting_management=self.settings.meeting_management,
                               stale_after_seconds=self.settings.idempotency_stale_claim_seconds,
                               calendar=self.calendar, meeting_kind=self.settings.meeting_kind)

    @cached_property
    def calendar(self) -> CalendarWriter:
        """Calendar-backed meetings as the organizer (same Graph client); used by records of that kind."""
        return CalendarWriter(self.graph)

    @cached_property
    def processor(self) -> AppointmentProcessor:
        """The queue function's logic."""
        rejections = RejectionRecorder(QueueWriter(self.settings.storage, APPOINTMENTS_REJECTED,
                                                   time_to_live=NEVER_EXPIRES), self.overflow,
                                       self.idempotency,
                                       stale_claim_seconds=self.settings.idempotency_stale_claim_seconds)
        return AppointmentProcessor(self.flow, QueueRequeuer(self.settings.storage, APPOINTMENTS),
                                    self.idempotency, rejections=rejections,
                                    max_requeues=self.settings.throttle_max_requeues,
                                    stale_claim_seconds=self.settings.idempotency_stale_claim_seconds,
                                    sms=self.meetings if self.settings.client_sms else None,
                                    sms_reminder=self.settings.client_sms_reminder,
                                    attendance_grace_minutes=(self.settings.attendance_grace_minutes
                                                              if self.settings.attendance_reports else None))

    @cached_property
    def attendance(self) -> AttendanceChecker:
        """check_attendance's logic: the record, the meeting's attendance reports, the check re-hidden until due."""
        from shared.attendance.checker import AttendanceChecker
        from shared.attendance.reports import AttendanceReader

        return AttendanceChecker(self.appointments, AttendanceReader(self.graph),
                                 QueueRequeuer(self.settings.storage, ATTENDANCE_CHECKS),
                                 wait_hours=self.settings.attendance_wait_hours,
                                 calendar=self.calendar if self.settings.meeting_kind == MeetingKind.CALENDAR else None)

    @cached_property
    def mailbox_limiter(self) -> MailboxLimiter:
        """At most 4 Graph requests at once per organizer's mailbox on the calendar-sync path."""
        from shared.graph.subscriptions import MailboxLimiter

        return MailboxLimiter()

    @cached_property
    def subscriptions(self) -> SubscriptionKeeper:
        """The organizers' change-notification subscriptions (MEETING_KIND=calendar)."""
        from shared.calendar_sync.keeper import SubscriptionKeeper
        from shared.graph.subscriptions import SubscriptionClient
        from shared.storage.subscriptions import TableSubscriptionStore

        store = TableSubscriptionStore(self.settings.storage, self.settings.appointments_table)
        return SubscriptionKeeper(SubscriptionClient(self.graph, self.mailbox_limiter), store, self.graph.identify,
                                  base_url=self.settings.graph_notification_base_url,
                                  minutes=self.settings.graph_subscription_minutes)

    @cached_property
    def calendar_sync(self) -> CalendarSync:
        """handle_calendar_notification's and sync_calendars' logic."""
        from shared.calendar_sync.changes import OrganizerChanges
        from shared.calendar_sync.sync import CalendarSync

        keeper = self.subscriptions
        changes = OrganizerChanges(self.appointments,
                                   CalendarSync.links(self.calendar, self.resolver, self.mailbox_limiter),
                                   stale_after_seconds=self.settings.idempotency_stale_claim_seconds,
                                   reader=CalendarSync.reader(self.calendar, self.mailbox_limiter))
        return CalendarSync(keeper, keeper.client, keeper.store, changes, self.calendar, self.mailbox_limiter,
                            QueueRequeuer(self.settings.storage, CALENDAR_NOTIFICATIONS),
                            resync_hours=self.settings.calendar_resync_hours)

    async def connected_organizers(self) -> list[Connected] | None:
        """Organizers the token vault has connected (None when the queue path does not use the vault)."""
        from shared.calendar_sync.keeper import organizer_key
        from shared.calendar_sync.sync import Connected

        if self.settings.credential_mode != "vault":
            return None
        entries = await asyncio.to_thread(lambda: list(self.vault.entries()))
        return [Connected(entry.upn or entry.oid, entry.tenant_id or None,
                          organizer_key(entry.identity) if entry.tenant_id else None)
                for entry in entries if entry.status == ConnectionStatus.CONNECTED]

    @property
    def calendar_states(self) -> Callable[[], Awaitable[dict[str, str] | None]] | None:
        """MEETING_KIND=calendar: each organizer's subscription state by organizer key (the operator page)."""
        if self.settings.meeting_kind != MeetingKind.CALENDAR:
            return None

        async def states() -> dict[str, str]:
            return {row.organizer_key: row.state for row in await self.subscriptions.store.all()}

        return states

    async def sync_calendars(self) -> SyncOutcome:
        """The calendar-sync timer's round (nothing unless MEETING_KIND=calendar)."""
        from shared.calendar_sync.sync import SyncOutcome

        if self.settings.meeting_kind != MeetingKind.CALENDAR:
            return SyncOutcome()
        return await self.calendar_sync.run(await self.connected_organizers())

    @property
    def on_connected(self) -> Callable[[VaultEntry], Awaitable[str]] | None:
        """After an organizer connects (MEETING_KIND=calendar): their calendar's subscription, and what to tell them."""
        if self.settings.meeting_kind != MeetingKind.CALENDAR:
            return None

        async def subscribe(entry: VaultEntry) -> str:
            record = await self.subscriptions.ensure(entry.upn or entry.oid, entry.tenant_id or None)
            if record.state == "active":
                return "Changes they make to these appointments in Outlook or Teams now come back to the scheduler."
            return f"Changes made in Outlook are not followed yet ({record.state}); the app's timer tries again."

        return subscribe

    @cached_property
    def dead_letters(self) -> QueueWriter:
        """`webhook-dead-letter`, written by the app without expiry (a binding cannot set a message's lifetime)."""
        return QueueWriter(self.settings.storage, WEBHOOK_DEAD_LETTER, time_to_live=NEVER_EXPIRES)

    @cached_property
    def sms_failures(self) -> QueueWriter:
        """`sms-failed`, written by the app without expiry, before the failure's webhook."""
        return QueueWriter(self.settings.storage, SMS_FAILED, time_to_live=NEVER_EXPIRES)

    @cached_property
    def webhooks(self) -> WebhookDispatcher:
        """deliver_webhook's logic (imports the HTTP stack on first use, not at start-up)."""
        from shared.webhooks.dispatcher import WebhookDispatcher
        from shared.webhooks.sender import WebhookSender

        return WebhookDispatcher(
            WebhookSender.from_settings(self.settings), self.idempotency,
            QueueRequeuer(self.settings.storage, WEBHOOK_OUTBOX), self.overflow,
            max_attempts=self.settings.webhook_max_attempts,
            base_delay_seconds=self.settings.webhook_retry_base_seconds,
            stale_claim_seconds=self.settings.webhook_stale_claim_seconds)

    async def aclose(self) -> None:
        """Close every client that was built (tests and local tools; the host never stops a worker this way)."""
        for name in ("calendar_sync", "subscriptions", "processor", "attendance", "webhooks", "idempotency",
                     "appointments", "aliases", "graph",
                     "overflow", "dead_letters", "sms_failures"):
            built = self.__dict__.pop(name, None)
            if built is not None:
                await built.aclose()
