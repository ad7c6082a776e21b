"""Moving a matter filed as the wrong kind to the right track.

A complaint that is really a deputy's suggestion (or the other way round) is recorded anew on
the right track and the old matter is marked reclassified; a citizen's suggestion leaves the
system, passed on to the unit named.  The reason is recorded either way.
"""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from services.intake.complaints import create_complaint
from services.intake.context import IntakeContext
from services.intake.models import CLOSED_STATUSES, CaseStatus, Complaint, Suggestion
from services.intake.schemas import ReclassifyIn, ReclassifyOut
from services.intake.suggestions import create_suggestion
from shared.audit import record_audited
from shared.auth import Principal
from shared.errors import FieldProblems, conflict
from shared.events import MatterReclassified
from shared.states import CaseKind, ReclassifyTarget


async def reclassify(
    *,
    session: AsyncSession,
    ctx: IntakeContext,
    matter: Complaint | Suggestion,
    reclassify_in: ReclassifyIn,
    actor: Principal,
    correlation_id: str | None,
) -> ReclassifyOut:
    from_kind = CaseKind.COMPLAINT if isinstance(matter, Complaint) else CaseKind.SUGGESTION
    _refuse_if_not_movable(matter=matter, from_kind=from_kind, to_kind=reclassify_in.to_kind)
    out = ReclassifyOut(id=matter.id, status=CaseStatus.RECLASSIFIED, to_kind=reclassify_in.to_kind)
    await _open_on_new_track(
        session=session,
        ctx=ctx,
        target=ReclassifyTarget(reclassify_in.to_kind),
        out=out,
        reclassify_in=reclassify_in,
        actor=actor,
        correlation_id=correlation_id,
    )
    matter.status = CaseStatus.RECLASSIFIED
    session.add(matter)
    await record_audited(
        session,
        MatterReclassified(
            case_id=matter.id,
            correlation_id=correlation_id,
            actor=actor.username,
            from_kind=from_kind,
            to_kind=reclassify_in.to_kind,
            new_case_id=out.new_case_id,
            forwarded_to=(reclassify_in.forwarded_to or "").strip() or None,
            reason=reclassify_in.reason.strip(),
        ),
        action="reclassified",
        reason=reclassify_in.reason,
        detail={
            "to_kind": reclassify_in.to_kind,
            "new_case_id": out.new_case_id,
            "forwarded_to": reclassify_in.forwarded_to,
        },
    )
    return out


def _refuse_if_not_movable(*, matter: Complaint | Suggestion, from_kind: CaseKind, to_kind: str) -> None:
    if matter.status in CLOSED_STATUSES:
        raise conflict(
            "status", "已答复、已结案或已转类的事项不能再转类", "this matter can no longer be reclassified"
        )
    if to_kind == from_kind:
        raise FieldProblems([("to_kind", "目标类别与原类别相同", "the matter already is of that kind")])
    if from_kind == CaseKind.SUGGESTION and to_kind == ReclassifyTarget.CITIZEN_SUGGESTION:
        raise FieldProblems(
            [
                (
                    "to_kind",
                    "代表建议不能转为群众建议",
                    "a deputy suggestion cannot become a citizen suggestion",
                )
            ]
        )


async def _open_on_new_track(
    *,
    session: AsyncSession,
    ctx: IntakeContext,
    target: ReclassifyTarget,
    out: ReclassifyOut,
    reclassify_in: ReclassifyIn,
    actor: Principal,
    correlation_id: str | None,
) -> None:
    """Record the matter anew as a suggestion or a complaint, and say so in ``out``."""
    if target == ReclassifyTarget.SUGGESTION:
        assert reclassify_in.suggestion is not None
        suggestion, secret = await create_suggestion(
            session=session,
            signing_key=ctx.signing_key,
            received_at_max_age=ctx.received_at_max_age,
            suggestion_in=reclassify_in.suggestion,
            actor=actor,
            correlation_id=correlation_id,
        )
        suggestion.reclassified_from = out.id
        out.new_case_id, out.tracking_code, out.query_secret = suggestion.id, suggestion.tracking_code, secret
    elif target == ReclassifyTarget.COMPLAINT:
        assert reclassify_in.complaint is not None
        created = await create_complaint(
            session=session,
            ctx=ctx,
            complaint_in=reclassify_in.complaint,
            actor=actor,
            correlation_id=correlation_id,
        )
        out.new_case_id, out.tracking_code, out.query_secret = (
            created.complaint.id,
            created.complaint.tracking_code,
            created.query_secret,
        )
