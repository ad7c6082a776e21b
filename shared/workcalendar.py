"""The Chinese working-day calendar: weekends, public holidays and make-up days (调休).

``chinese_calendar`` knows the days the State Council has published.  For a
year it does not know, the calendar falls back to weekends only and warns once
per year, so a deadline in 2028 is computed rather than refused; an
administrator's override file (JSON: {"holidays": [...], "workdays": [...]})
fills the gap as soon as the new schedule is announced.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import chinese_calendar

from shared.logging import get_logger

log = get_logger(__name__)

SHANGHAI = ZoneInfo("Asia/Shanghai")
END_OF_WORKING_DAY = time(17, 30)


@dataclass
class WorkCalendar:
    holidays: set[date] = field(default_factory=set)
    workdays: set[date] = field(default_factory=set)
    tz: ZoneInfo = SHANGHAI
    end_of_day: time = END_OF_WORKING_DAY
    _warned_years: set[int] = field(default_factory=set)
    # chinese_calendar validates and looks up every call; a deadline walks many days per matter.
    _published: dict[date, bool] = field(default_factory=dict)
    # A routed matter's clocks walk the same few dozen days from the same day of receipt, each
    # clock and each matter again (4% of routing's CPU, py-spy).  The holidays and make-up days
    # are set once, when the calendar is loaded, so a day's answer never changes.
    _added: dict[tuple[date, int], date] = field(default_factory=dict)

    @classmethod
    def load(cls, override_file: Path | None = None, *, tz: str = "Asia/Shanghai") -> WorkCalendar:
        calendar = cls(tz=ZoneInfo(tz))
        if override_file is not None:
            data = json.loads(Path(override_file).read_text(encoding="utf-8"))
            calendar.holidays = {date.fromisoformat(d) for d in data.get("holidays", [])}
            calendar.workdays = {date.fromisoformat(d) for d in data.get("workdays", [])}
        return calendar

    def is_working_day(self, day: date) -> bool:
        if day in self.workdays:
            return True
        if day in self.holidays:
            return False
        known = self._published.get(day)
        if known is not None:
            return known
        try:
            known = self._published[day] = bool(chinese_calendar.is_workday(day))
            return known
        except NotImplementedError:
            if day.year not in self._warned_years:
                self._warned_years.add(day.year)
                log.warning(
                    "calendar year not published; counting weekends only until an override file covers it",
                    year=day.year,
                )
            return day.weekday() < 5

    def next_working_day(self, day: date) -> date:
        day += timedelta(days=1)
        while not self.is_working_day(day):
            day += timedelta(days=1)
        return day

    def previous_working_day(self, day: date) -> date:
        day -= timedelta(days=1)
        while not self.is_working_day(day):
            day -= timedelta(days=1)
        return day

    def on_or_after(self, day: date) -> date:
        while not self.is_working_day(day):
            day += timedelta(days=1)
        return day

    def add_working_days(self, start: datetime, days: int) -> datetime:
        """Deadline ``days`` working days after ``start``: the end of that working day, local time.

        The day of receipt does not count (the period starts the next day), as in
        the 信访 and 检举控告 rules.
        """
        first = self.local_date(start)
        day = self._added.get((first, days))
        if day is None:
            day = first
            for _ in range(days):
                day = self.next_working_day(day)
            self._added[(first, days)] = day
        return self.end_of(day)

    def add_calendar_days(self, start: datetime, days: int) -> datetime:
        """A period in natural days; if it ends on a rest day it moves to the next working day (民法典 art. 203)."""
        return self.end_of(self.on_or_after(self.local_date(start) + timedelta(days=days)))

    def add_months(self, start: datetime, months: int) -> datetime:
        local = self.local_date(start)
        month_index = local.month - 1 + months
        year, month = local.year + month_index // 12, month_index % 12 + 1
        # The corresponding day, or the month's last day when it has no such day (民法典 art. 202).
        last_day = (date(year + (month == 12), month % 12 + 1, 1) - timedelta(days=1)).day
        target = date(year, month, min(local.day, last_day))
        return self.end_of(self.on_or_after(target))

    def working_days_between(self, start: datetime, end: datetime) -> int:
        """Working days from ``start`` to ``end`` (negative when ``end`` is earlier)."""
        a, b = self.local_date(start), self.local_date(end)
        sign = 1
        if b < a:
            a, b, sign = b, a, -1
        count = 0
        day = a
        while day < b:
            day += timedelta(days=1)
            if self.is_working_day(day):
                count += 1
        return sign * count

    def local_date(self, moment: datetime) -> date:
        if moment.tzinfo is None:
            raise ValueError("naive datetime: a deadline needs a time zone")
        return moment.astimezone(self.tz).date()

    def end_of(self, day: date) -> datetime:
        return datetime.combine(day, self.end_of_day, tzinfo=self.tz)
