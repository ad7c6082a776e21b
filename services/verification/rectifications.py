"""Rectification items (整改事项) a finding set: listed per task, and checked by a team that did
not find the problem (the recusal's CHECK duty)."""

from __future__ import annotations

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.verification.context import VerificationContext
from services.verification.findings import recusal_matter
from services.verification.later_clocks import stop_rectification_clock
from services.verification.models import Rectification, RectificationStatus
from services.verification.schemas import RectificationCheckIn
from services.verification.tasks import visible_task
from shared.audit import audit
from shared.auth import Principal, Role
from shared.errors import Forbidden, NotFound, conflict
from shared.recusal import Duty, may_take
from shared.reference import Organisation


async def rectifications(*, session: AsyncSession, task_id: str) -> list[Rectification]:
    return list(
        await session.exec(
            select(Rectification)
            .where(Rectification.task_id == task_id)
            .order_by(col(Rectification.due_date))
        )
    )


async def rectification_to_check(
    *, session: AsyncSession, item_id: str, principal: Principal, organisation: Organisation
) -> Rectification:
    """The item, if the caller sees its task and did not find the problem in the first place."""
    item = await session.get(Rectification, item_id)
    if item is None:
        raise NotFound("整改事项不存在")
    task = await visible_task(session=session, task_id=item.task_id, principal=principal)
    if principal.role == Role.INSPECTOR:
        # No team certifies a rectification of its own work or of its own bureau: not the lead team,
        # not a joint-check or co-handling participant, not the accused county's team.
        matter = await recusal_matter(session=session, task=task)
        verdict = may_take(
            matter=matter, team_code=principal.team_code or "", duty=Duty.CHECK, organisation=organisation
        )
        if not verdict.allowed:
            raise Forbidden(f"整改检查应由督察支队或复核队进行（{verdict.chinese}）")
    return item


async def check_rectification(
    *,
    session: AsyncSession,
    ctx: VerificationContext,
    item: Rectification,
    principal: Principal,
    check: RectificationCheckIn,
) -> Rectification:
    if item.status != RectificationStatus.OPEN:
        raise conflict("status", "该整改事项已检查", "this item was already checked")
    item.status = RectificationStatus.DONE if check.done else RectificationStatus.NOT_DONE
    item.checked_by = principal.username
    item.checked_at = ctx.clock.now()
    item.check_note = check.note.strip()
    session.add(item)
    await stop_rectification_clock(session, item=item, at=item.checked_at)
    await audit(
        session,
        case_id=item.case_id,
        action=f"rectification_{item.status}",
        actor=principal.username,
        reason=item.check_note,
    )
    return item
