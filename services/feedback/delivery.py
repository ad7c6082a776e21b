"""Sending answers and notices to complainants: SMS through an HTTP gateway, e-mail over SMTP.

Every delivery is a row; the worker started with the service takes due rows,
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

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

import aiosmtplib
import httpx
import structlog
from sqlalchemy import or_
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.feedback.context import DeliveryConfig, FeedbackContext
from services.feedback.models import Delivery
from services.feedback.service import delivery_queued, mark_sent, record_failure
from shared.auth import service_token
from shared.db import is_sqlite, utcnow
from shared.logging import get_logger

log = get_logger(__name__)

WORKER_ACTOR = "service:feedback"
PURPOSES = {"answer": "发送答复", "notice": "发送办理期限延长告知"}


@dataclass(frozen=True)
class Contact:
    anonymous: bool
    phone: str | None = field(default=None, repr=False)
    email: str | None = field(default=None, repr=False)
    has_address: bool = False


@dataclass(frozen=True)
class Attempt:
    sent: bool
    channel: str | None = None
    error: str = ""
    permanent: bool = False


async def fetch_contact(*, ctx: FeedbackContext, case_id: str, purpose: str) -> Contact:
    """The complainant's contact from intake, which records the read like a person's."""
    token = service_token(service="feedback", signing_key=ctx.signing_key)
    async with httpx.AsyncClient(base_url=ctx.intake_url, timeout=ctx.intake_timeout) as client:
        response = await client.get(
            f"/api/v1/complaints/{case_id}/contact",
            params={"purpose": purpose},
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
        async with httpx.AsyncClient(timeout=config.sms_timeout) as client:
            response = await client.post(
                config.sms_gateway_url,
                json={"to": phone, "text": text, "reference": reference},
                headers=headers,
            )
    except httpx.HTTPError as exc:
        return Attempt(sent=False, channel="sms", error=f"短信网关不可达（{type(exc).__name__}）")
    if response.is_success:
        return Attempt(sent=True, channel="sms")
    code = response.status_code
    # 409 from an idempotent gateway: the same key is still being processed; ask again later.
    transient = code >= 500 or code in (408, 409, 425, 429)
    return Attempt(
        sent=False,
        channel="sms",
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
        return Attempt(sent=False, channel="email", error="邮件服务器拒收该收件地址", permanent=True)
    except aiosmtplib.SMTPResponseException as exc:
        permanent = 500 <= exc.code < 600
        return Attempt(sent=False, channel="email", error=f"邮件服务器返回 {exc.code}", permanent=permanent)
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        return Attempt(sent=False, channel="email", error=f"邮件服务器不可达（{type(exc).__name__}）")
    return Attempt(sent=True, channel="email")


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


class DeliveryWorker:
    """Sends due deliveries; one per process, several processes may share a PostgreSQL database."""

    def __init__(self, ctx: FeedbackContext) -> None:
        self.ctx = ctx
        self._wake = asyncio.Event()
        self._session_factory: async_sessionmaker[AsyncSession] | None = None
        self._engine: AsyncEngine | None = None
        self._lock_rows = False

    def bind(self, engine: AsyncEngine, session_factory: async_sessionmaker[AsyncSession]) -> None:
        self._session_factory = session_factory
        self._engine = engine
        # SQLite: one writer and a single connection; row locks do not exist there.
        self._lock_rows = not is_sqlite(str(engine.url))
        delivery_queued.register(engine, self._wake)

    def unbind(self) -> None:
        if self._engine is not None:
            delivery_queued.unregister(self._engine, self._wake)

    def wake(self) -> None:
        self._wake.set()

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        if self._session_factory is None:
            raise RuntimeError("delivery worker used before the service started")
        return self._session_factory

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                handled = await self.process_due()
                failures = 0
            except Exception as exc:
                failures += 1
                handled = 0
                log.warning("delivery pass failed; will retry", error=type(exc).__name__, failures=failures)
                await asyncio.sleep(min(0.5 * 2**failures, 30.0))
            if handled >= self.ctx.delivery.batch_size:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.ctx.delivery.poll_seconds)
            self._wake.clear()

    async def process_due(self) -> int:
        """Lease and attempt one batch of due deliveries; returns how many were attempted."""
        now = utcnow()
        async with self.sessions() as session, session.begin():
            query = (
                select(Delivery)
                .where(
                    Delivery.status == "pending",
                    col(Delivery.next_attempt_at) <= now,
                    or_(col(Delivery.lease_until).is_(None), col(Delivery.lease_until) < now),
                )
                .order_by(col(Delivery.next_attempt_at))
                .limit(self.ctx.delivery.batch_size)
            )
            if self._lock_rows:
                query = query.with_for_update(skip_locked=True)
            rows = list(await session.exec(query))
            for row in rows:
                row.lease_until = now + timedelta(seconds=self.ctx.delivery.lease_seconds)
                session.add(row)
            ids = [row.id for row in rows]
        for delivery_id in ids:
            await self.attempt(delivery_id)
        return len(ids)

    async def attempt(self, delivery_id: str) -> None:
        """One attempt at a delivery whose lease the caller holds."""
        async with self.sessions() as session, session.begin():
            delivery = await session.get(Delivery, delivery_id)
            if delivery is None or delivery.status != "pending":
                return
            case_id, kind, correlation_id = delivery.case_id, delivery.kind, delivery.correlation_id
            subject = delivery.subject or "督察部门告知"
            text, key = delivery.text, delivery.idempotency_key
        with structlog.contextvars.bound_contextvars(case_id=case_id, correlation_id=correlation_id):
            try:
                result = await self._send(
                    case_id=case_id, kind=kind, subject=subject, text=text, key=key, reference=delivery_id
                )
            except Exception as exc:  # a bug here must not leave the row leased and retried forever unseen
                log.error("delivery attempt crashed", delivery_id=delivery_id, error=type(exc).__name__)
                result = Attempt(sent=False, error=f"发送时出错（{type(exc).__name__}）")
            async with self.sessions() as session, session.begin():
                delivery = await session.get(Delivery, delivery_id, with_for_update=self._lock_rows)
                if delivery is None:
                    return
                if result.sent and result.channel:
                    await mark_sent(
                        session, delivery=delivery, channel=result.channel, at=utcnow(), actor=WORKER_ACTOR
                    )
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
            if result.sent:
                log.info("delivery sent", delivery_id=delivery_id, kind=kind, channel=result.channel)

    async def _send(
        self, *, case_id: str, kind: str, subject: str, text: str, key: str, reference: str
    ) -> Attempt:
        config = self.ctx.delivery
        try:
            contact = await fetch_contact(
                ctx=self.ctx, case_id=case_id, purpose=PURPOSES.get(kind, "发送告知")
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
        if config.sms_enabled and contact.phone:
            return await send_sms(config, phone=contact.phone, text=text, reference=reference, key=key)
        if config.email_enabled and contact.email:
            return await send_email(config, address=contact.email, subject=subject, text=text, key=key)
        return no_channel(config, contact)
