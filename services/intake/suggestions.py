"""Recording deputies' suggestions and CPPCC proposals, and finding them again.

Like complaints, every function works inside the caller's transaction; the caller commits.
"""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.intake.accounts import deputy_accounts
from services.intake.models import Suggestion
from services.intake.receipt import CLOCK_SKEW, issue_receipt, too_old
from services.intake.schemas import DeputyIn, SuggestionCreate
from shared.audit import audit
from shared.auth import Principal
from shared.db import utcnow
from shared.errors import FieldProblems, NotFound, conflict
from shared.events import SuggestionReceivedV2
from shared.outbox import record_event
from shared.pagination import Key, Page

# What SuggestionReceived carries of the suggestion as recorded (not the deputy's phone).
RECEIVED_FIELDS = {
    "tracking_code",
    "query_secret_hash",
    "kind",
    "session",
    "number",
    "title",
    "text",
    "deputy_name",
    "deputy_delegation",
    "deputy_account",
    "co_signers",
    "lead_unit",
    "co_units",
    "received_at",
    "complex_matter",
}


async def create_suggestion(
    *,
    session: AsyncSession,
    signing_key: str,
    received_at_max_age: timedelta,
    suggestion_in: SuggestionCreate,
    actor: Principal,
    correlation_id: str | None,
) -> tuple[Suggestion, str]:
    """The new suggestion and its query secret (shown once)."""
    now = utcnow()
    received_at = suggestion_in.received_at or now
    if received_at > now + CLOCK_SKEW:
        raise FieldProblems([("received_at", "收到时间不能晚于当前时间", "received_at is in the future")])
    old = too_old(received_at=received_at, now=now, max_age=received_at_max_age, label="收到时间")
    if old is not None:
        raise FieldProblems([old])
    await _refuse_duplicate_number(session=session, suggestion_in=suggestion_in)
    deputy_account = await _deputy_account(session=session, deputy=suggestion_in.deputy)
    receipt = issue_receipt(prefix="S", received_at=received_at, signing_key=signing_key)
    suggestion = Suggestion(
        tracking_code=receipt.tracking_code,
        query_secret_hash=receipt.query_secret_hash,
        **suggestion_in.model_dump(include={"kind", "session", "number", "title", "text", "lead_unit"}),
        deputy_name=suggestion_in.deputy.name,
        deputy_delegation=suggestion_in.deputy.delegation,
        deputy_account=deputy_account,
        deputy_phone=suggestion_in.deputy.phone,
        co_signers=[s.strip() for s in suggestion_in.co_signers if s.strip()],
        co_units=[u.strip() for u in suggestion_in.co_units if u.strip()],
        received_at=received_at,
        complex_matter=suggestion_in.complex_matter,
        created_by=actor.username,
    )
    session.add(suggestion)
    await session.flush()
    _record_received(session=session, suggestion=suggestion, actor=actor, correlation_id=correlation_id)
    await audit(session, case_id=suggestion.id, action="suggestion_received", actor=actor.username)
    return suggestion, receipt.query_secret


async def _deputy_account(*, session: AsyncSession, deputy: DeputyIn) -> str | None:
    """The account the suggestion belongs to: the one chosen, or the only one of that name.

    Two deputies of one name in one delegation are told apart only by account, so then the
    operator must choose; a deputy without an account yet gets None.
    """
    namesakes = await deputy_accounts(session=session, name=deputy.name, delegation=deputy.delegation)
    if deputy.account is None:
        if len(namesakes) > 1:
            raise FieldProblems(
                [
                    (
                        "deputy.account",
                        f"{deputy.delegation}有 {len(namesakes)} 位名为“{deputy.name}”的代表（委员），请选择代表账号",
                        "several deputies of this name are in this delegation: choose the account",
                    )
                ]
            )
        return namesakes[0].username if namesakes else None
    if deputy.account not in {user.username for user in namesakes}:
        raise FieldProblems(
            [
                (
                    "deputy.account",
                    f"代表账号“{deputy.account}”不存在，或与所填代表姓名、代表团不一致",
                    "no deputy account of this name and delegation has this username",
                )
            ]
        )
    return deputy.account


async def _refuse_duplicate_number(*, session: AsyncSession, suggestion_in: SuggestionCreate) -> None:
    duplicate = (
        await session.exec(
            select(Suggestion.id).where(
                Suggestion.session == suggestion_in.session, Suggestion.number == suggestion_in.number
            )
        )
    ).first()
    if duplicate:
        raise conflict(
            "number",
            f"{suggestion_in.session}第{suggestion_in.number}号已登记，同一届次编号不能重复",
            "this number is already registered in this session",
        )


def _record_received(
    *, session: AsyncSession, suggestion: Suggestion, actor: Principal, correlation_id: str | None
) -> None:
    record_event(
        session,
        SuggestionReceivedV2(
            case_id=suggestion.id,
            correlation_id=correlation_id,
            actor=actor.username,
            **suggestion.model_dump(include=RECEIVED_FIELDS),
        ),
    )


async def find_suggestions(
    *, session: AsyncSession, tracking_code: str | None = None, page: Page
) -> list[Suggestion]:
    """The suggestions found, newest first, a page by keyset (received_at, id), with the total."""
    query = select(Suggestion)
    if tracking_code:
        query = query.where(or_(col(Suggestion.tracking_code) == tracking_code.strip().upper()))
    keys = (Key(col(Suggestion.received_at), descending=True), Key(col(Suggestion.id), descending=True))
    return await page.rows(session, query, keys)


async def get_suggestion(*, session: AsyncSession, suggestion_id: str) -> Suggestion:
    suggestion = await session.get(Suggestion, suggestion_id)
    if suggestion is None:
        raise NotFound("建议不存在")
    return suggestion
