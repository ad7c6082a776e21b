"""The scheduled 督察工作通报: last month's (and in January last year's), for the city and each county,
made from the configured hour of the month's first working day, each exactly once.

Once: a scheduled report's row carries a unique key (scope and period), inserted before the work
starts, so a second instance or a restart finds it and leaves it.  A row whose maker died (still
generating long after it started) or that failed is taken over again, a few times at most.  A
service that was down on the first working day catches up when it comes back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime, time, timedelta

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.verification.context import VerificationContext
from services.verification.models import Report, ReportStatus
from services.verification.reports import (
    CITY_SCOPE,
    Period,
    ReportConfig,
    make_period,
    make_report,
    new_report,
)
from shared.worker import BackgroundWorker

SYSTEM = "system"
MAX_ATTEMPTS = 3
# A report takes seconds; one still generating after this lost its maker.
STALE_AFTER = timedelta(minutes=30)
STEP_TIMEOUT_SECONDS = 600.0


def schedule_key(period: Period, county: str | None) -> str:
    return f"scheduled:{county or CITY_SCOPE}:{period.kind}:{period.key}"


def due_periods(*, now: datetime, ctx: VerificationContext, hour: int) -> list[Period]:
    """The periods whose reports are due at ``now``: last month's once this month's first working day
    reached ``hour`` (local), and last year's too in January."""
    calendar = ctx.calendar
    today = calendar.local_date(now)
    first_working = calendar.on_or_after(date(today.year, today.month, 1))
    starts_at = datetime.combine(first_working, time(hour), tzinfo=calendar.tz)
    if now < starts_at:
        return []
    last_month = date(today.year, today.month, 1) - timedelta(days=1)
    periods = [make_period(kind="month", year=last_month.year, month=last_month.month)]
    if today.month == 1:
        periods.append(make_period(kind="year", year=today.year - 1, month=None))
    return periods


class ReportScheduler:
    """One bounded step: claims and makes at most one due report; says whether more may be due."""

    def __init__(
        self,
        *,
        session_factory: async_sessionmaker[AsyncSession],
        ctx: VerificationContext,
        config: Callable[[], ReportConfig],
        hour: int,
        interval_seconds: float,
        counties: Sequence[str] | None = None,
    ) -> None:
        self.session_factory = session_factory
        # None: every county of the organisation (a test may name fewer).
        self.counties = counties
        self.ctx = ctx
        self.config = config
        self.hour = hour
        self.worker = BackgroundWorker(
            name="report-scheduler",
            step=self.step,
            idle_seconds=interval_seconds,
            step_timeout=STEP_TIMEOUT_SECONDS,
        )

    def scopes(self) -> list[str | None]:
        return [None, *(self.ctx.organisation.counties if self.counties is None else self.counties)]

    async def step(self) -> bool:
        now = self.ctx.clock.now()
        for period in due_periods(now=now, ctx=self.ctx, hour=self.hour):
            for county in self.scopes():
                report_id = await self._claim(period=period, county=county, now=now)
                if report_id is not None:
                    await make_report(
                        session_factory=self.session_factory,
                        ctx=self.ctx,
                        config=self.config(),
                        report_id=report_id,
                        period=period,
                        county=county,
                    )
                    return True
        return False

    async def run_due(self) -> int:
        """Every due report now (tests and the first start); returns how many were made."""
        made = 0
        while await self.step():
            made += 1
        return made

    async def _claim(self, *, period: Period, county: str | None, now: datetime) -> str | None:
        key = schedule_key(period, county)
        async with self.session_factory() as session:
            existing = (
                await session.exec(
                    select(Report.id, Report.status, Report.attempts, Report.generated_at).where(
                        Report.schedule_key == key
                    )
                )
            ).first()
        if existing is None:
            report = new_report(
                ctx=self.ctx, config=self.config(), period=period, county=county, by=SYSTEM, key=key
            )
            try:
                async with self.session_factory() as session, session.begin():
                    session.add(report)
            except IntegrityError:
                return None  # another instance claimed it first
            return report.id
        report_id, status, attempts, started = existing
        stale = status == ReportStatus.GENERATING and started < now - STALE_AFTER
        if attempts >= MAX_ATTEMPTS or not (stale or status == ReportStatus.FAILED):
            return None
        async with self.session_factory() as session, session.begin():
            # Compare-and-set on the attempt count: of two instances taking it over, one wins.
            taken = await session.exec(
                update(Report)
                .where(col(Report.id) == report_id, col(Report.attempts) == attempts)
                .values(status=ReportStatus.GENERATING, attempts=attempts + 1, generated_at=now, error=None)
            )
        return str(report_id) if taken.rowcount == 1 else None
