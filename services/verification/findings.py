"""Findings: recording one, concluding, the cross-check review (复核), follow-up replies and
co-handling views (the check of rectification items: ``rectifications``)."""

from __future__ import annotations

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.verification import early_warning, figures, open_figures
from services.verification.context import VerificationContext
from services.verification.later_clocks import (
    LaterClocks,
    default_rectification_due,
    start_after_conclusion,
)
from services.verification.models import (
    ACTIVE_TASK_STATUSES,
    FOLLOW_UP_CLASSIFICATION,
    CoHandlingView,
    Evidence,
    Finding,
    MatterSnapshot,
    Rectification,
    ReviewStatus,
    Task,
    TaskStatus,
)
from services.verification.schemas import (
    CoViewIn,
    FindingIn,
    FollowUpIn,
    RequireReviewIn,
    ReviewIn,
)
from services.verification.tasks import add_history, stop_clocks, task_event
from shared.audit import audit
from shared.auth import Principal, Role
from shared.db import utcnow
from shared.errors import FieldProblems, Forbidden, conflict
from shared.events import CaseConcluded, FindingSentBack, ReviewStarted
from shared.outbox import record_event
from shared.recusal import Duty, Matter, allowed_teams, may_take
from shared.reference import Organisation
from shared.states import CaseKind


async def conclude(
    session: AsyncSession,
    task: Task,
    finding: Finding,
    *,
    actor: str,
    correlation_id: str | None,
    reviewed: bool,
    later: LaterClocks,
) -> None:
    # The dashboard's summary: what the matter counted before (a follow-up reply concludes again).
    tz = later.policy.calendar.tz
    counted = await figures.part_of(session, case_id=task.case_id, tz=tz)
    was, task.status = task.status, TaskStatus.CONCLUDED
    task.concluded_at = utcnow()
    task.classification = finding.classification
    session.add(task)
    await open_figures.status_changed(session, task=task, was=was)
    await stop_clocks(session, task, at=task.concluded_at)
    # After the task's clocks stopped: rectification items and a B-class follow-up start theirs.
    await start_after_conclusion(session, later, task=task, finding=finding, at=task.concluded_at)
    await early_warning.count_substantiated(session=session, task=task, finding=finding, at=task.concluded_at)
    record_event(
        session,
        task_event(
            CaseConcluded,
            task,
            actor=actor,
            correlation_id=correlation_id,
            **task.model_dump(include={"case_kind", "team_code", "round"}),
            **finding.model_dump(
                include={"outcome", "summary", "accountability", "classification", "follow_up"}
            ),
            reviewed=reviewed,
        ),
    )
    await figures.record_change(session, case_id=task.case_id, before=counted, tz=tz)


async def record_finding(
    *,
    session: AsyncSession,
    task: Task,
    principal: Principal,
    finding_in: FindingIn,
    correlation_id: str | None,
    later: LaterClocks,
) -> Finding:
    await _check_finding(session, task, principal, finding_in)
    finding = _new_finding(task, principal, finding_in)
    session.add(finding)
    _add_rectifications(session, task, principal, finding_in, later)
    add_history(session, task, "finding_recorded", principal.username, finding_in.outcome)
    if task.review_required and task.review_team_code:
        _start_review(session, task, finding, principal=principal, correlation_id=correlation_id)
    else:
        await conclude(
            session,
            task,
            finding,
            actor=principal.username,
            correlation_id=correlation_id,
            reviewed=False,
            later=later,
        )
    await audit(
        session,
        case_id=task.case_id,
        action="finding_recorded",
        actor=principal.username,
        detail={
            "task_id": task.id,
            "outcome": finding.outcome,
            "review": task.status == TaskStatus.IN_REVIEW,
        },
    )
    return finding


