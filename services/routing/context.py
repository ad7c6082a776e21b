"""What routing's handlers and endpoints share: the calendar, the deadlines, and a short-lived cache."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from services.routing.rules import Rule
from services.routing.settings import RoutingSettings
from shared.deadlines import DEFAULT_DEADLINES_FILE, DeadlineBook, load_deadlines
from shared.reference import DEFAULT_UNITS_FILE, Organisation, load_organisation
from shared.workcalendar import WorkCalendar


@dataclass
class RoutingContext:
    calendar: WorkCalendar
    deadlines: DeadlineBook
    max_returns: int
    seed_organisation: Organisation
    cache_seconds: float = 5.0
    _organisation: Organisation | None = field(default=None, repr=False)
    _rules: list[Rule] | None = field(default=None, repr=False)
    _loaded_at: float = 0.0

    @classmethod
    def from_settings(cls, settings: RoutingSettings) -> RoutingContext:
        return cls(
            calendar=WorkCalendar.load(settings.calendar_override_file, tz=settings.timezone),
            deadlines=load_deadlines(settings.deadlines_file or DEFAULT_DEADLINES_FILE),
            max_returns=settings.max_returns_before_supervisor,
            seed_organisation=load_organisation(settings.units_file or DEFAULT_UNITS_FILE),
        )

    def forget_cache(self) -> None:
        self._organisation = None
        self._rules = None

    def cache_fresh(self) -> bool:
        # Another instance may have edited rules or teams: re-read after a few seconds at most.
        if time.monotonic() - self._loaded_at > self.cache_seconds:
            self.forget_cache()
            self._loaded_at = time.monotonic()
            return False
        return True

    def cached_organisation(self) -> Organisation | None:
        return self._organisation if self.cache_fresh() else None

    def remember_organisation(self, organisation: Organisation) -> None:
        self._organisation = organisation

    def cached_rules(self) -> list[Rule] | None:
        return self._rules if self.cache_fresh() else None

    def remember_rules(self, rules: list[Rule]) -> None:
        self._rules = rules
