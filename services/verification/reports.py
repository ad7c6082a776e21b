"""The monthly and yearly 督察工作通报: what goes in one (figures gathered from the measures, the
dashboard's overdue counts and the ledger), and making one, on demand or on the schedule.

The figures are the 12345 measures of ``measures.py`` for the period, the open matters past their
deadline by ladder step as the dashboard counts them (as of generation: overdue is a state, not a
period's flow), and the matters supervisors marked on the ledger.  The Word and Excel files are
drawn in a thread (matplotlib, python-docx and openpyxl are CPU work that would stall the loop).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.verification.context import VerificationContext
from services.verification.ladder import STEP_LABELS
from services.verification.measures import GroupMeasures, MeasuresReport, measures
from services.verification.models import (
    ACTIVE_TASK_STATUSES,
    LedgerMark,
    LedgerMarkKind,
    MatterSnapshot,
    Report,
    ReportStatus,
    Task,
)
from services.verification.stats import OVERDUE_STEPS, dashboard, group_name
from shared.errors import FieldProblems
from shared.logging import get_logger
from shared.reference import DATA_DIR

log = get_logger(__name__)

DEFAULT_REPORT_FILE = DATA_DIR / "report.json"
CITY_SCOPE = "city"
MARK_LABELS: dict[str, str] = {
    LedgerMarkKind.SUPERVISED: "督办件",
    LedgerMarkKind.LEADER_ASSIGNED: "领导包案",
}
ERROR_LIMIT = 2000
# Keys per IN list: well under SQLite's and asyncpg's parameter limits.
CHUNK = 500


@dataclass(frozen=True)
class Threshold:
    measure: str
    below: float
    sentence: str


@dataclass(frozen=True)
class ReportConfig:
    """report.json: a bureau's levels and sentences for the 存在的问题和工作要求 section."""

    title: str
    issuing_unit: str | None
    city_scope_name: str
    min_received: int
    marked_list_limit: int
    thresholds: tuple[Threshold, ...]
    overdue_sentence: str
    marked_sentence: str
    no_problem_sentence: str
    closing: tuple[str, ...]


@lru_cache(maxsize=4)
def load_config(path: Path | None = None) -> ReportConfig:
    raw: dict[str, Any] = json.loads((path or DEFAULT_REPORT_FILE).read_text(encoding="utf-8"))
    return ReportConfig(
        title=str(raw.get("title", "{bureau}督察工作通报")),
        issuing_unit=raw.get("issuing_unit"),
        city_scope_name=str(raw.get("city_scope_name", "全市")),
        min_received=int(raw.get("min_received", 1)),
        marked_list_limit=int(raw.get("marked_list_limit", 50)),
        thresholds=tuple(
            Threshold(measure=str(t["measure"]), below=float(t["below"]), sentence=str(t["sentence"]))
            for t in raw.get("thresholds", [])
        ),
        overdue_sentence=str(raw.get("overdue_sentence", "")),
        marked_sentence=str(raw.get("marked_sentence", "")),
        no_problem_sentence=str(raw.get("no_problem_sentence", "")),
        closing=tuple(str(s) for s in raw.get("closing", [])),
    )


@dataclass(frozen=True)
class Period:
    kind: str  # "month" or "year"
    year: int
    month: int | None
    start: date
    end: date

    @property
    def label(self) -> str:
        return f"{self.year}年{self.month}月" if self.kind == "month" else f"{self.year}年度"

    @property
    def key(self) -> str:
        return (
            f"{self.year:04d}-{self.month:02d}" if self.kind == "month" and self.month else f"{self.year:04d}"
        )


