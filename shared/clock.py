"""Time as a dependency: the system clock in production, a clock tests move by hand.

Deadline logic never calls ``datetime.now`` itself, so a test can put the
scheduler five working days past a deadline without sleeping.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from shared.db import utcnow


class Clock:
    def now(self) -> datetime:
        return utcnow()


class ControlledClock(Clock):
    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or utcnow()

    def now(self) -> datetime:
        return self._now

    def set(self, moment: datetime) -> None:
        if moment.tzinfo is None:
            raise ValueError("naive datetime")
        self._now = moment

    def advance(self, delta: timedelta) -> None:
        self._now += delta
