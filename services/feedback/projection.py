"""The public projection of each matter, built from the bus: its view, its timeline, its draft answers.

Each function takes one event of the matter, in stream order; ``consumers``
maps the events to them.  An event of a matter whose first event has not
arrived yet raises ``NotYetKnown`` and is delivered again later.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel.ext.asyncio.session import AsyncSession

from services.feedback.answers import current_answer, draft_answer
from services.feedback.cases import add_timeline, known_case, local_date, set_status
from services.feedback.context import FeedbackContext
from services.feedback.deliveries import deliver_to_repeat, new_delivery
from services.feedback.models import CaseStatus, CaseView, DeliveryKind, Stage
from shared.audit import audit
from shared.db import new_row, utcnow
from shared.events import (
    CaseAssigned,
    CaseConcluded,
    ComplaintReceived,
    DeadlineExtended,
    FindingSentBack,
    MatterReclassified,
    ReviewStarted,
    SuggestionReceived,
    TaskClaimed,
    deputy_account_of,
)
from shared.logging import get_logger
from shared.slice_rows import lookup, pending_rows
from shared.states import CaseKind

log = get_logger(__name__)
# What the view of a matter takes of the event that opened it, under the same names.
VIEW_FIELDS = {"case_id", "tracking_code", "query_secret_hash", "received_at"}
SUGGESTION_VIEW_FIELDS = {
    *VIEW_FIELDS,
    "title",
    "session",
    "number",
    "deputy_name",
    "deputy_delegation",
    "lead_unit",
}


async def open_complaint(*, session: AsyncSession, event: ComplaintReceived) -> None:
    if await lookup(session, CaseView, event.case_id) is not None:
        return
    primary = await _repeated_matter(session, event)
    case = new_row(
        CaseView,
        case_kind=CaseKind.COMPLAINT,
        **event.model_dump(include={*VIEW_FIELDS, "anonymous", "accused_unit", "county_code"}),
        categories=[a.category for a in event.allegations],
        repeat_of=primary.case_id if primary else None,
    )
    session.add(case)
    if primary is None:
        add_timeline(session, event.case_id, Stage.RECEIVED, "投诉已受理", event.received_at)
    else:
        await _link_repeat(session, repeat=case, primary=primary, event=event)


async def _repeated_matter(session: AsyncSession, event: ComplaintReceived) -> CaseView | None:
    """The open matter a linked repeat (重复件) shows: that one must have arrived first.

    It may have arrived in the same slice as its repeat (a caller who rings again at once, the
    demo seeder): its view is then still among the slice's unflushed rows, which a query misses.
    """
    if not (event.linked_repeat and event.repeat_of):
        return None
    unflushed = (c for c in pending_rows(session, CaseView) if c.case_id == event.repeat_of)
    return next(unflushed, None) or await known_case(session, event.repeat_of)


async def _link_repeat(
    session: AsyncSession, *, repeat: CaseView, primary: CaseView, event: ComplaintReceived
) -> None:
    """A repeat call about an open matter: on both timelines; its caller gets an answer already out."""
    label = "投诉已受理。您反映的问题此前已受理并正在办理，本次来电已合并办理（重复件），办理结果将一并告知"
    add_timeline(session, repeat.case_id, Stage.RECEIVED, label, event.received_at)
    add_timeline(session, primary.case_id, Stage.REPEAT_CALL, "重复来电，已合并本件办理", event.received_at)
    if primary.status == CaseStatus.ANSWERED and not repeat.anonymous:
        answer = await current_answer(session=session, case=primary)
        if answer is not None:
            deliver_to_repeat(
                session, case=primary, repeat=repeat, answer=answer, correlation_id=event.correlation_id
            )


async def open_suggestion(*, session: AsyncSession, event: SuggestionReceived) -> None:
    if await lookup(session, CaseView, event.case_id) is not None:
        return
    session.add(
        new_row(
            CaseView,
            case_kind=CaseKind.SUGGESTION,
            **event.model_dump(include=SUGGESTION_VIEW_FIELDS),
            suggestion_kind=event.kind,
            deputy_account=deputy_account_of(event),
        )
    )
    add_timeline(session, event.case_id, Stage.RECEIVED, "建议（提案）已登记", event.received_at)


async def assign(*, session: AsyncSession, event: CaseAssigned) -> None:
    case = await known_case(session, event.case_id)
    case.team_code = event.team_code
    case.team_name = event.team_name
    case.teams_so_far = list(dict.fromkeys([*case.teams_so_far, event.team_code]))
    case.clocks = [c.model_dump(mode="json") for c in event.clocks]
    # After a reopen the public status stays "reopened" until the new team starts work.
    if case.status != CaseStatus.REOPENED:
        set_status(case, CaseStatus.ROUTED)
    session.add(case)
    complaint = case.case_kind == CaseKind.COMPLAINT
    label = "已分派督察部门核查" if complaint else "已交承办单位办理"
    if event.round > 1:
        label = "已重新分派，提级核查" if complaint else "已交承办单位重新办理"
    add_timeline(session, case.case_id, Stage.ROUTED, label, event.occurred_at)


async def _advance(
    session: AsyncSession, *, case_id: str, status: CaseStatus, stage: Stage, label: str, at: datetime
) -> None:
    case = await known_case(session, case_id)
    set_status(case, status)
    session.add(case)
    add_timeline(session, case.case_id, stage, label, at)


async def start_verifying(*, session: AsyncSession, event: TaskClaimed) -> None:
    await _advance(
        session,
        case_id=event.case_id,
        status=CaseStatus.VERIFYING,
        stage=Stage.VERIFYING,
        label="核查（办理）中",
        at=event.occurred_at,
    )


async def start_review(*, session: AsyncSession, event: ReviewStarted) -> None:
    await _advance(
        session,
        case_id=event.case_id,
        status=CaseStatus.REVIEWING,
        stage=Stage.REVIEWING,
        label="核查结论复核中",
        at=event.occurred_at,
    )


async def send_back(*, session: AsyncSession, event: FindingSentBack) -> None:
    await _advance(
        session,
        case_id=event.case_id,
        status=CaseStatus.VERIFYING,
        stage=Stage.VERIFYING,
        label="复核后补充核查",
        at=event.occurred_at,
    )


async def reclassify(*, session: AsyncSession, event: MatterReclassified) -> None:
    """The matter left this track (another kind of matter, or forwarded elsewhere): it is closed here."""
    if event.to_kind == "citizen_suggestion":
        label = f"经甄别不属于警务投诉，已作为群众建议转交{event.forwarded_to}办理"
    elif event.to_kind == "suggestion":
        label = "已转为代表建议（委员提案）办理"
    else:
        label = "已转为投诉办理"
    await _advance(
        session,
        case_id=event.case_id,
        status=CaseStatus.CLOSED,
        stage=Stage.CLOSED,
        label=label,
        at=event.occurred_at,
    )


async def conclude(*, session: AsyncSession, event: CaseConcluded, ctx: FeedbackContext) -> None:
    """The matter was concluded: a draft answer waits for a supervisor's approval."""
    case = await known_case(session, event.case_id)
    if event.round < case.round or case.status == CaseStatus.CLOSED:
        # A conclusion of an earlier round, or of a matter that has left this track: nothing to answer.
        log.info("conclusion of an earlier round or a closed matter ignored", round=event.round)
        return
    set_status(case, CaseStatus.CONCLUDED)
    case.outcome = event.outcome
    if event.classification:
        case.classification = event.classification
    session.add(case)
    label = "后续办理已办结，待答复" if event.follow_up else "已办结，待答复"
    add_timeline(session, case.case_id, Stage.CONCLUDED, label, event.occurred_at)
    session.add(draft_answer(ctx=ctx, case=case, event=event))