def make_period(*, kind: str, year: int, month: int | None) -> Period:
    if kind == "year":
        return Period(kind="year", year=year, month=None, start=date(year, 1, 1), end=date(year, 12, 31))
    if kind != "month":
        raise FieldProblems([("period", "统计周期只能是月度或年度", "period must be month or year")])
    if month is None or not 1 <= month <= 12:
        raise FieldProblems([("month", "月度通报须选择月份（1—12）", "a month report needs month 1-12")])
    start = date(year, month, 1)
    following = date(year + month // 12, month % 12 + 1, 1)
    return Period(kind="month", year=year, month=month, start=start, end=following - timedelta(days=1))


def scope_name(ctx: VerificationContext, config: ReportConfig, county: str | None) -> str:
    organisation = ctx.organisation
    if county is None:
        return config.city_scope_name
    if county in organisation.counties:
        return organisation.counties[county].bureau
    if county == organisation.city_code:
        return f"{organisation.city_bureau}直属单位"
    raise FieldProblems([("county", "没有这个县（市、区）", "unknown county")])


@dataclass
class GroupSupervision:
    """三、超期和督办情况, one county or team: open matters past their deadline by ladder step, the
    matters marked on the ledger and those pending longer than the ledger's age."""

    code: str
    name: str
    overdue: dict[str, int] = field(default_factory=dict)
    supervised: int = 0
    leader_assigned: int = 0
    long_pending: int = 0

    @property
    def overdue_total(self) -> int:
        return sum(self.overdue.values())


@dataclass(frozen=True)
class MarkedMatter:
    tracking_code: str
    title: str
    group: str
    mark: str
    leader: str
    marked_on: date


@dataclass
class ReportContent:
    title: str
    period: Period
    scope: str  # CITY_SCOPE or a county code
    scope_name: str
    by: str  # the groups of section 二: counties (city report) or teams (county report)
    issuing_unit: str
    issued_on: date
    generated_at: datetime
    measures: MeasuresReport
    supervision: list[GroupSupervision]
    supervision_total: GroupSupervision
    marked: list[MarkedMatter]
    step_labels: dict[str, str]
    trend: list[tuple[str, int, int]]  # (month label, received, concluded) over the period's year
    long_pending_days: int
    problems: list[str] = field(default_factory=list)

    @property
    def total(self) -> GroupMeasures:
        return self.measures.total


async def gather(
    *,
    session: AsyncSession,
    ctx: VerificationContext,
    config: ReportConfig,
    period: Period,
    county: str | None,
) -> ReportContent:
    """Everything the report states, read in one session."""
    by = "team" if county else "county"
    name = scope_name(ctx, config, county)
    now = ctx.clock.now()
    figures = await measures(
        session=session, ctx=ctx, start=period.start, end=period.end, by=by, county=county
    )
    supervision, total = await _supervision(session=session, ctx=ctx, by=by, county=county)
    content = ReportContent(
        title=config.title.format(bureau=ctx.organisation.city_bureau),
        period=period,
        scope=county or CITY_SCOPE,
        scope_name=name,
        by=by,
        issuing_unit=config.issuing_unit or ctx.organisation.city_team_name,
        issued_on=ctx.calendar.local_date(now),
        generated_at=now,
        measures=figures,
        supervision=supervision,
        supervision_total=total,
        marked=await _marked(session=session, ctx=ctx, county=county, limit=config.marked_list_limit),
        step_labels={s: STEP_LABELS[s] for s in OVERDUE_STEPS},
        trend=await _trend(session=session, ctx=ctx, period=period, county=county),
        long_pending_days=ctx.ledger_min_age_days,
    )
    content.problems = problems(content, config)
    return content


async def _trend(
    *, session: AsyncSession, ctx: VerificationContext, period: Period, county: str | None
) -> list[tuple[str, int, int]]:
    """Received and concluded per month of the period's year, up to the period's last month."""
    last = period.month if period.kind == "month" and period.month else 12
    today = ctx.calendar.local_date(ctx.clock.now())
    points = []
    for month in range(1, last + 1):
        span = make_period(kind="month", year=period.year, month=month)
        if span.start > today:
            break
        report = await measures(
            session=session, ctx=ctx, start=span.start, end=span.end, by="county", county=county
        )
        counts = report.total.counts
        points.append((f"{month}月", int(counts.get("received", 0)), int(counts.get("concluded", 0))))
    return points


async def _supervision(
    *, session: AsyncSession, ctx: VerificationContext, by: str, county: str | None
) -> tuple[list[GroupSupervision], GroupSupervision]:
    groups: dict[str, GroupSupervision] = {}

    def of(code: str | None) -> GroupSupervision:
        key = code or "unassigned"
        if key not in groups:
            groups[key] = GroupSupervision(
                code=key,
                name=group_name(ctx.organisation, code, by=by),
                overdue=dict.fromkeys(OVERDUE_STEPS, 0),
            )
        return groups[key]

    board = await dashboard(session=session, ctx=ctx, weeks=1, by=by, county=county)
    for entry in board["groups"]:
        code = entry["code"] if entry["code"] != "unassigned" else None
        for step, count in entry["overdue"].items():
            of(code).overdue[step] = of(code).overdue.get(step, 0) + int(count)
    for code, count in await _long_pending(session=session, ctx=ctx, by=by, county=county):
        of(code).long_pending += count
    for mark, group_code in await _mark_rows(session=session, by=by, county=county):
        entry = of(group_code)
        if mark == LedgerMarkKind.SUPERVISED:
            entry.supervised += 1
        elif mark == LedgerMarkKind.LEADER_ASSIGNED:
            entry.leader_assigned += 1
    ordered = sorted(groups.values(), key=lambda g: (g.code == "unassigned", g.code))
    total = GroupSupervision(code="total", name="合计", overdue=dict.fromkeys(OVERDUE_STEPS, 0))
    for entry in ordered:
        for step, count in entry.overdue.items():
            total.overdue[step] = total.overdue.get(step, 0) + count
        total.supervised += entry.supervised
        total.leader_assigned += entry.leader_assigned
        total.long_pending += entry.long_pending
    return ordered, total


async def _long_pending(
    *, session: AsyncSession, ctx: VerificationContext, by: str, county: str | None
) -> list[tuple[str | None, int]]:
    """Open matters received longer ago than the ledger's age, per group.

    The open tasks first (the status index), then their matters by key: joined in one query,
    SQLite walks every matter of the history instead of the few open tasks."""
    received_by = ctx.clock.now() - timedelta(days=ctx.ledger_min_age_days)
    teams: dict[str, str] = {}
    for case_id, team in await session.exec(
        select(Task.case_id, Task.team_code).where(col(Task.status).in_(ACTIVE_TASK_STATUSES))
    ):
        teams[case_id] = team
    counts: dict[str | None, int] = {}
    open_cases = list(teams)
    for first in range(0, len(open_cases), CHUNK):
        query = select(MatterSnapshot.case_id, MatterSnapshot.county_code).where(
            col(MatterSnapshot.case_id).in_(open_cases[first : first + CHUNK]),
            col(MatterSnapshot.received_at) <= received_by,
        )
        if county:
            query = query.where(col(MatterSnapshot.county_code) == county)
        for case_id, county_code in await session.exec(query):
            code = teams[case_id] if by == "team" else county_code
            counts[code] = counts.get(code, 0) + 1
    return list(counts.items())


async def _latest_teams(session: AsyncSession, case_ids: list[str]) -> dict[str, str]:
    """The team each matter sits with now (its latest task)."""
    teams: dict[str, str] = {}
    if case_ids:
        query = select(Task.case_id, Task.team_code).where(col(Task.case_id).in_(case_ids))
        for case_id, team in await session.exec(query.order_by(col(Task.created_at))):
            teams[case_id] = team
    return teams


async def _mark_rows(*, session: AsyncSession, by: str, county: str | None) -> list[tuple[str, str | None]]:
    query = select(LedgerMark.mark, LedgerMark.case_id, MatterSnapshot.county_code).join(
        MatterSnapshot, col(MatterSnapshot.case_id) == col(LedgerMark.case_id)
    )
    if county:
        query = query.where(col(MatterSnapshot.county_code) == county)
    rows = list(await session.exec(query))
    if by != "team":
        return [(mark, county_code) for mark, _, county_code in rows]
    teams = await _latest_teams(session, [case_id for _, case_id, _ in rows])
    return [(mark, teams.get(case_id)) for mark, case_id, _ in rows]


async def _marked(
    *, session: AsyncSession, ctx: VerificationContext, county: str | None, limit: int
) -> list[MarkedMatter]:
    query = (
        select(LedgerMark, MatterSnapshot)
        .join(MatterSnapshot, col(MatterSnapshot.case_id) == col(LedgerMark.case_id))
        .order_by(col(LedgerMark.marked_at))
        .limit(limit)
    )
    if county:
        query = query.where(col(MatterSnapshot.county_code) == county)
    return [
        MarkedMatter(
            tracking_code=matter.tracking_code,
            title=matter.title,
            group=group_name(ctx.organisation, matter.county_code, by="county"),
            mark=MARK_LABELS.get(mark.mark, mark.mark),
            leader=mark.leader or "",
            marked_on=ctx.calendar.local_date(mark.marked_at),
        )
        for mark, matter in await session.exec(query)
    ]


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def problems(content: ReportContent, config: ReportConfig) -> list[str]:
    """五、存在的问题和工作要求: the groups below each configured level, named, then the standing demands."""
    names = {d.key: d.name for d in content.measures.definitions}
    sentences = []
    for threshold in config.thresholds:
        low = [
            f"{g.name}（{percent(g.rates.get(threshold.measure))}）"
            for g in content.measures.groups
            if int(g.counts.get("received", 0)) >= config.min_received
            and (rate := g.rates.get(threshold.measure)) is not None
            and rate < threshold.below
        ]
        if low and threshold.measure in names:
            sentences.append(
                threshold.sentence.format(groups="、".join(low), threshold=percent(threshold.below))
            )
    if not sentences and config.no_problem_sentence:
        sentences.append(config.no_problem_sentence)
    overdue = content.supervision_total.overdue_total
    if overdue and config.overdue_sentence:
        sentences.append(config.overdue_sentence.format(count=overdue))
    marked = content.supervision_total.supervised + content.supervision_total.leader_assigned
    if marked and config.marked_sentence:
        sentences.append(config.marked_sentence.format(count=marked))
    return sentences + list(config.closing)


def render(content: ReportContent) -> tuple[bytes, bytes]:
    """The .docx (with its charts) and the .xlsx; CPU work, run in a thread."""
    from services.verification import reports_charts, reports_docx, reports_xlsx

    charts = reports_charts.draw(content)
    return reports_docx.document(content, charts), reports_xlsx.workbook(content)


# --- Making one -------------------------------------------------------------------------------


async def make_report(
    *,
    session_factory: async_sessionmaker[AsyncSession],
    ctx: VerificationContext,
    config: ReportConfig,
    report_id: str,
    period: Period,
    county: str | None,
) -> Report:
    """Fills the row ``report_id`` (claimed, status generating): done with both files, or failed with the error."""
    docx: bytes | None = None
    xlsx: bytes | None = None
    error: str | None = None
    try:
        async with session_factory() as session:
            content = await gather(session=session, ctx=ctx, config=config, period=period, county=county)
        docx, xlsx = await asyncio.to_thread(render, content)
    except Exception as exc:
        log.warning("report generation failed", report_id=report_id, error=repr(exc))
        error = repr(exc)[:ERROR_LIMIT]
    async with session_factory() as session, session.begin():
        report = await session.get(Report, report_id)
        assert report is not None
        report.status = ReportStatus.FAILED if error else ReportStatus.DONE
        report.docx, report.xlsx, report.error = docx, xlsx, error
        session.add(report)
    return report


def new_report(
    *,
    ctx: VerificationContext,
    config: ReportConfig,
    period: Period,
    county: str | None,
    by: str,
    key: str | None,
) -> Report:
    return Report(
        scope=county or CITY_SCOPE,
        scope_name=scope_name(ctx, config, county),
        period=period.kind,
        start=period.start,
        end=period.end,
        generated_at=ctx.clock.now(),
        generated_by=by,
        status=ReportStatus.GENERATING,
        schedule_key=key,
        attempts=1,
    )


def period_of(report: Report) -> Period:
    return make_period(kind=report.period, year=report.start.year, month=report.start.month)


def county_of(report: Report) -> str | None:
    return None if report.scope == CITY_SCOPE else report.scope


METADATA_COLUMNS: tuple[Any, ...] = (
    Report.id,
    Report.scope,
    Report.scope_name,
    Report.period,
    Report.start,
    Report.end,
    Report.generated_at,
    Report.generated_by,
    Report.status,
    Report.error,
    Report.schedule_key,
)


def metadata(row: Any) -> dict[str, Any]:
    """A report's row without its files, as the API and the page show it."""
    period = make_period(kind=row.period, year=row.start.year, month=row.start.month)
    return {
        "id": row.id,
        "scope": row.scope,
        "scope_name": row.scope_name,
        "period": row.period,
        "period_label": period.label,
        "year": period.year,
        "month": period.month,
        "start": row.start.isoformat(),
        "end": row.end.isoformat(),
        "generated_at": row.generated_at.isoformat(),
        "generated_by": row.generated_by,
        "scheduled": row.schedule_key is not None,
        "status": row.status,
        "error": row.error,
    }
