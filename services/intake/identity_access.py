"""Reading a complainant's full identity: opened only for a stated purpose, and every read recorded.

The purpose is one of a list (data: ``shared/data/identity_purposes.json``, or the bureau's own
copy named by ``IDENTITY_PURPOSES_FILE``) and comes with the reader's own words; there is no
default, so every read says why.
"""

from __future__ import annotations

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.intake.identity import Identity, IdentityVault
from services.intake.models import Complaint, IdentityAccess
from shared.audit import audit
from shared.auth import Principal
from shared.errors import FieldProblems

MIN_REASON_CHARS = 2


def check_purpose(*, purposes: tuple[str, ...], purpose: str | None, reason: str | None) -> tuple[str, str]:
    """The purpose and the reason, stripped; 422 naming each that is missing or not allowed."""
    problems: list[tuple[str, str, str]] = []
    chosen = (purpose or "").strip()
    if chosen not in purposes:
        listed = "、".join(purposes)
        problems.append(
            (
                "purpose",
                f"请选择查阅事由（{listed}）"
                if not chosen
                else f"查阅事由“{chosen}”不在可选范围内，可选：{listed}",
                f"purpose must be one of: {', '.join(purposes)}",
            )
        )
    said = (reason or "").strip()
    if len(said) < MIN_REASON_CHARS:
        problems.append(
            (
                "reason",
                f"请填写查阅说明（为何需要查看投诉人身份，至少 {MIN_REASON_CHARS} 个字）",
                f"reason is required: say why, in at least {MIN_REASON_CHARS} characters",
            )
        )
    if problems:
        raise FieldProblems(problems)
    return chosen, said


async def read_identity(
    *,
    session: AsyncSession,
    vault: IdentityVault,
    complaint: Complaint,
    principal: Principal,
    purpose: str,
    reason: str,
) -> Identity | None:
    """The complainant's identity (None if anonymous); the read is recorded in the caller's transaction.

    ``purpose`` and ``reason`` were checked by ``check_purpose``.
    """
    identity = vault.open(complaint.identity_sealed) if complaint.identity_sealed else None
    await record_identity_access(
        session=session, complaint_id=complaint.id, principal=principal, purpose=purpose, reason=reason
    )
    return identity


async def record_identity_access(
    *, session: AsyncSession, complaint_id: str, principal: Principal, purpose: str, reason: str
) -> None:
    session.add(
        IdentityAccess(
            complaint_id=complaint_id,
            accessor=principal.username,
            role=principal.role.value,
            purpose=purpose,
            reason=reason,
        )
    )
    await audit(
        session,
        case_id=complaint_id,
        action="identity_read",
        actor=principal.username,
        reason=f"{purpose}：{reason}",
    )


async def identity_accesses(*, session: AsyncSession, complaint_id: str) -> list[IdentityAccess]:
    rows = await session.exec(
        select(IdentityAccess)
        .where(IdentityAccess.complaint_id == complaint_id)
        .order_by(col(IdentityAccess.id))
    )
    return list(rows)
