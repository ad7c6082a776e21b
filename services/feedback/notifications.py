"""Notifications (通知) and the 待办 inbox: every ladder step, notice and follow-up reaches people.

A notification is addressed to an audience, not copied per person: ``team:<code>`` (every
inspector of the team), ``role:supervisor`` (the city supervisors), ``role:operator``,
``leader:<county code>`` (that bureau's 分管领导) or ``user:<username>``.  A person's
notifications are those of the audiences they belong to; reading one is recorded per person.

The city supervisors and a bureau's leader are also sent a short SMS or e-mail (a ``staff``
delivery, sent by the delivery worker to the contact routing keeps for that bureau).  Neither the
title nor the message ever names a complainant: the tracking code, the step and the deadline.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel.ext.asyncio.session import AsyncSession

from services.feedback import notification_summary
from services.feedback.cases import known_case, local_date
from services.feedback.context import FeedbackContext
from services.feedback.models import (
    CaseView,
    Delivery,
    DeliveryKind,
    Notification,
    NotificationKind,
)
from shared.auth import Principal, Role
from shared.db import new_id, table_of
from shared.events import CaseAssigned, EarlyWarningRaised, LadderStepReached
from shared.workcalendar import WorkCalendar

SUPERVISORS = "role:supervisor"
OPERATORS = "role:operator"
STAFF_TEMPLATE = Path(__file__).resolve().parent / "templates" / "staff_notice.txt"


def team(code: str) -> str:
    return f"team:{code}"


def leader(county_code: str) -> str:
    return f"leader:{county_code}"


def user(username: str) -> str:
    return f"user:{username}"


def audiences_of(principal: Principal) -> list[str]:
    """The audiences a person belongs to: their role's (or team's, or bureau's) and their own."""
    found = [user(principal.username)]
    if principal.is_(Role.SUPERVISOR):
        found.append(SUPERVISORS)
    elif principal.is_(Role.OPERATOR):
        found.append(OPERATORS)
    elif principal.is_(Role.INSPECTOR) and principal.team_code:
        found.append(team(principal.team_code))
    elif principal.is_(Role.LEADER) and principal.county_code:
        found.append(leader(principal.county_code))
    return found


def messaged(audience: str) -> bool:
    """Whether an audience is also sent an SMS or e-mail: the city supervisors and the bureaus' leaders."""
    return audience == SUPERVISORS or audience.startswith("leader:")


@lru_cache(maxsize=1)
def _staff_template() -> str:
    return STAFF_TEMPLATE.read_text(encoding="utf-8").strip()


def staff_text(title: str) -> str:
    return _staff_template().format(title=title)


async def _insert_missing(session: AsyncSession, rows: list[dict[str, object]]) -> list[str]:
    """Insert the rows whose (dedupe_key, audience) is not stored; the audiences actually inserted.

    ``INSERT ... ON CONFLICT DO NOTHING RETURNING``: a row another transaction inserted and has not
    committed yet is waited for, then skipped, so concurrent instances (or a redelivered event)
    create it once.  A Core statement on the session's connection: nothing pending in the session
    concerns this table (notifications are only ever inserted here).
    """
    table = table_of(Notification)
    dialect = session.sync_session.get_bind().dialect.name
    statement: postgresql.Insert | sqlite.Insert
    if dialect == "postgresql":
        statement = (
            postgresql.insert(table)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["dedupe_key", "audience"])
        )
    elif dialect == "sqlite":
        statement = (
            sqlite.insert(table)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["dedupe_key", "audience"])
        )
    else:
        raise RuntimeError(f"no INSERT ... ON CONFLICT for the {dialect} database")
    connection = await session.connection()
    result = await connection.execute(statement.returning(table.c.audience))
    return [str(audience) for audience in result.scalars()]