async def _check_finding(
    session: AsyncSession, task: Task, principal: Principal, finding_in: FindingIn
) -> None:
    if task.status != TaskStatus.CLAIMED:
        raise conflict(
            "status",
            f"任务当前状态为“{task.status}”，不能提交结论",
            f"task is {task.status}; cannot record a finding",
        )
    if task.claimed_by != principal.username:
        raise Forbidden("只有认领该任务的督察民警可以提交结论")
    if task.case_kind == CaseKind.SUGGESTION and finding_in.classification is None:
        raise FieldProblems(
            [("classification", "代表建议需选择办理类别 A、B、C 或 D", "classification A-D is required")]
        )
    known_evidence = set(await session.exec(select(Evidence.id).where(Evidence.task_id == task.id)))
    unknown = [e for e in finding_in.evidence_ids if e not in known_evidence]
    if unknown:
        raise FieldProblems(
            [("evidence_ids", f"证据不属于本任务：{'、'.join(unknown)}", "evidence not on this task")]
        )
    matter = await session.get(MatterSnapshot, task.case_id)
    alleged = {str(a.get("category")) for a in (matter.allegations if matter else [])}
    strays = [a.category for a in finding_in.allegations if alleged and a.category not in alleged]
    if strays:
        raise FieldProblems(
            [
                (
                    "allegations",
                    f"投诉中没有这些类别：{'、'.join(strays)}",
                    f"not among the complaint's allegations: {strays}",
                )
            ]
        )


def _new_finding(task: Task, principal: Principal, finding_in: FindingIn) -> Finding:
    return Finding(
        task_id=task.id,
        outcome=finding_in.outcome,
        summary=finding_in.summary.strip(),
        facts=finding_in.facts,
        no_finding_reason=finding_in.no_finding_reason,
        classification=finding_in.classification,
        accountability=list(finding_in.accountability),
        per_allegation=[a.model_dump() for a in finding_in.allegations],
        per_officer=[o.model_dump() for o in finding_in.officers],
        evidence_ids=list(finding_in.evidence_ids),
        recorded_by=principal.username,
    )


def _add_rectifications(
    session: AsyncSession, task: Task, principal: Principal, finding_in: FindingIn, later: LaterClocks
) -> None:
    default_due = default_rectification_due(later, start=utcnow())
    for item in finding_in.rectifications:
        session.add(
            Rectification(
                task_id=task.id,
                case_id=task.case_id,
                item=item.item.strip(),
                owner=item.owner.strip(),
                due_date=item.due_date or default_due,
                added_by=principal.username,
            )
        )


def _start_review(
    session: AsyncSession, task: Task, finding: Finding, *, principal: Principal, correlation_id: str | None
) -> None:
    assert task.review_team_code is not None
    finding.review_status = ReviewStatus.PENDING
    task.status = TaskStatus.IN_REVIEW
    session.add(task)
    record_event(
        session,
        task_event(
            ReviewStarted,
            task,
            actor=principal.username,
            correlation_id=correlation_id,
            reviewer_team_code=task.review_team_code,
        ),
    )


async def latest_finding(*, session: AsyncSession, task_id: str) -> Finding | None:
    return (
        await session.exec(
            select(Finding).where(Finding.task_id == task_id).order_by(col(Finding.recorded_at).desc())
        )
    ).first()


async def findings(*, session: AsyncSession, task_id: str) -> list[Finding]:
    return list(
        await session.exec(
            select(Finding).where(Finding.task_id == task_id).order_by(col(Finding.recorded_at))
        )
    )


