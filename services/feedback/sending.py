"""Sending answers and notices to complainants: SMS through an HTTP gateway, e-mail over SMTP.

Every delivery is a row; the service's background worker (``DeliverySender.step``
under ``shared.worker.BackgroundWorker``, registered in ``main``) takes due rows,
leases them (so another instance, or the request that created one, is not
sending the same row), reads the contact from intake, sends, and records the
outcome.  A failure is retried with a doubling wait until the configured
number of attempts, then the row is ``failed`` and waits for a person.  No
transaction is held while talking to intake, the gateway or the SMTP server.

The contact is read afresh for each attempt and kept only in local variables:
it never reaches feedback's database, and errors are recorded in words that
do not quote it.
"""

from __future__ import annotations

import functools
import ssl
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

import aiosmtplib
import httpx
import structlog
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from services.feedback.clocks import ACCEPTANCE_KEY_PREFIX
from services.feedback.context import DeliveryConfig, FeedbackContext
from services.feedback.deliveries import WORKER_ACTOR, cancel_delivery, mark_sent, record_failure
from services.feedback.models import Channel, Delivery, DeliveryKind, DeliveryStatus
from shared.auth import BUREAU_CONTACT_AUDIENCE, CONTACT_AUDIENCE, service_token
from shared.db import utcnow
from shared.logging import get_logger
from shared.masking import mask_address
from shared.metrics import count_delivery
from shared.worker import lease_rows

log = get_logger(__name__)

# Why feedback reads a contact: the purpose from intake's list (shared/data/identity_purposes.json)
# and, as the reason, what it is sending.
CONTACT_PURPOSE = "答复送达"
REASONS: dict[str, str] = {DeliveryKind.ANSWER: "发送答复", DeliveryKind.NOTICE: "发送办理期限延长告知"}
ACCEPTANCE_REASON = "发送受理告知"
# A staff message's recipient (notifications' audiences) whose contact is that of the city bureau.
CITY_SUPERVISORS = "role:supervisor"


@dataclass(frozen=True)
class Contact:
    anonymous: bool
    phone: str | None = field(default=None, repr=False)
    email: str | None = field(default=None, repr=False)
    has_address: bool = False


