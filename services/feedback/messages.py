"""消息记录: what left the system, to whom (masked) and when, for the supervisors.

Every delivery that was sent, complainants' and staff's alike, newest first.  Only the masked
address the sender recorded (``Delivery.sent_to_masked``) is shown: the full phone or e-mail is
never stored here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.feedback.models import CaseView, Delivery, DeliveryStatus
from shared.pagination import Key, Page

KIND_LABELS: dict[str, str] = {
    "answer": "答复",
    "notice": "通知",
    "acceptance": "告知受理",
    "acceptance_notice": "告知受理",
    "staff": "工作提醒",
}
CHANNEL_LABELS: dict[str, str] = {"sms": "短信", "email": "电子邮件", "phone": "电话", "letter": "信函"}
COMPLAINANT = "投诉人/建议人"


@dataclass(frozen=True)
class SentMessage:
    id: str
    case_id: str
    tracking_code: str | None
    kind: str
    channel: str | None
    recipient: str
    sent_to_masked: str | None
    status: str
    sent_at: datetime | None
    created_at: datetime


def recipient_label(delivery: Delivery) -> str:
    """Whom it was for: the staff audience of a staff message, else the complainant (or deputy)."""
    return delivery.recipient or COMPLAINANT


async def sent_messages(*, session: AsyncSession, page: Page) -> list[SentMessage]:
    """Sent deliveries, newest first, each with its matter's tracking code; a page by keyset
    (sent_at, id: a sent delivery always has its time), with the total."""
    query = (
        select(Delivery, CaseView.tracking_code)
        .join(CaseView, col(CaseView.case_id) == col(Delivery.case_id), isouter=True)
        .where(Delivery.status == DeliveryStatus.SENT, col(Delivery.sent_at).is_not(None))
    )
    keys = (Key(col(Delivery.sent_at), descending=True), Key(col(Delivery.id), descending=True))
    # Counted without the join: a left join to the case's view neither adds nor drops a delivery.
    sent = select(Delivery).where(Delivery.status == DeliveryStatus.SENT, col(Delivery.sent_at).is_not(None))
    rows = await page.rows(session, query, keys, counted=sent)
    return [
        SentMessage(
            id=delivery.id,
            case_id=delivery.case_id,
            tracking_code=tracking_code,
            kind=delivery.kind,
            channel=delivery.channel,
            recipient=recipient_label(delivery),
            sent_to_masked=delivery.sent_to_masked,
            status=delivery.status,
            sent_at=delivery.sent_at,
            created_at=delivery.created_at,
        )
        for delivery, tracking_code in rows
    ]