async def notify(
    *,
    session: AsyncSession,
    kind: NotificationKind,
    audiences: Sequence[str],
    dedupe_key: str,
    case_id: str | None,
    title: str,
    link: str | None = None,
    due_at: datetime | None = None,
    at: datetime,
    calendar: WorkCalendar,
    tracking_code: str | None = None,
    county_code: str | None = None,
    team_code: str | None = None,
    send_message: bool = True,
    correlation_id: str | None = None,
) -> list[str]:
    """Create one notification per audience, once: a second call with the same ``dedupe_key`` and
    audience (a redelivered event, a second scheduler) changes nothing.  Runs inside the caller's
    transaction, so the notification commits with the effect that caused it.

    ``link``: where the item is handled, as ``<service>:<path>`` (``verification:/tasks/…``).
    A newly notified supervisors' or leader's audience is also sent a staff message, unless
    ``send_message`` is false.  Returns the audiences notified now (none on a repeat).
    """
    wanted = list(dict.fromkeys(audiences))
    if not wanted:
        return []
    # Fixed now, by the calendar of the day it was sent: the figures count against it (``inbox``).
    read_deadline = calendar.add_working_days(at, 1)
    rows: list[dict[str, object]] = [
        {
            "id": new_id(),
            "kind": str(kind),
            "audience": audience,
            "dedupe_key": dedupe_key,
            "case_id": case_id,
            "tracking_code": tracking_code,
            "county_code": county_code,
            "team_code": team_code,
            "title": title[:300],
            "link": link,
            "due_at": due_at,
            "created_at": at,
            "handled_at": None,
            "handled_by": None,
            "read_deadline": read_deadline,
            "first_read_at": None,
        }
        for audience in wanted
    ]
    inserted = await _insert_missing(session, rows)
    if inserted:
        # Sent on a day that is over (an event delivered late): that day's summary, if it has one,
        # no longer holds.
        await notification_summary.reopen_day(session, at=at, tz=calendar.tz)
    if send_message and case_id:
        # Imported here: deliveries (and the clocks it uses) notify people, so they import this module.
        from services.feedback.deliveries import new_delivery

        for audience in inserted:
            if messaged(audience):
                delivery = new_delivery(
                    session,
                    case_id=case_id,
                    kind=DeliveryKind.STAFF,
                    answer_id=None,
                    subject=title[:200],
                    text=staff_text(title),
                    correlation_id=correlation_id,
                )
                delivery.recipient = audience
                # Its own key prefix: a gateway's log tells staff messages from complainants' at a glance.
                delivery.idempotency_key = f"sv-staff-{delivery.id}"
    return inserted


async def close_items(
    *,
    session: AsyncSession,
    case_id: str,
    kinds: Sequence[NotificationKind],
    by: str,
    at: datetime,
) -> None:
    """Mark the open items of ``kinds`` on a matter handled (the thing they asked for was done)."""
    table = table_of(Notification)
    connection = await session.connection()
    await connection.execute(
        update(table)
        .where(
            table.c.case_id == case_id,
            table.c.kind.in_([str(kind) for kind in kinds]),
            table.c.handled_at.is_(None),
        )
        .values(handled_at=at, handled_by=by)
    )


async def close_item(*, session: AsyncSession, dedupe_key: str, by: str, at: datetime) -> None:
    """Mark the open items of one ``dedupe_key`` handled (a failed delivery that was resolved)."""
    table = table_of(Notification)
    connection = await session.connection()
    await connection.execute(
        update(table)
        .where(table.c.dedupe_key == dedupe_key, table.c.handled_at.is_(None))
        .values(handled_at=at, handled_by=by)
    )


# --- What the events mean for people -------------------------------------------------------------

LADDER_KINDS: dict[str, NotificationKind] = {
    "reminder": NotificationKind.REMINDER,
    "due_today": NotificationKind.REMINDER,
    "chase": NotificationKind.CHASE,
    "escalation": NotificationKind.ESCALATION,
    "rebuke": NotificationKind.REBUKE,
}
STEP_TAGS = {
    "reminder": "提醒",
    "due_today": "今日到期",
    "chase": "催办",
    "escalation": "督办",
    "rebuke": "通报",
}
# Helper clocks whose every step is a reminder to the team that must rectify or follow up.
RECTIFICATION_CLOCK_PREFIXES = ("rectification", "b_follow_up")
# What a ladder step leaves open: closed when the matter is concluded.
LADDER_ITEM_KINDS = (
    NotificationKind.REMINDER,
    NotificationKind.CHASE,
    NotificationKind.ESCALATION,
    NotificationKind.REBUKE,
)


def clock_label(ctx: FeedbackContext, case: CaseView, clock: str) -> str:
    """The clock's name as people read it: the matter's own clocks, then the deadline book."""
    for entry in case.clocks:
        if entry.get("name") == clock and entry.get("label"):
            return str(entry["label"])
    for rule in ctx.deadlines.clocks:
        if rule.name == clock:
            return rule.label
    return "办理"


def ladder_title(*, step: str, tracking_code: str, label: str, due_text: str, tag: str | None = None) -> str:
    """``【督办】ZK… 核查办结期限已过（2026年11月19日到期）``: no complainant, ever."""
    if step == "reminder":
        state = f"将于{due_text}到期"
    elif step == "due_today":
        state = f"今日（{due_text}）到期"
    else:
        state = f"期限已过（{due_text}到期），尚未办结"
    return f"【{tag or STEP_TAGS.get(step, '提醒')}】{tracking_code} {label}{state}"