async def review(
    *,
    session: AsyncSession,
    task: Task,
    principal: Principal,
    review_in: ReviewIn,
    organisation: Organisation,
    correlation_id: str | None,
    later: LaterClocks,
) -> Finding:
    if principal.role != Role.INSPECTOR or principal.team_code != task.review_team_code:
        raise Forbidden("只有指定的复核队可以复核")
    if principal.team_code == task.team_code:
        raise Forbidden("不能复核本队的核查结论")
    if task.status != TaskStatus.IN_REVIEW:
        raise conflict("status", "该任务不在复核中", "task is not in review")
    # The reviewer was named through recusal; asked again so that a reviewer named before a change of
    # the matter (or of these rules) cannot confirm a finding it may not judge.
    verdict = may_take(
        matter=await recusal_matter(session=session, task=task),
        team_code=principal.team_code or "",
        duty=Duty.CHECK,
        organisation=organisation,
    )
    if not verdict.allowed:
        raise Forbidden(f"{verdict.chinese}；请督察支队另行指定复核队")
    finding = await latest_finding(session=session, task_id=task.id)
    if finding is None:
        raise conflict("status", "没有待复核的结论", "no finding to review")
    reasons = [r.strip() for r in review_in.reasons if r.strip()]
    finding.reviewed_by = principal.username
    finding.reviewed_at = utcnow()
    finding.review_reasons = reasons
    if review_in.decision == "confirm":
        finding.review_status = ReviewStatus.CONFIRMED
        add_history(session, task, "review_confirmed", principal.username, "；".join(reasons) or None)
        await conclude(
            session,
            task,
            finding,
            actor=principal.username,
            correlation_id=correlation_id,
            reviewed=True,
            later=later,
        )
    else:
        _send_back(session, task, finding, reasons, principal=principal, correlation_id=correlation_id)
    session.add(finding)
    await audit(
        session,
        case_id=task.case_id,
        action=f"review_{review_in.decision}",
        actor=principal.username,
        reason="；".join(reasons) or None,
    )
    return finding


def _send_back(
    session: AsyncSession,
    task: Task,
    finding: Finding,
    reasons: list[str],
    *,
    principal: Principal,
    correlation_id: str | None,
) -> None:
    finding.review_status = ReviewStatus.SENT_BACK
    task.status = TaskStatus.CLAIMED
    session.add(task)
    add_history(session, task, "review_sent_back", principal.username, "；".join(reasons))
    record_event(
        session,
        task_event(
            FindingSentBack,
            task,
            actor=principal.username,
            correlation_id=correlation_id,
            reviewer_team_code=principal.team_code or "",
            reasons=reasons,
        ),
    )


async def record_follow_up(
    *,
    session: AsyncSession,
    task: Task,
    principal: Principal,
    follow_up_in: FollowUpIn,
    correlation_id: str | None,
    later: LaterClocks,
) -> Finding:
    """A B-class suggestion stays on the ledger until this follow-up reply closes it."""
    if principal.role != Role.INSPECTOR or principal.team_code != task.team_code:
        raise Forbidden("只有承办队可以提交后续答复")
    if (
        task.case_kind != CaseKind.SUGGESTION
        or task.status != TaskStatus.CONCLUDED
        or task.classification != FOLLOW_UP_CLASSIFICATION
    ):
        raise conflict(
            "status", "只有已按B类答复的建议可以提交后续答复", "only a B-class reply can be followed up"
        )
    finding = Finding(
        task_id=task.id,
        outcome="no_finding",
        summary=follow_up_in.summary.strip(),
        no_finding_reason="后续答复",
        classification=follow_up_in.classification,
        recorded_by=principal.username,
        follow_up=True,
    )
    session.add(finding)
    add_history(session, task, "follow_up_reply", principal.username, follow_up_in.classification)
    await conclude(
        session,
        task,
        finding,
        actor=principal.username,
        correlation_id=correlation_id,
        reviewed=False,
        later=later,
    )
    await audit(session, case_id=task.case_id, action="follow_up_reply", actor=principal.username)
    return finding


