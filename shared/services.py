"""The worker's long-lived objects, built on first use so that start-up imports stay cheap."""

from __future__ import annotations

from functools import cached_property

from shared.credentials import DelegatedCredentials, build_acquirer
from shared.graph import GraphGateway
from shared.processor import AppointmentProcessor
from shared.queues import APPOINTMENTS
from shared.resolver import JoinUrlResolver
from shared.settings import Settings
from shared.storage import QueueRequeuer


class Services:
    """One instance per worker process: one Graph client, one token cache, reused by every invocation."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def credentials(self) -> DelegatedCredentials:
        """Delegated tokens per organizer, cached in memory."""
        return DelegatedCredentials(build_acquirer(self.settings))

    @cached_property
    def graph(self) -> GraphGateway:
        """The worker's Graph client."""
        return GraphGateway(self.settings, self.credentials)

    @cached_property
    def resolver(self) -> JoinUrlResolver:
        """Meeting → join URL, shared by the queue function and the HTTP twin."""
        return JoinUrlResolver(self.graph, inline_throttle_budget=self.settings.throttle_inline_max_seconds)

    @cached_property
    def processor(self) -> AppointmentProcessor:
        """The queue function's logic."""
        return AppointmentProcessor(self.resolver, QueueRequeuer(self.settings.storage, APPOINTMENTS),
                                    max_requeues=self.settings.throttle_max_requeues)
