"""Feedback's own clocks: answer approval (答复审批) and the follow-up call (回访).

A clock starts once per answer (``subject_id``) and stops when what it waits for is done; its
periods, rules and sources are the deadline book's (``shared/data/deadlines.json``).  The steps
of its ladder are taken by ``clock_ladder`` (``shared.ladder``).  The acceptance notice's clock
is verification's: feedback stops it by announcing the notice (``acceptance_notice_sent``).

The delivery code calls it; it imports the notifications module as a module, as that code does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.feedback import notifications
from services.feedback.context import FeedbackContext
from services.feedback.models import (
    CaseView,
    Channel,
    Delivery,
    DeliveryKind,
    FeedbackClock,
    FeedbackClockStep,
)
from shared.events import AcceptanceNoticeDelivered
from shared.ladder import CHASE, DUE_TODAY, ESCALATION, REMINDER, RUNNING, STOPPED, LadderPolicy
from shared.outbox import record_event
from shared.pagination import Key, Page
from shared.states import CaseKind


class ClockName(StrEnum):
    ANSWER_APPROVAL = "answer_approval"
    FOLLOW_UP = "follow_up"


# The rungs of a feedback clock.  The first ("reminder") is put so far before the deadline that it
# falls due when the clock starts, so the people it names are told at once; the last is the 督办.
STEPS: tuple[str, ...] = (REMINDER, DUE_TODAY, CHASE, ESCALATION)
REMINDER_AT_START_WORKING_DAYS = 60
STEP_LABELS: dict[str, str] = {
    REMINDER: "待办提醒",
    DUE_TODAY: "当日到期提醒",
    CHASE: "逾期催办",
    ESCALATION: "逾期督办",
}
ACCEPTANCE_KEY_PREFIX = "sv-acceptance-"
NOTICE_CHANNELS: dict[str, Literal["sms", "email", "phone", "letter"]] = {
    Channel.SMS: "sms",
    Channel.EMAIL: "email",
    Channel.PHONE: "phone",
    Channel.LETTER: "letter",
}


def clock_policy(ctx: FeedbackContext) -> LadderPolicy:
    return LadderPolicy(
        calendar=ctx.calendar, steps=STEPS, reminder_working_days_before=REMINDER_AT_START_WORKING_DAYS
    )


def acceptance_key(case_id: str) -> str:
    """The acceptance notice's delivery key: one notice per matter, whatever asks for it."""
    return f"{ACCEPTANCE_KEY_PREFIX}{case_id}"


def acceptance_item_key(case_id: str) -> str:
    """The operators' 待办 item when the notice needs a person."""
    return f"acceptance:{case_id}"


def is_acceptance_notice(delivery: Delivery) -> bool:
    return delivery.kind == DeliveryKind.NOTICE and delivery.idempotency_key == acceptance_key(
        delivery.case_id
    )


async def start_clock(
    session: AsyncSession,
    *,
    ctx: FeedbackContext,
    case_id: str,
    name: ClockName,
    subject_id: str,
    start: datetime,
) -> FeedbackClock | None:
    """Start ``name`` for ``subject_id`` once; None when it was started before."""
    existing = (
        await session.exec(
            select(FeedbackClock).where(FeedbackClock.name == name, FeedbackClock.subject_id == subject_id)
        )
    ).first()
    if existing is not None:
        return None
    spec = ctx.deadlines.later_clock(name, calendar=ctx.calendar, start=start)
    clock = FeedbackClock(case_id=case_id, subject_id=subject_id, started_at=start, **spec.model_dump())
    clock_policy(ctx).schedule(clock, set())
    try:
        async with session.begin_nested():
            session.add(clock)
    except IntegrityError:
        return None  # started by a concurrent transaction: once is the rule
    return clock


async def stop_clocks(
    session: AsyncSession, *, case_id: str, names: tuple[ClockName, ...], at: datetime, note: str
) -> list[FeedbackClock]:
    """Stop the running clocks of ``names`` on a matter: what they waited for was done."""
    stopped = []
    for clock in await session.exec(
        select(FeedbackClock).where(
            FeedbackClock.case_id == case_id,
            FeedbackClock.status == RUNNING,
            col(FeedbackClock.name).in_([str(n) for n in names]),
        )
    ):
        clock.status = STOPPED
        clock.stopped_at = at
        clock.stop_note = note[:200]
        clock.next_step = None
        clock.next_step_at = None
        session.add(clock)
        stopped.append(clock)
    return stopped


async def running_clock(session: AsyncSession, *, case_id: str, name: ClockName) -> FeedbackClock | None:
    return (
        await session.exec(
            select(FeedbackClock)
            .where(
                FeedbackClock.case_id == case_id, FeedbackClock.name == name, FeedbackClock.status == RUNNING
            )
            .order_by(col(FeedbackClock.started_at).desc())
        )
    ).first()


# --- Hooks of the answer and delivery code -------------------------------------------------------


async def answer_served(
    session: AsyncSession, *, ctx: FeedbackContext, case: CaseView, answer_id: str, at: datetime
) -> None:
    """A named complainant has the answer: the follow-up call (回访) falls due the working day after."""
    if case.case_kind != CaseKind.COMPLAINT or case.anonymous:
        return
    await start_clock(
        session, ctx=ctx, case_id=case.case_id, name=ClockName.FOLLOW_UP, subject_id=answer_id, start=at
    )


async def acceptance_notice_sent(
    session: AsyncSession, *, delivery: Delivery, channel: Channel, at: datetime, actor: str
) -> None:
    """The complainant was told the complaint was accepted: verification's acceptance clock stops,
    and the operators' item to phone or write (if the notice could not go automatically) is done."""
    if not is_acceptance_notice(delivery) or channel == Channel.NONE:
        return
    record_event(
        session,
        AcceptanceNoticeDelivered(
            case_id=delivery.case_id,
            correlation_id=delivery.correlation_id,
            actor=actor,
            channel=NOTICE_CHANNELS[channel],
            delivered_at=at,
        ),
    )
    await notifications.close_item(
        session=session, dedupe_key=acceptance_item_key(delivery.case_id), by=actor, at=at
    )


# --- Reading -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenClock:
    clock: FeedbackClock
    tracking_code: str
    last_step: str | None


async def open_clocks(
    session: AsyncSession, *, county_code: str | None, page: Page, only_open: bool = True
) -> list[OpenClock]:
    """Running clocks (or all), soonest deadline first, a page by keyset (due_at, id), with the
    total; ``county_code`` limits them to one county."""
    query = select(FeedbackClock, CaseView).join(
        CaseView, col(CaseView.case_id) == col(FeedbackClock.case_id)
    )
    if only_open:
        query = query.where(FeedbackClock.status == RUNNING)
    if county_code is not None:
        query = query.where(CaseView.county_code == county_code)
    keys = (Key(col(FeedbackClock.due_at)), Key(col(FeedbackClock.id)))
    rows = await page.rows(session, query, keys)
    ids = [clock.id for clock, _ in rows if clock.id is not None]
    taken: dict[int, list[str]] = {}
    if ids:
        for clock_id, step in await session.exec(
            select(FeedbackClockStep.clock_id, FeedbackClockStep.step).where(
                col(FeedbackClockStep.clock_id).in_(ids)
            )
        ):
            taken.setdefault(clock_id, []).append(step)
    result = []
    for clock, case in rows:
        done = taken.get(clock.id or 0, [])
        last = next((step for step in reversed(STEPS) if step in done), None)
        result.append(OpenClock(clock=clock, tracking_code=case.tracking_code, last_step=last))
    return result
