"""What verification's domain functions need besides the session: calendar, ladder, limits, evidence store."""

from __future__ import annotations

from dataclasses import dataclass

from services.verification.evidence_store import EvidenceStore
from services.verification.settings import VerificationSettings
from shared.clock import Clock
from shared.ladder import LadderPolicy
from shared.reference import DEFAULT_UNITS_FILE, Organisation, load_organisation
from shared.workcalendar import WorkCalendar


@dataclass
class VerificationContext:
    calendar: WorkCalendar
    policy: LadderPolicy
    clock: Clock
    organisation: Organisation
    extension_max_days: int
    extension_max_count: int
    ledger_min_age_days: int
    evidence_store: EvidenceStore

    @classmethod
    def from_settings(
        cls, settings: VerificationSettings, *, clock: Clock | None = None
    ) -> VerificationContext:
        calendar = WorkCalendar.load(settings.calendar_override_file, tz=settings.timezone)
        return cls(
            calendar=calendar,
            policy=LadderPolicy(
                calendar=calendar,
                reminder_working_days_before=settings.reminder_working_days_before,
                rebuke_after_working_days=settings.rebuke_after_working_days,
                step_hour=settings.ladder_step_hour,
            ),
            clock=clock or Clock(),
            organisation=load_organisation(settings.units_file or DEFAULT_UNITS_FILE),
            extension_max_days=settings.extension_max_days,
            extension_max_count=settings.extension_max_count,
            ledger_min_age_days=settings.ledger_min_age_days,
            evidence_store=EvidenceStore(
                bucket=settings.evidence_bucket,
                replicas=settings.nats_replicas,
                timeout_seconds=settings.evidence_store_timeout_seconds,
                min_bytes_per_second=settings.evidence_store_min_bytes_per_second,
                max_bytes=settings.evidence_max_bytes,
                legacy_dir=settings.evidence_dir,
            ),
        )