async def recusal_matter(*, session: AsyncSession, task: Task) -> Matter:
    """The matter as recusal sees it from here: the accused county (the snapshot of the complaint)
    and every team that had it, this task's team and participants included.

    Checking refuses the accused bureau's own team whatever the accusation, so whether the accused
    are that bureau's leaders does not matter here.  A complaint whose snapshot has not arrived is
    refused a checker until it has: recusal cannot be judged without the accused.
    """
    matter = await session.get(MatterSnapshot, task.case_id)
    if task.case_kind == CaseKind.COMPLAINT and (matter is None or not matter.county_code):
        raise conflict(
            "status",
            "被投诉单位信息尚未同步，暂不能指定复核或检查整改",
            "the matter's accused is not known yet",
        )
    had_by: set[str] = set()
    for earlier in await session.exec(select(Task).where(Task.case_id == task.case_id)):
        had_by.update([earlier.team_code, *earlier.participants])
    return Matter(
        case_kind=task.case_kind,
        accused_area=matter.county_code if matter else None,
        had_by=frozenset({task.team_code, *task.participants} | had_by),
    )


async def require_review(
    *,
    session: AsyncSession,
    ctx: VerificationContext,
    task: Task,
    principal: Principal,
    review_in: RequireReviewIn,
) -> Task:
    """A supervisor picks a matter for the cross-check (复核) before it may conclude, naming the
    reviewer or leaving the choice to recusal; either way recusal decides whether the team may."""
    # In review too: a reviewer recusal now refuses is replaced for the finding that waits.
    if task.status not in (TaskStatus.OPEN, TaskStatus.CLAIMED, TaskStatus.IN_REVIEW):
        raise conflict(
            "status", "只有尚未办结的任务可以指定复核", "review can be required before the matter concludes"
        )
    organisation = ctx.organisation
    matter = await recusal_matter(session=session, task=task)
    chosen = review_in.review_team_code
    if chosen is None:
        chosen = next(
            iter(
                allowed_teams(
                    matter=matter,
                    candidates=organisation.team_codes(),
                    duty=Duty.CHECK,
                    organisation=organisation,
                )
            ),
            None,
        )
        if chosen is None:
            raise FieldProblems(
                [("review_team_code", "没有可回避的复核队可选，请指定", "no team may review this matter")]
            )
    if chosen not in organisation.team_codes():
        raise FieldProblems([("review_team_code", "不存在的督察队", "unknown team")])
    verdict = may_take(matter=matter, team_code=chosen, duty=Duty.CHECK, organisation=organisation)
    if not verdict.allowed:
        raise FieldProblems([("review_team_code", verdict.chinese, verdict.english)])
    task.review_required = True
    task.review_team_code = chosen
    session.add(task)
    add_history(session, task, "review_required", principal.username, review_in.reason)
    await audit(
        session,
        case_id=task.case_id,
        action="review_required",
        actor=principal.username,
        reason=review_in.reason,
    )
    return task


async def give_co_view(
    *, session: AsyncSession, ctx: VerificationContext, task: Task, principal: Principal, view_in: CoViewIn
) -> CoHandlingView:
    if principal.role != Role.INSPECTOR or principal.team_code not in task.participants:
        raise Forbidden("只有协办单位可以提出协办意见")
    if task.status not in ACTIVE_TASK_STATUSES:
        raise conflict("status", "主办单位已办结，不能再提出意见", "the lead team has concluded")
    team = principal.team_code or ""
    already = (
        await session.exec(
            select(CoHandlingView).where(CoHandlingView.task_id == task.id, CoHandlingView.team_code == team)
        )
    ).first()
    if already is not None:
        raise conflict("status", "本单位已提出协办意见", "this team already gave its view")
    view = CoHandlingView(
        task_id=task.id, team_code=team, view=view_in.view.strip(), given_by=principal.username
    )
    session.add(view)
    given = set(
        await session.exec(select(CoHandlingView.team_code).where(CoHandlingView.task_id == task.id))
    ) | {team}
    if set(task.participants) <= given:
        await stop_clocks(session, task, names=("co_handling_view",), at=ctx.clock.now())
    add_history(session, task, "co_view_given", principal.username, team)
    await audit(session, case_id=task.case_id, action="co_view_given", actor=principal.username)
    return view


async def co_views(*, session: AsyncSession, task_id: str) -> list[CoHandlingView]:
    return list(await session.exec(select(CoHandlingView).where(CoHandlingView.task_id == task_id)))
