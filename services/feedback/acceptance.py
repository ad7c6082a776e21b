"""The acceptance notice (告知受理) to a named complainant: queued once, sent by the delivery worker.

It is queued when the task is claimed (``TaskClaimed``), or at the latest when verification's
``acceptance_notice`` clock takes a ladder step.  The text is a template (templates/
acceptance_notice.txt) with the tracking code and nothing else of the person.  When nothing can
be sent automatically (no phone, no e-mail, no gateway) the delivery fails over to a person:
the operators get an ``acceptance_notice`` item to phone or write and record it.  Once it is
sent or recorded, ``AcceptanceNoticeDelivered`` stops the clock (``clocks.acceptance_notice_sent``).
Anonymous complaints get no notice and have no such clock.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from pathlib import Path

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.feedback import deliveries, notifications
from services.feedback.cases import local_date
from services.feedback.clocks import acceptance_item_key, acceptance_key, is_acceptance_notice
from services.feedback.context import FeedbackContext
from services.feedback.models import CaseView, Delivery, DeliveryKind, DeliveryStatus, NotificationKind
from shared.audit import audit
from shared.states import CaseKind
from shared.workcalendar import WorkCalendar

TEMPLATE_FILE = Path(__file__).resolve().parent / "templates" / "acceptance_notice.txt"


@lru_cache(maxsize=1)
def _template() -> str:
    return TEMPLATE_FILE.read_text(encoding="utf-8")


def notice_text(*, ctx: FeedbackContext, case: CaseView) -> str:
    return (
        _template()
        .format(
            received_date=local_date(case.received_at, ctx),
            tracking_code=case.tracking_code,
            issuing_unit=ctx.issuing_unit,
        )
        .strip()
    )


def needs_notice(case: CaseView) -> bool:
    return case.case_kind == CaseKind.COMPLAINT and not case.anonymous


async def queue_notice(
    *, session: AsyncSession, ctx: FeedbackContext, case: CaseView, why: str, correlation_id: str | None
) -> Delivery | None:
    """Queue the notice once per matter; None for an anonymous complaint or when it was queued before."""
    if not needs_notice(case):
        return None
    key = acceptance_key(case.case_id)
    if (await session.exec(select(Delivery.id).where(Delivery.idempotency_key == key))).first() is not None:
        return None
    delivery = deliveries.new_delivery(
        session,
        case_id=case.case_id,
        kind=DeliveryKind.NOTICE,
        answer_id=None,
        subject=f"投诉受理告知（查询码：{case.tracking_code}）",
        text=notice_text(ctx=ctx, case=case),
        correlation_id=correlation_id,
    )
    delivery.idempotency_key = key
    await audit(
        session,
        case_id=case.case_id,
        action="acceptance_notice_queued",
        actor="service:feedback",
        reason=why,
        detail={"delivery_id": delivery.id},
    )
    return delivery


async def notice_undeliverable(
    *, session: AsyncSession, delivery: Delivery, tracking_code: str, at: datetime, calendar: WorkCalendar
) -> None:
    """The acceptance notice could not go automatically: the operators phone or write, and record it."""
    if not is_acceptance_notice(delivery) or delivery.status != DeliveryStatus.FAILED:
        return
    await notifications.notify(
        session=session,
        kind=NotificationKind.ACCEPTANCE_NOTICE,
        audiences=[notifications.OPERATORS],
        dedupe_key=acceptance_item_key(delivery.case_id),
        case_id=delivery.case_id,
        title=f"【告知受理】{tracking_code} 受理告知无法自动发送，请电话或信函告知投诉人并登记",
        link="feedback:/deliveries",
        at=at,
        calendar=calendar,
        tracking_code=tracking_code,
        send_message=False,
        correlation_id=delivery.correlation_id,
    )
