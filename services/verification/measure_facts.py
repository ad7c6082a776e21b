"""Each matter's part in the 12345 measures, kept as rows: ``verification_measure_fact``.

Read from the tables, a year of measures joins every matter received in it to its latest task, that
task's clocks and first finding, and the matter's ratings and later rounds: 8.8 s for the city at a
million matters on SQLite, 10.5 s on PostgreSQL.  A matter's part hardly depends on the period,
only on when things happened: so each matter keeps one row with what the measures ask of it
(told in time, concluded when, on time, the outcome, first pleased when, reopened), and each
rating and each linked repeat call one row with the matter's group.  They are summed per day
received (``measure_days``), and a period's measures are those sums less what its matters
concluded or first rated pleasing after its end had added (``measures``).

The rows follow the tables as the ledger's entries do (``matter_rows``): made again for each
matter a transaction changed, at its commit.  They depend on what a bureau configures
(``measures.json``: the acceptance clock, which ratings please or reopen); the settings they were
made with are kept as a fingerprint, and while it differs from the running settings (a first
start after the upgrade, a changed file) the worker ``fact_builder`` makes them again a batch at a
time and the measures are read from the tables meanwhile (``ready``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Delete, Select, and_, bindparam, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import ReturningDelete
from sqlmodel import Field, Index, SQLModel

from services.verification import measure_days
from services.verification.measure_rules import MeasureSettings, reopened, told_in_time
from services.verification.models import RepeatCall, TaskStatus
from services.verification.schemas import SUBSTANTIATED
from services.verification.stats import (
    FINDING,
    MATTER,
    NO_FINDING,
    RATING,
    TASK,
    concluded_on_time,
    first_finding_of_task,
    latest_task_of_matter,
)
from shared.db import UTCDateTime, built_once, table_of, utcnow
from shared.logging import get_logger
from shared.matter_locks import lock_matters
from shared.states import CaseKind
from shared.worker import BackgroundWorker

log = get_logger(__name__)

# Raised when what a row holds or how it is made changes: the rows are then made again.
FACT_VERSION = 1
BUILD_BATCH = 2_000
REFRESH_BATCH = 500
BUILD_EVERY_SECONDS = 60.0
BUILD_STEP_TIMEOUT_SECONDS = 120.0
STATE_ID = 1


# What a period's sums read besides the date, in the covering indexes' order (the county first: the
# county index leaves it out after its own first column).
_SUMMED = (
    "county_code",
    "team_code",
    "complaint",
    "responded",
    "concluded_at",
    "on_time",
    "with_outcome",
    "substantiated",
    "pleased_at",
    "reopened",
)
_RATING_SUMMED = ("county_code", "team_code", "rating", "at")


class MeasureFact(SQLModel, table=True):
    """One matter: when it arrived, where it counts, and what the measures ask of it."""

    __tablename__ = "verification_measure_fact"
    # Each holds every column a period's sums read, so they are read from the index alone: fetching
    # each row from the table by its index entry took three quarters of the time.
    __table_args__ = (
        Index("ix_verification_measure_fact_received", "received_at", *_SUMMED),
        Index("ix_verification_measure_fact_county", "county_code", "received_at", *_SUMMED[1:]),
        # A recent period's matters concluded or first pleased after its end (``measures``).
        Index("ix_verification_measure_fact_concluded", "concluded_at"),
        Index("ix_verification_measure_fact_pleased", "pleased_at"),
    )

    case_id: str = Field(primary_key=True, max_length=64)
    received_at: datetime = Field(sa_type=UTCDateTime)
    county_code: str | None = Field(default=None, max_length=16)
    # The team the matter sits with (its latest task's); None before its first assignment.
    team_code: str | None = Field(default=None, max_length=32)
    complaint: bool
    responded: bool
    # The latest task's conclusion; None while it is open.
    concluded_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    on_time: bool
    with_outcome: bool
    substantiated: bool
    pleased_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    reopened: bool


class MeasureRatingFact(SQLModel, table=True):
    """One rating, with its matter's date and group: the 满意率's counts as an index range."""

    __tablename__ = "verification_measure_rating_fact"
    __table_args__ = (
        Index("ix_verification_measure_rating_fact_received", "received_at", *_RATING_SUMMED),
        Index(
            "ix_verification_measure_rating_fact_county", "county_code", "received_at", *_RATING_SUMMED[1:]
        ),
        Index("ix_verification_measure_rating_fact_case", "case_id"),
        Index("ix_verification_measure_rating_fact_at", "at"),
    )

    # The rating's own id, not one of this table's making.
    rating_id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    case_id: str = Field(max_length=64)
    received_at: datetime = Field(sa_type=UTCDateTime)
    county_code: str | None = Field(default=None, max_length=16)
    team_code: str | None = Field(default=None, max_length=32)
    rating: str = Field(max_length=32)
    at: datetime = Field(sa_type=UTCDateTime)


class MeasureRepeatFact(SQLModel, table=True):
    """One repeat call linked to a matter (重复件), by its own date, with its matter's group."""

    __tablename__ = "verification_measure_repeat_fact"
    __table_args__ = (
        Index("ix_verification_measure_repeat_fact_received", "received_at", "county_code", "team_code"),
        Index("ix_verification_measure_repeat_fact_county", "county_code", "received_at", "team_code"),
        Index("ix_verification_measure_repeat_fact_case", "case_id"),
    )

    repeat_case_id: str = Field(primary_key=True, max_length=64)
    case_id: str = Field(max_length=64)
    received_at: datetime = Field(sa_type=UTCDateTime)
    county_code: str | None = Field(default=None, max_length=16)
    team_code: str | None = Field(default=None, max_length=32)