async def ladder_step(*, session: AsyncSession, ctx: FeedbackContext, event: LadderStepReached) -> None:
    """A step of an overdue ladder: the people the step names get it, once per step and audience."""
    case = await known_case(session, event.case_id)
    label = clock_label(ctx, case, event.clock)
    due_text = local_date(event.due_at, ctx)

    async def send(kind: NotificationKind, audiences: list[str], title: str, link: str) -> None:
        await notify(
            session=session,
            kind=kind,
            audiences=audiences,
            dedupe_key=f"ladder:{event.task_id}:{event.clock}:{event.step}",
            case_id=case.case_id,
            title=title,
            link=link,
            due_at=event.due_at,
            at=event.occurred_at,
            calendar=ctx.calendar,
            tracking_code=case.tracking_code,
            county_code=case.county_code,
            team_code=event.team_code,
            correlation_id=event.correlation_id,
        )

    task_link = f"verification:/tasks/{event.task_id}"
    if event.clock.startswith(RECTIFICATION_CLOCK_PREFIXES):
        title = ladder_title(
            step=event.step, tracking_code=case.tracking_code, label=label, due_text=due_text, tag="整改"
        )
        await send(NotificationKind.RECTIFICATION_DUE, [team(event.team_code)], title, task_link)
        return
    kind = LADDER_KINDS[event.step]
    title = ladder_title(step=event.step, tracking_code=case.tracking_code, label=label, due_text=due_text)
    if kind in (NotificationKind.REMINDER, NotificationKind.CHASE):
        await send(kind, [team(event.team_code)], title, task_link)
        return
    await send(kind, [SUPERVISORS], title, task_link)
    if kind == NotificationKind.REBUKE and case.county_code:
        # The bureau's leader reads the ledger, not the team's task page.
        await send(kind, [leader(case.county_code)], title, "verification:/ledger")


async def early_warning(*, session: AsyncSession, event: EarlyWarningRaised, calendar: WorkCalendar) -> None:
    """An officer or a unit crossed a threshold: the supervisors and the county's leader are told."""
    who = f"民警（警号{event.subject_key}）" if event.subject_kind == "officer" else event.subject_key
    measure = "被投诉" if event.measure == "complaints" else "被查实投诉"
    title = (
        f"【预警】{who}{event.window_months}个月内{measure}{event.count}件，达到预警线（{event.threshold}件）"
    )
    audiences = [SUPERVISORS]
    if event.county_code:
        audiences.append(leader(event.county_code))
    case = await session.get(CaseView, event.case_id)
    await notify(
        session=session,
        kind=NotificationKind.EARLY_WARNING,
        audiences=audiences,
        dedupe_key=f"warning:{event.event_id}",
        case_id=event.case_id,
        title=title,
        link="verification:/dashboard",
        at=event.occurred_at,
        calendar=calendar,
        tracking_code=case.tracking_code if case else None,
        county_code=event.county_code,
        correlation_id=event.correlation_id,
    )


async def needs_supervisor(*, session: AsyncSession, event: CaseAssigned, calendar: WorkCalendar) -> None:
    """Routing could not place a matter with confidence: a supervisor must decide."""
    case = await known_case(session, event.case_id)
    await notify(
        session=session,
        kind=NotificationKind.NEEDS_SUPERVISOR,
        audiences=[SUPERVISORS],
        dedupe_key=f"assignment:{event.assignment_id}",
        case_id=case.case_id,
        title=f"【待定】{case.tracking_code} 无法按规则确定承办单位，请督察支队指定",
        link=f"routing:/cases/{case.case_id}",
        at=event.occurred_at,
        calendar=calendar,
        tracking_code=case.tracking_code,
        county_code=case.county_code,
        team_code=event.team_code,
        correlation_id=event.correlation_id,
    )


def delivery_key(delivery_id: str) -> str:
    return f"delivery:{delivery_id}"


async def delivery_failed(
    *, session: AsyncSession, delivery: Delivery, tracking_code: str, at: datetime, calendar: WorkCalendar
) -> None:
    """An automatic delivery gave up: a person must reach the complainant (or see to a staff message)."""
    staff = delivery.kind == DeliveryKind.STAFF
    what = "工作提醒短信/邮件" if staff else "答复或告知"
    await notify(
        session=session,
        kind=NotificationKind.DELIVERY_FAILED,
        audiences=[SUPERVISORS if staff else OPERATORS],
        dedupe_key=delivery_key(delivery.id),
        case_id=delivery.case_id,
        title=f"【送达失败】{tracking_code} {what}未能自动送达，请人工处理",
        link="feedback:/messages" if staff else "feedback:/deliveries",
        at=at,
        calendar=calendar,
        tracking_code=tracking_code,
        send_message=False,
        correlation_id=delivery.correlation_id,
    )
