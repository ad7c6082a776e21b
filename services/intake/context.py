"""What intake's handlers and endpoints share besides the session: keys and reference data."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from services.intake.identity import IdentityVault
from services.intake.settings import IntakeSettings
from shared.reference import (
    DEFAULT_CATEGORIES_FILE,
    DEFAULT_IDENTITY_PURPOSES_FILE,
    DEFAULT_UNITS_FILE,
    CategoryBook,
    Organisation,
    load_categories,
    load_identity_purposes,
    load_organisation,
)


@dataclass(frozen=True)
class IntakeContext:
    vault: IdentityVault
    signing_key: str
    organisation: Organisation
    categories: CategoryBook
    repeat_window: timedelta
    account_max_chars: int
    received_at_max_age: timedelta
    # Why a complainant's identity may be read: one of these, plus the reader's own words.
    identity_purposes: tuple[str, ...]

    @classmethod
    def from_settings(cls, settings: IntakeSettings) -> IntakeContext:
        return cls(
            vault=IdentityVault(settings.identity_key_bytes),
            signing_key=settings.signing_key,
            organisation=load_organisation(settings.units_file or DEFAULT_UNITS_FILE),
            categories=load_categories(settings.categories_file or DEFAULT_CATEGORIES_FILE),
            repeat_window=timedelta(days=settings.repeat_window_days),
            account_max_chars=settings.account_max_chars,
            received_at_max_age=timedelta(days=settings.received_at_max_age_days),
            identity_purposes=load_identity_purposes(
                settings.identity_purposes_file or DEFAULT_IDENTITY_PURPOSES_FILE
            ),
        )