def _extended_clocks(
    case: CaseView, *, ctx: FeedbackContext, event: DeadlineExtended
) -> list[dict[str, object]]:
    new_due = event.new_due_at.isoformat()
    clocks: list[dict[str, object]] = []
    found = False
    for clock in case.clocks:
        if clock.get("name") == event.clock:
            clock = {**clock, "due_at": new_due, "extended": True}
            found = True
        clocks.append(clock)
    if not found:
        label = next((c.label for c in ctx.deadlines.clocks if c.name == event.clock), "办理期限")
        clocks.append({"name": event.clock, "label": label, "due_at": new_due, "extended": True})
    return clocks


def _notify_extension(
    session: AsyncSession, *, ctx: FeedbackContext, case: CaseView, event: DeadlineExtended, date_text: str
) -> None:
    """Tell the complainant the new date; the reason is the supervisor's internal note and stays out."""
    new_delivery(
        session,
        case_id=case.case_id,
        kind=DeliveryKind.NOTICE,
        answer_id=None,
        subject=f"办理期限延长告知（查询码：{case.tracking_code}）",
        text=(
            f"您好！您反映的问题（查询码：{case.tracking_code}）经批准，办理期限依规延长至{date_text}。"
            "办理结果将及时告知您，您也可凭查询码和查询密码在“阳光警务查询”中查看办理进度。\n"
            f"{ctx.issuing_unit}"
        ),
        correlation_id=event.correlation_id,
    )


async def extend_deadline(*, session: AsyncSession, event: DeadlineExtended, ctx: FeedbackContext) -> None:
    case = await known_case(session, event.case_id)
    case.clocks = _extended_clocks(case, ctx=ctx, event=event)
    case.updated_at = utcnow()
    session.add(case)
    date_text = local_date(event.new_due_at, ctx)
    add_timeline(session, case.case_id, Stage.EXTENDED, f"办理期限已延长至{date_text}", event.occurred_at)
    still_open = case.status not in (CaseStatus.ANSWERED, CaseStatus.CLOSED)
    if case.case_kind == CaseKind.COMPLAINT and not case.anonymous and still_open:
        _notify_extension(session, ctx=ctx, case=case, event=event, date_text=date_text)
    await audit(
        session,
        case_id=case.case_id,
        action="deadline_extended",
        actor=event.actor or "verification",
        reason=event.reason,
        detail={"clock": event.clock, "new_due_at": event.new_due_at.isoformat(), "task_id": event.task_id},
    )
