"""What the intakes need from the app settings, apart from the HTTP code (services builds it at start-up)."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.intake.organizers import OrganizerMap


@dataclass(frozen=True)
class IntakeSettings:
    """What the intakes need from the app settings (an intake without its secret is switched off)."""

    calcom_secret: str | None = None
    calendly_signing_key: str | None = None
    standard_secrets: tuple[str, ...] = ()
    organizers: OrganizerMap = field(default_factory=OrganizerMap)