class MeasureFactState(SQLModel, table=True):
    """The settings the rows were made with, and how far a rebuild has come."""

    __tablename__ = "verification_measure_fact_state"

    id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    fingerprint: str = Field(max_length=64)
    # The rebuild's position (matters are taken in case id order); None once every matter is done.
    next_case_id: str | None = Field(default=None, max_length=64)
    complete: bool = False
    updated_at: datetime = Field(sa_type=UTCDateTime)


FACT = table_of(MeasureFact)
RATING_FACT = table_of(MeasureRatingFact)
REPEAT_FACT = table_of(MeasureRepeatFact)
REPEAT = table_of(RepeatCall)
STATE = table_of(MeasureFactState)


def fingerprint(settings: MeasureSettings) -> str:
    """What the rows depend on besides the tables: the settings they read, and their own shape."""
    data = {
        "version": FACT_VERSION,
        "acceptance_clock": settings.acceptance_clock,
        "pleased": sorted(settings.pleased_ratings),
        "reopening": sorted(settings.reopening_ratings),
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


# --- Making the rows ------------------------------------------------------------------------------


@built_once
def _facts_of(settings: MeasureSettings) -> Select[Any]:
    """Each matter of the bound ``case_ids`` with what the measures ask of it, from the tables: the
    same conditions the measures read from the tables (``measures_sql``), without a period's end."""
    concluded = TASK.c.status == TaskStatus.CONCLUDED
    first_pleased = (
        select(func.min(RATING.c.at))
        .where(RATING.c.case_id == MATTER.c.case_id, RATING.c.rating.in_(settings.pleased_ratings))
        .scalar_subquery()
    )
    complaint = MATTER.c.case_kind == CaseKind.COMPLAINT
    with_outcome = and_(complaint, FINDING.c.outcome != NO_FINDING)
    return (
        select(
            MATTER.c.case_id,
            MATTER.c.received_at,
            MATTER.c.county_code,
            TASK.c.team_code,
            complaint,
            and_(TASK.c.id.is_not(None), told_in_time(settings)),
            case((concluded, TASK.c.concluded_at)),
            and_(concluded, concluded_on_time()),
            with_outcome,
            and_(with_outcome, FINDING.c.outcome.in_(sorted(SUBSTANTIATED))),
            first_pleased,
            reopened(settings),
        )
        .select_from(
            MATTER.outerjoin(TASK, latest_task_of_matter()).outerjoin(
                FINDING, and_(first_finding_of_task(), concluded)
            )
        )
        .where(MATTER.c.case_id.in_(bindparam("case_ids", expanding=True)))
        # Two tasks made at the same moment both pass as the latest: the last by id is kept.
        .order_by(MATTER.c.case_id, TASK.c.id)
    )


@built_once
def _ratings_of() -> Select[Any]:
    return select(RATING.c.id, RATING.c.case_id, RATING.c.rating, RATING.c.at).where(
        RATING.c.case_id.in_(bindparam("case_ids", expanding=True))
    )


@built_once
def _repeats_of() -> Select[Any]:
    return select(REPEAT.c.repeat_case_id, REPEAT.c.case_id, REPEAT.c.received_at).where(
        REPEAT.c.case_id.in_(bindparam("case_ids", expanding=True))
    )


@built_once
def _delete_repeat_facts() -> Delete:
    return REPEAT_FACT.delete().where(REPEAT_FACT.c.case_id.in_(bindparam("case_ids", expanding=True)))


@built_once
def _delete_facts() -> ReturningDelete[Any]:
    return FACT.delete().where(FACT.c.case_id.in_(bindparam("case_ids", expanding=True))).returning(*FACT.c)


@built_once
def _delete_rating_facts() -> ReturningDelete[Any]:
    return (
        RATING_FACT.delete()
        .where(RATING_FACT.c.case_id.in_(bindparam("case_ids", expanding=True)))
        .returning(*RATING_FACT.c)
    )


# The order ``_facts_of`` selects them in.
_FACT_COLUMNS = ("case_id", "received_at", *_SUMMED)
_FLAGS = ("complaint", "responded", "on_time", "with_outcome", "substantiated", "reopened")


def facts_of(
    connection: Connection, settings: MeasureSettings, case_ids: Sequence[str]
) -> list[dict[str, Any]]:
    """The rows the tables make for these matters (a comparison's reference, and the refresh)."""
    facts: dict[str, dict[str, Any]] = {}
    for row in connection.execute(_facts_of(settings), {"case_ids": list(case_ids)}):
        fact = dict(zip(_FACT_COLUMNS, row, strict=True))
        for flag in _FLAGS:
            # An outer join's missing task or finding reads as NULL, which counts as no.
            fact[flag] = bool(fact[flag])
        facts[fact["case_id"]] = fact
    return list(facts.values())


def rating_facts_of(connection: Connection, facts: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    by_case = {fact["case_id"]: fact for fact in facts}
    rows = []
    for rating_id, case_id, rating, at in connection.execute(_ratings_of(), {"case_ids": list(by_case)}):
        fact = by_case[case_id]
        rows.append(
            {
                "rating_id": rating_id,
                "case_id": case_id,
                "received_at": fact["received_at"],
                "county_code": fact["county_code"],
                "team_code": fact["team_code"],
                "rating": rating,
                "at": at,
            }
        )
    return rows


def repeat_facts_of(connection: Connection, facts: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    by_case = {fact["case_id"]: fact for fact in facts}
    return [
        {
            "repeat_case_id": repeat_case_id,
            "case_id": case_id,
            "received_at": received_at,
            "county_code": by_case[case_id]["county_code"],
            "team_code": by_case[case_id]["team_code"],
        }
        for repeat_case_id, case_id, received_at in connection.execute(
            _repeats_of(), {"case_ids": list(by_case)}
        )
    ]


def refresh(
    connection: Connection,
    case_ids: Iterable[str],
    settings: MeasureSettings,
    tz: ZoneInfo,
    *,
    days: bool = True,
) -> None:
    """Make these matters' rows again from the tables, and (``days``) their days' sums with them
    (the caller holds their locks)."""
    ordered = sorted(set(case_ids))
    for start in range(0, len(ordered), REFRESH_BATCH):
        batch = {"case_ids": ordered[start : start + REFRESH_BATCH]}
        facts = facts_of(connection, settings, batch["case_ids"])
        ratings = rating_facts_of(connection, facts)
        repeats = repeat_facts_of(connection, facts)
        # The old rows are what the deletes took: read before them, a rebuild's clearing committed
        # in between would have their part in the days' sums taken out twice.
        old_ratings = [dict(row._mapping) for row in connection.execute(_delete_rating_facts(), batch)]
        old_facts = [dict(row._mapping) for row in connection.execute(_delete_facts(), batch)]
        connection.execute(_delete_repeat_facts(), batch)
        if facts:
            connection.execute(FACT.insert(), facts)
        if ratings:
            connection.execute(RATING_FACT.insert(), ratings)
        if repeats:
            connection.execute(REPEAT_FACT.insert(), repeats)
        if not days:
            continue
        measure_days.apply(
            connection,
            tz=tz,
            old_facts=old_facts,
            new_facts=facts,
            old_ratings=old_ratings,
            new_ratings=ratings,
        )


# --- Building them all, a batch at a time ---------------------------------------------------------


def build_step(
    connection: Connection,
    settings: MeasureSettings,
    tz: ZoneInfo,
    *,
    batch: int = BUILD_BATCH,
    lock: bool = True,
) -> bool:
    """One batch of the rebuild the settings call for; whether more is waiting.  ``lock``: take the
    batch's matters' locks (not when nothing else writes, as the locks would add up to every matter
    in one transaction)."""
    wanted = fingerprint(settings)
    # Two instances' builders take turns on the state's row (PostgreSQL; SQLite has one writer).
    state = connection.execute(select(STATE).where(STATE.c.id == STATE_ID).with_for_update()).one_or_none()
    if state is not None and state.fingerprint == wanted and state.complete:
        return False
    after = state.next_case_id if state is not None and state.fingerprint == wanted else None
    query = select(MATTER.c.case_id).order_by(MATTER.c.case_id).limit(batch)
    if after is not None:
        query = query.where(MATTER.c.case_id > after)
    case_ids = list(connection.scalars(query))
    # As at a commit's refresh: a transaction changing one of these matters now waits, else its
    # refresh and this batch would both insert the matter's row.
    if lock:
        lock_matters(connection, case_ids)
    if after is None:
        # A fresh start: rows of matters that no longer exist (none in normal running) go too.
        connection.execute(RATING_FACT.delete())
        connection.execute(REPEAT_FACT.delete())
        connection.execute(FACT.delete())
    # The days' sums are made once, from all the rows, at the end: added to a batch at a time, each
    # day's row took an update per batch (on PostgreSQL, 80 MB of dead rows for 4 MB of sums).
    refresh(connection, case_ids, settings, tz, days=False)
    complete = len(case_ids) < batch
    if complete:
        if lock:
            _hold_fact_tables(connection)
        measure_days.rebuild(
            connection,
            tz=tz,
            facts=connection.execute(select(FACT)),
            ratings=connection.execute(select(RATING_FACT)),
        )
    values = {
        "fingerprint": wanted,
        "next_case_id": None if complete else case_ids[-1],
        "complete": complete,
        "updated_at": utcnow(),
    }
    if state is None:
        connection.execute(STATE.insert().values(id=STATE_ID, **values))
    else:
        connection.execute(STATE.update().where(STATE.c.id == STATE_ID).values(**values))
    if complete:
        log.info("measure facts built", fingerprint=wanted[:12])
    return not complete


def _hold_fact_tables(connection: Connection) -> None:
    """On PostgreSQL, wait for the refreshes under way and keep new ones out until the commit: the
    days' sums are made from the rows as they then stand, and a refresh's difference committed
    meanwhile would be lost."""
    if connection.dialect.name == "postgresql":
        # In the order a refresh writes them, so a refresh under way finishes first.
        tables = ", ".join(table.name for table in (RATING_FACT, FACT))
        connection.exec_driver_sql(f"LOCK TABLE {tables} IN SHARE ROW EXCLUSIVE MODE")


def build_all(connection: Connection, settings: MeasureSettings, tz: ZoneInfo) -> None:
    """The whole rebuild in one transaction, nobody else writing (the scale data's finish)."""
    while build_step(connection, settings, tz, batch=20_000, lock=False):
        pass


async def ready(session: AsyncSession, settings: MeasureSettings) -> bool:
    """Whether the rows are complete for these settings (else the measures read the tables)."""
    connection = await session.connection()
    state = (await connection.execute(select(STATE).where(STATE.c.id == STATE_ID))).one_or_none()
    return state is not None and state.complete and state.fingerprint == fingerprint(settings)


def fact_builder(
    *, sessions: Callable[[], AsyncSession], settings: Callable[[], MeasureSettings], tz: ZoneInfo
) -> BackgroundWorker:
    """Checks the fingerprint every minute; rebuilds a batch per step (each its own transaction,
    so the consumers write between two) until the rows are complete."""

    async def step() -> bool:
        async with sessions() as session, session.begin():
            connection = await session.connection()
            return bool(await connection.run_sync(build_step, settings(), tz))

    return BackgroundWorker(
        name="measure-facts",
        step=step,
        idle_seconds=BUILD_EVERY_SECONDS,
        step_timeout=BUILD_STEP_TIMEOUT_SECONDS,
        backoff_max=BUILD_EVERY_SECONDS,
    )