@dataclass(frozen=True)
class Attempt:
    sent: bool
    channel: Channel | None = None
    error: str = ""
    permanent: bool = False
    # Where it went, masked (138****0001, wa***@example.cn): kept on the delivery for the message log.
    sent_to: str | None = None
    # Nobody to send it to (a bureau with no phone or e-mail on file): cancelled, not failed.
    cancel: bool = False


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The TLS settings every client of this module shares (``SSL_CERT_FILE`` as at first use).

    A client made without one builds its own, reading the whole CA bundle: measured at about
    40 ms of CPU, more than the rest of a delivery attempt, and an attempt makes one or two.
    """
    return httpx.create_ssl_context()


async def fetch_contact(*, ctx: FeedbackContext, case_id: str, reason: str) -> Contact:
    """The complainant's contact from intake, which records the read like a person's."""
    if ctx.caller_signer is None:
        raise RuntimeError("CALLER_PRIVATE_KEY is not set: feedback cannot ask intake for a contact")
    # Signed with feedback's own key, good for this call only and for a minute.
    token = service_token(service="feedback", signer=ctx.caller_signer, audience=CONTACT_AUDIENCE)
    async with httpx.AsyncClient(
        base_url=ctx.intake_url, timeout=ctx.intake_timeout, verify=tls_context()
    ) as client:
        response = await client.get(
            f"/api/v1/complaints/{case_id}/contact",
            params={"purpose": CONTACT_PURPOSE, "reason": reason},
            headers={"Authorization": f"Bearer {token}"},
        )
        response.raise_for_status()
        data: dict[str, Any] = response.json()
    return Contact(
        anonymous=bool(data.get("anonymous")),
        phone=str(data["phone"]) if data.get("phone") else None,
        email=str(data["email"]) if data.get("email") else None,
        has_address=bool(data.get("address")),
    )


async def send_sms(config: DeliveryConfig, *, phone: str, text: str, reference: str, key: str) -> Attempt:
    assert config.sms_gateway_url
    headers = {"Idempotency-Key": key}
    if config.sms_gateway_token:
        headers["Authorization"] = f"Bearer {config.sms_gateway_token}"
    try:
        async with httpx.AsyncClient(timeout=config.sms_timeout, verify=tls_context()) as client:
            response = await client.post(
                config.sms_gateway_url,
                json={"to": phone, "text": text, "reference": reference},
                headers=headers,
            )
    except httpx.HTTPError as exc:
        return Attempt(sent=False, channel=Channel.SMS, error=f"短信网关不可达（{type(exc).__name__}）")
    if response.is_success:
        return Attempt(sent=True, channel=Channel.SMS, sent_to=mask_address(phone))
    code = response.status_code
    # 409 from an idempotent gateway: the same key is still being processed; ask again later.
    transient = code >= 500 or code in (408, 409, 425, 429)
    return Attempt(
        sent=False,
        channel=Channel.SMS,
        error=f"短信网关返回 HTTP {code}" + ("" if transient else "（拒绝发送，请核对号码或网关配置）"),
        permanent=not transient,
    )


async def send_email(config: DeliveryConfig, *, address: str, subject: str, text: str, key: str) -> Attempt:
    assert config.smtp_host and config.smtp_from
    message = EmailMessage()
    message["From"] = config.smtp_from
    message["To"] = address
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=True)
    # SMTP has no idempotency key; a stable Message-ID lets a mailbox drop a copy sent twice after a lost reply.
    domain = config.smtp_from.rsplit("@", 1)[-1].strip(">") if "@" in config.smtp_from else "localhost"
    message["Message-ID"] = f"<{key}@{domain}>"
    message.set_content(text)
    try:
        await aiosmtplib.send(
            message,
            hostname=config.smtp_host,
            port=config.smtp_port,
            username=config.smtp_username,
            password=config.smtp_password,
            use_tls=config.smtp_ssl,
            start_tls=False if config.smtp_ssl else config.smtp_starttls,
            timeout=config.smtp_timeout,
        )
    except aiosmtplib.SMTPRecipientsRefused:
        return Attempt(sent=False, channel=Channel.EMAIL, error="邮件服务器拒收该收件地址", permanent=True)
    except aiosmtplib.SMTPResponseException as exc:
        permanent = 500 <= exc.code < 600
        return Attempt(
            sent=False, channel=Channel.EMAIL, error=f"邮件服务器返回 {exc.code}", permanent=permanent
        )
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        return Attempt(sent=False, channel=Channel.EMAIL, error=f"邮件服务器不可达（{type(exc).__name__}）")
    return Attempt(sent=True, channel=Channel.EMAIL, sent_to=mask_address(address))


def no_channel(config: DeliveryConfig, contact: Contact) -> Attempt:
    """Nothing can be sent automatically: say why, and what a person should do instead."""
    missing = []
    if contact.phone and not config.sms_enabled:
        missing.append("未配置短信网关")
    if contact.email and not config.email_enabled:
        missing.append("未配置邮件服务器")
    if not contact.phone and not contact.email:
        missing.append("投诉人未留手机号码或电子邮箱")
    if contact.phone:
        hint = "请电话告知"
    elif contact.has_address:
        hint = "请信函告知"
    else:
        hint = "请人工联系投诉人"
    return Attempt(sent=False, error=f"无法自动送达（{'，'.join(missing)}），{hint}", permanent=True)


@dataclass(frozen=True)
class Message:
    """What one attempt sends: read from the row in a short transaction, sent outside any."""

    case_id: str
    kind: str
    subject: str
    text: str
    key: str
    reference: str
    # A staff message's audience (leader:<county code>, role:supervisor); None: the complainant.
    recipient: str | None = None


async def fetch_bureau_contact(*, ctx: FeedbackContext, code: str) -> Contact:
    """A bureau leader's phone and e-mail from routing's organisation data (the city's: the supervisors)."""
    if ctx.caller_signer is None:
        raise RuntimeError("CALLER_PRIVATE_KEY is not set: feedback cannot ask routing for a contact")
    token = service_token(service="feedback", signer=ctx.caller_signer, audience=BUREAU_CONTACT_AUDIENCE)
    async with httpx.AsyncClient(
        base_url=ctx.routing_url, timeout=ctx.intake_timeout, verify=tls_context()
    ) as client:
        response = await client.get(
            f"/internal/bureaus/{code}/contact", headers={"Authorization": f"Bearer {token}"}
        )
        response.raise_for_status()
        data: dict[str, Any] = response.json()
    return Contact(
        anonymous=False,
        phone=str(data["phone"]) if data.get("phone") else None,
        email=str(data["email"]) if data.get("email") else None,
    )


async def send_to_staff(ctx: FeedbackContext, message: Message) -> Attempt:
    """A staff message: to the contact routing keeps for the recipient's bureau; none on file, cancelled."""
    recipient = message.recipient or ""
    code = ctx.city_code if recipient == CITY_SUPERVISORS else recipient.partition(":")[2]
    if not code:
        return Attempt(sent=False, error="工作提醒没有可识别的接收单位", cancel=True)
    try:
        contact = await fetch_bureau_contact(ctx=ctx, code=code)
    except httpx.HTTPStatusError as exc:
        status = exc.response.status_code
        if status == 404:
            return Attempt(sent=False, error="组织机构中找不到该单位的联系方式", cancel=True)
        return Attempt(sent=False, error=f"读取单位联系方式失败（分派系统返回 HTTP {status}）")
    except httpx.HTTPError as exc:
        return Attempt(sent=False, error=f"无法连接分派系统读取单位联系方式（{type(exc).__name__}）")
    if not contact.phone and not contact.email:
        return Attempt(sent=False, error="该单位未登记手机号码或电子邮箱，无人可发送", cancel=True)
    config = ctx.delivery
    if not (config.sms_enabled and contact.phone) and not (config.email_enabled and contact.email):
        # The notification is in the person's 待办 all the same: nothing for anyone to resend by hand.
        return Attempt(
            sent=False, error="未配置可用的短信网关或邮件服务器，工作提醒仅在系统内送达", cancel=True
        )
    return await _send_by_channel(config, contact, message)


async def _send_by_channel(config: DeliveryConfig, contact: Contact, message: Message) -> Attempt:
    if config.sms_enabled and contact.phone:
        return await send_sms(
            config, phone=contact.phone, text=message.text, reference=message.reference, key=message.key
        )
    if config.email_enabled and contact.email:
        return await send_email(
            config, address=contact.email, subject=message.subject, text=message.text, key=message.key
        )
    return no_channel(config, contact)


async def send(ctx: FeedbackContext, message: Message) -> Attempt:
    """Read the contact afresh and send by the first channel both sides have; never raises for a refusal."""
    if message.kind == DeliveryKind.STAFF:
        return await send_to_staff(ctx, message)
    try:
        contact = await fetch_contact(
            ctx=ctx,
            case_id=message.case_id,
            # The acceptance notice (告知受理) is a notice of its own, told apart by its key.
            reason=ACCEPTANCE_REASON
            if message.key.startswith(ACCEPTANCE_KEY_PREFIX)
            else REASONS.get(message.kind, "发送告知"),
        )
    except httpx.HTTPStatusError as exc:
        code = exc.response.status_code
        if code == 404:
            return Attempt(sent=False, error="受理系统中找不到该投诉", permanent=True)
        return Attempt(sent=False, error=f"读取联系方式失败（受理系统返回 HTTP {code}）")
    except httpx.HTTPError as exc:
        return Attempt(sent=False, error=f"无法连接受理系统读取联系方式（{type(exc).__name__}）")
    if contact.anonymous:
        return Attempt(sent=False, error="匿名投诉，无法送达", permanent=True)
    return await _send_by_channel(ctx.delivery, contact, message)


class DeliverySender:
    """Attempts deliveries: a bounded batch of due ones per step of the background worker, or one at once.

    One per process; several processes may share a PostgreSQL database, where the
    due rows are taken with ``SKIP LOCKED`` and leased before anything is sent.
    """

    def __init__(
        self, *, ctx: FeedbackContext, sessions: async_sessionmaker[AsyncSession], lock_rows: bool
    ) -> None:
        self.ctx = ctx
        self.sessions = sessions
        # SQLite: one writer and a single connection; row locks do not exist there.
        self.lock_rows = lock_rows

    async def step(self) -> bool:
        """Attempt one batch of due deliveries; True when a full batch was taken (more may be due)."""
        ids = await self.lease_due()
        for delivery_id in ids:
            await self.attempt(delivery_id)
        return len(ids) >= self.ctx.delivery.batch_size

    async def lease_due(self) -> list[str]:
        """Lease up to one batch of due deliveries, so that no other sender takes them meanwhile."""
        now = utcnow()
        rows = await lease_rows(
            self.sessions,
            Delivery,
            Delivery.status == DeliveryStatus.PENDING,
            col(Delivery.next_attempt_at) <= now,
            order_by=col(Delivery.next_attempt_at),
            limit=self.ctx.delivery.batch_size,
            lease=timedelta(seconds=self.ctx.delivery.lease_seconds),
            now=now,
            lock_rows=self.lock_rows,
        )
        return [row.id for row in rows]

    async def attempt(self, delivery_id: str) -> None:
        """One attempt at a delivery whose lease the caller holds."""
        async with self.sessions() as session, session.begin():
            delivery = await session.get(Delivery, delivery_id)
            if delivery is None or delivery.status != DeliveryStatus.PENDING:
                return
            correlation_id = delivery.correlation_id
            message = Message(
                case_id=delivery.case_id,
                kind=delivery.kind,
                subject=delivery.subject or "督察部门告知",
                text=delivery.text,
                key=delivery.idempotency_key,
                reference=delivery_id,
                recipient=delivery.recipient,
            )
        with structlog.contextvars.bound_contextvars(case_id=message.case_id, correlation_id=correlation_id):
            try:
                result = await send(self.ctx, message)
            except Exception as exc:  # a bug here must not leave the row leased and retried forever unseen
                log.error("delivery attempt crashed", delivery_id=delivery_id, error=type(exc).__name__)
                result = Attempt(sent=False, error=f"发送时出错（{type(exc).__name__}）")
            await self._record(delivery_id, result)
            count_delivery(channel=result.channel, sent=result.sent, permanent=result.permanent)
            if result.sent:
                log.info("delivery sent", delivery_id=delivery_id, kind=message.kind, channel=result.channel)

    async def _record(self, delivery_id: str, result: Attempt) -> None:
        async with self.sessions() as session, session.begin():
            delivery = await session.get(Delivery, delivery_id, with_for_update=self.lock_rows)
            if delivery is None:
                return
            if result.sent and result.channel:
                delivery.sent_to_masked = result.sent_to
                await mark_sent(
                    session, delivery=delivery, channel=result.channel, at=utcnow(), actor=WORKER_ACTOR
                )
            elif result.cancel:
                await cancel_delivery(session, delivery=delivery, reason=result.error, at=utcnow())
            else:
                await record_failure(
                    session,
                    ctx=self.ctx,
                    delivery=delivery,
                    channel=result.channel,
                    error=result.error,
                    permanent=result.permanent,
                    at=utcnow(),
                )
