"""Named clocks computed from the deadline rules file and the working-day calendar."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from shared.events import ClockSet
from shared.reference import DATA_DIR
from shared.workcalendar import WorkCalendar

DEFAULT_DEADLINES_FILE = DATA_DIR / "deadlines.json"


# A matter's clock as routing's and verification's APIs show it (no docstring: it would enter the OpenAPI).
class ClockRead(BaseModel):
    name: str
    label: str
    due_at: datetime
    rule: str
    source: str


@dataclass(frozen=True)
class Period:
    working_days: int = 0
    days: int = 0
    months: int = 0

    @classmethod
    def parse(cls, data: dict[str, Any]) -> Period:
        return cls(
            working_days=int(data.get("working_days", 0)),
            days=int(data.get("days", 0)),
            months=int(data.get("months", 0)),
        )

    def due(self, calendar: WorkCalendar, start: datetime) -> datetime:
        if self.months:
            return calendar.add_months(start, self.months)
        if self.days:
            return calendar.add_calendar_days(start, self.days)
        return calendar.add_working_days(start, self.working_days)

    def describe(self) -> str:
        if self.months:
            return f"{self.months}个月"
        if self.days:
            return f"{self.days}日"
        return f"{self.working_days}个工作日"


@dataclass(frozen=True)
class ClockRule:
    name: str
    label: str
    applies_to: tuple[str, ...]
    starts_at: str
    period: Period
    overrides: dict[str, Period]
    rule: str
    source: str
    named_complainant_only: bool = False
    only_with_co_units: bool = False


@dataclass(frozen=True)
class DeadlineBook:
    clocks: tuple[ClockRule, ...]
    later: dict[str, tuple[str, Period, str, str]]

    def initial_clocks(
        self,
        *,
        calendar: WorkCalendar,
        case_kind: str,
        received_at: datetime,
        assigned_at: datetime,
        traits: set[str],
        named_complainant: bool = True,
        has_co_units: bool = False,
    ) -> list[ClockSet]:
        result = []
        for clock in self.clocks:
            if case_kind not in clock.applies_to:
                continue
            if clock.named_complainant_only and not named_complainant:
                continue
            if clock.only_with_co_units and not has_co_units:
                continue
            period = clock.period
            for trait, override in clock.overrides.items():
                if trait in traits:
                    period = override
            start = received_at if clock.starts_at == "received" else assigned_at
            result.append(
                ClockSet(
                    name=clock.name,
                    label=clock.label,
                    due_at=period.due(calendar, start),
                    rule=f"{clock.rule}（本件按{period.describe()}计）",
                    source=clock.source,
                )
            )
        return result

    def later_clock(self, name: str, *, calendar: WorkCalendar, start: datetime) -> ClockSet:
        label, period, rule, source = self.later[name]
        return ClockSet(name=name, label=label, due_at=period.due(calendar, start), rule=rule, source=source)

    def later_period(self, name: str) -> Period:
        return self.later[name][1]


@lru_cache(maxsize=4)
def load_deadlines(path: Path = DEFAULT_DEADLINES_FILE) -> DeadlineBook:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    clocks = tuple(
        ClockRule(
            name=c["name"],
            label=c["label"],
            applies_to=tuple(c["applies_to"]),
            starts_at=c.get("starts_at", "received"),
            period=Period.parse(c["period"]),
            overrides={k: Period.parse(v) for k, v in c.get("overrides", {}).items()},
            rule=c["rule"],
            source=c["source"],
            named_complainant_only=bool(c.get("named_complainant_only")),
            only_with_co_units=bool(c.get("only_with_co_units")),
        )
        for c in data["clocks"]
    )
    later = {
        name: (v["label"], Period.parse(v["period"]), v["rule"], v["source"])
        for name, v in data.get("later_clocks", {}).items()
    }
    return DeadlineBook(clocks=clocks, later=later)
