"""Stand-ins for the outside world feedback talks to, flow helpers, and unit tests of pure parts.

The stand-ins are real servers on free ports: an HTTP SMS gateway (FastAPI
under uvicorn, in the test process) that honours ``Idempotency-Key`` like a
real gateway and can be told to fail, and an SMTP server (aiosmtpd) that keeps
what it receives.  The feedback test modules start a system pointed at them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email
import io
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import docx
import nats
import pytest
from aiosmtpd.controller import Controller
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import update
from sqlmodel import col

from services.feedback.context import FeedbackContext
from services.feedback.letters import LetterContent, render_docx
from services.feedback.models import Answer
from services.feedback.ratings import review_due
from services.feedback.settings import FeedbackSettings
from shared.db import create_engine
from shared.events import Event
from shared.outbox import HEADER_EVENT_TYPE, HEADER_EVENT_VERSION, HEADER_MSG_ID
from tests import fixtures
from tests.databases import Databases
from tests.support import (
    SERVICE_NAMES,
    TEST_SECRET_KEY,
    InProcessServices,
    System,
    allocate,
    base_environment,
    eventually,
    free_port,
    reset_stream,
    serving,
)
from tests.test_pipeline import current_assignment, task_for, wait_status

# The acceptance notice (告知受理) goes to every named complainant when the task is claimed: the
# helpers below leave it out unless asked, so that a test of the answer sees the answer alone.
ACCEPTANCE_KEY = "sv-acceptance-"
ACCEPTANCE_SUBJECT = "投诉受理告知"
ACCEPTANCE_REASON = "发送受理告知"
# Staff messages (a ladder step to a bureau's leader or the supervisors) do not use them up either.
STAFF_KEY = "sv-staff-"


# --- The SMS gateway stand-in --------------------------------------------------------------------


@dataclass
class SmsGateway:
    """Accepts POST /sms; a repeated Idempotency-Key is acknowledged but not sent again."""

    url: str = ""
    posts: list[dict[str, Any]] = field(default_factory=list)
    sent: dict[str, dict[str, Any]] = field(default_factory=dict)
    fail_next: int = 0
    fail_always: bool = False

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/sms")
        async def sms(request: Request) -> JSONResponse:
            body = await request.json()
            key = request.headers.get("Idempotency-Key")
            self.posts.append({**body, "key": key})
            # A test's planned failures are for the answer: the acceptance notice sent at the
            # claim (告知受理) does not use them up.
            notice = str(key).startswith((ACCEPTANCE_KEY, STAFF_KEY))
            if self.fail_always or (self.fail_next > 0 and not notice):
                self.fail_next = max(self.fail_next - 1, 0)
                return JSONResponse(status_code=503, content={"error": "unavailable"})
            if key is None:
                return JSONResponse(status_code=400, content={"error": "Idempotency-Key required"})
            if key in self.sent:
                return JSONResponse(status_code=200, content={"id": key, "duplicate": True})
            self.sent[key] = body
            return JSONResponse(status_code=200, content={"id": key})

        return app

    def posts_to(self, phone: str, *, notices: bool = False) -> list[dict[str, Any]]:
        """What was posted for ``phone``; the acceptance notice (告知受理) only with ``notices``."""
        return [
            p
            for p in self.posts
            if p.get("to") == phone and (notices or not str(p.get("key")).startswith(ACCEPTANCE_KEY))
        ]

    def sent_to(self, phone: str, *, notices: bool = False) -> list[dict[str, Any]]:
        return [
            m
            for key, m in self.sent.items()
            if m.get("to") == phone and (notices or not key.startswith(ACCEPTANCE_KEY))
        ]


@contextlib.asynccontextmanager
async def running_gateway() -> AsyncIterator[SmsGateway]:
    gateway = SmsGateway()
    async with serving(gateway.app(), name="sms-gateway") as port:
        gateway.url = f"http://127.0.0.1:{port}/sms"
        yield gateway


# --- The SMTP server stand-in --------------------------------------------------------------------


@dataclass
class Mailbox:
    host: str = "127.0.0.1"
    port: int = 0
    messages: list[tuple[list[str], EmailMessage]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        message = email.message_from_bytes(envelope.content, policy=default_policy)
        assert isinstance(message, EmailMessage)
        self.messages.append((list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"

    def to(self, address: str, *, notices: bool = False) -> list[EmailMessage]:
        """The mail to ``address``; the acceptance notice (告知受理) only with ``notices``."""
        return [
            m
            for rcpts, m in self.messages
            if address in rcpts
            and (notices or not str(m["Message-ID"]).strip().startswith(f"<{ACCEPTANCE_KEY}"))
        ]


@contextlib.contextmanager
def running_mailbox() -> Iterator[Mailbox]:
    mailbox = Mailbox(port=free_port())
    controller = Controller(mailbox, hostname=mailbox.host, port=mailbox.port)
    controller.start()
    try:
        yield mailbox
    finally:
        controller.stop()


# --- A system pointed at them --------------------------------------------------------------------


def outside_world_env(*, gateway: SmsGateway | None, mailbox: Mailbox | None) -> dict[str, str]:
    env = {
        # Quick retries so a test sees three attempts in about a second.
        "DELIVERY_MAX_ATTEMPTS": "3",
        "DELIVERY_RETRY_BASE_SECONDS": "0.2",
        "DELIVERY_RETRY_MAX_SECONDS": "0.5",
        "DELIVERY_POLL_SECONDS": "0.1",
        "LETTER_CONTACT_NAME": "督察支队综合科",
        "LETTER_CONTACT_PHONE": "0394-8000000",
        # The tests poll the public query far faster than a person; the limiter has its own module.
        "PUBLIC_RATE_PER_ADDRESS": "0",
        "PUBLIC_RATE_PER_CODE": "0",
    }
    if gateway is not None:
        env["SMS_GATEWAY_URL"] = gateway.url
    if mailbox is not None:
        env |= {
            "SMTP_HOST": mailbox.host,
            "SMTP_PORT": str(mailbox.port),
            "SMTP_FROM": "dczd@gaj.zhoukou.example.cn",
            "SMTP_STARTTLS": "false",
        }
    return env


@dataclass
class RestartableSystem(System):
    """``running_system``'s system, plus the means to stop and start one service on its database."""

    services: InProcessServices | None = None

    async def stop(self, name: str) -> None:
        assert self.services is not None
        await self.services.stop(name)

    async def start(self, name: str) -> None:
        assert self.services is not None
        await self.services.start(name, self.env)


@contextlib.asynccontextmanager
async def feedback_system(
    *, backend: str, root: Path, nats_url: str, env: dict[str, str]
) -> AsyncIterator[RestartableSystem]:
    # running_system with a handle on the services kept, so a test can restart feedback.
    await reset_stream(nats_url, "SUPERVISION")
    databases = Databases(backend, root)
    ports, urls = allocate()
    db_urls = {name: await databases.url_for(name) for name in SERVICE_NAMES}
    full_env = base_environment(nats_url=nats_url, urls=urls, db_urls=db_urls, ports=ports) | env
    services = InProcessServices()
    system = RestartableSystem(urls=urls, env=full_env, nats_url=nats_url, services=services)
    try:
        for name in SERVICE_NAMES:
            await services.start(name, full_env)
        yield system
    finally:
        await system.close()
        await services.stop_all()
        await databases.drop_all()


def gateway_system_fixtures(name: str) -> tuple[Any, Any]:
    """A module's ``gateway`` (an SMS gateway stand-in) and ``system`` (its own, sending through it).

    In a test module: ``gateway, system = gateway_system_fixtures("repeats")``.
    """

    @pytest.fixture(scope="module")
    async def gateway() -> AsyncIterator[SmsGateway]:
        async with running_gateway() as running:
            yield running

    @pytest.fixture(scope="module")
    async def system(
        backend: str, nats_server: Any, tmp_path_factory: pytest.TempPathFactory, gateway: SmsGateway
    ) -> AsyncIterator[RestartableSystem]:
        async with feedback_system(
            backend=backend,
            root=tmp_path_factory.mktemp(f"{name}-{backend}"),
            nats_url=nats_server.url,
            env=outside_world_env(gateway=gateway, mailbox=None),
        ) as running:
            yield running

    return gateway, system


# --- Flow helpers --------------------------------------------------------------------------------


async def create(system: System, **overrides: Any) -> dict[str, Any]:
    response = await system.call(
        "intake", "POST", "/api/v1/complaints", as_user="operator1", json=fixtures.complaint(**overrides)
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def conclude_as(
    system: System,
    case_id: str,
    inspector: str,
    *,
    outcome: str = "partly_substantiated",
    summary: str = "经调取执法记录仪视频并询问在场人员，民警言语不文明属实，已对其批评教育。",
    classification: str | None = None,
) -> dict[str, Any]:
    task = await task_for(system, case_id, inspector)
    claimed = await system.call(
        "verification", "POST", f"/api/v1/tasks/{task['id']}/claim", as_user=inspector
    )
    assert claimed.status_code == 200, claimed.text
    body: dict[str, Any] = {"outcome": outcome, "summary": summary}
    if classification:
        body["classification"] = classification
    finding = await system.call(
        "verification", "POST", f"/api/v1/tasks/{task['id']}/finding", as_user=inspector, json=body
    )
    assert finding.status_code == 200, finding.text
    if task.get("review_required") and task.get("review_team_code"):
        # A reopened matter is cross-checked by another team before it counts as concluded.
        reviewed = await system.call(
            "verification",
            "POST",
            f"/api/v1/tasks/{task['id']}/review",
            as_user=f"inspector-{task['review_team_code']}",
            json={"decision": "confirm", "reasons": ["核查充分"]},
        )
        assert reviewed.status_code == 200, reviewed.text
    return task


async def pending_answer(system: System, case_id: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        response = await system.call(
            "feedback", "GET", "/api/v1/answers", as_user="supervisor1", params={"case_id": case_id}
        )
        assert response.status_code == 200, response.text
        pending = [a for a in response.json() if a["status"] == "pending_approval"]
        return pending[-1] if pending else None

    return dict(await eventually(probe, what="answer draft"))


async def approve(system: System, answer_id: str) -> dict[str, Any]:
    response = await system.call(
        "feedback", "POST", f"/api/v1/answers/{answer_id}/approve", as_user="supervisor1"
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def concluded_complaint(system: System, **overrides: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A complaint handled by its first team, with the answer drafted and waiting for approval."""
    created = await create(system, **overrides)
    assignment = await current_assignment(system, created["id"])
    await conclude_as(system, created["id"], f"inspector-{assignment['team_code']}")
    await wait_status(system, created, "concluded")
    return created, await pending_answer(system, created["id"])


async def answered_complaint(system: System, **overrides: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    created, answer = await concluded_complaint(system, **overrides)
    approved = await approve(system, answer["id"])
    assert approved["status"] == "delivered"
    return created, approved


async def deliveries(
    system: System, case_id: str, *, notices: bool = False, **params: str
) -> list[dict[str, Any]]:
    """A matter's deliveries to its complainant, newest first; the acceptance notice (告知受理) and
    the staff messages about the matter only with ``notices``."""
    response = await system.call(
        "feedback", "GET", "/api/v1/deliveries", as_user="operator1", params={"case_id": case_id, **params}
    )
    assert response.status_code == 200, response.text
    return [
        d
        for d in response.json()
        if notices or not ((d["subject"] or "").startswith(ACCEPTANCE_SUBJECT) or d["kind"] == "staff")
    ]


async def delivery_in(system: System, case_id: str, status: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        found = await deliveries(system, case_id)
        return found[0] if found and found[0]["status"] == status else None

    return dict(await eventually(probe, what=f"delivery {status}"))


async def identity_accessors(system: System, case_id: str) -> list[str]:
    response = await system.call(
        "intake", "GET", f"/api/v1/complaints/{case_id}/identity-accesses", as_user="supervisor1"
    )
    assert response.status_code == 200, response.text
    # The acceptance notice's read of the contact has its own reason and is not counted here.
    return [a["accessor"] for a in response.json() if a.get("reason") != ACCEPTANCE_REASON]


async def intake_status(
    system: System, case_id: str, status: str, path: str = "complaints"
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        response = await system.call("intake", "GET", f"/api/v1/{path}/{case_id}", as_user="supervisor1")
        return (
            response.json() if response.status_code == 200 and response.json()["status"] == status else None
        )

    return dict(await eventually(probe, what=f"intake status {status}"))


async def publish_event(system: System, event_: Event) -> None:
    """Put an event on the real bus, as the service that owns it would."""
    nc = await nats.connect(system.nats_url)
    try:
        await nc.jetstream().publish(
            event_.subject(),
            event_.model_dump_json().encode(),
            headers={
                HEADER_MSG_ID: event_.event_id,
                HEADER_EVENT_TYPE: event_.event_type,
                HEADER_EVENT_VERSION: str(event_.version),
            },
        )
    finally:
        await nc.drain()


async def set_answer_served_at(system: System, answer_id: str, served_at: datetime) -> None:
    """Move the moment the answer reached the person, as if it had been weeks ago."""
    engine = create_engine(system.env["FEEDBACK_DATABASE_URL"])
    try:
        async with engine.begin() as conn:
            result = await conn.execute(
                update(Answer).where(col(Answer.id) == answer_id).values(served_at=served_at)
            )
            assert result.rowcount == 1
    finally:
        await engine.dispose()


def docx_paragraphs(content: bytes) -> list[str]:
    return [p.text for p in docx.Document(io.BytesIO(content)).paragraphs if p.text.strip()]


# --- Unit tests of the pure parts ----------------------------------------------------------------


def test_review_window_is_30_natural_days_and_a_rest_day_moves_to_the_next_working_day() -> None:
    ctx = FeedbackContext.from_settings(FeedbackSettings(secret_key=TEST_SECRET_KEY))

    def due_for(served_local: date) -> date:
        served = datetime(served_local.year, served_local.month, served_local.day, 10, tzinfo=ctx.calendar.tz)
        answer = Answer(
            case_id="x", source_event_id="x", text="x", outcome="x", served_at=served.astimezone(UTC)
        )
        due = review_due(ctx, answer)
        assert due is not None
        return due.astimezone(ctx.calendar.tz).date()

    # 2026-03-02 + 30 = 2026-04-01, a Wednesday: the day itself.
    assert due_for(date(2026, 3, 2)) == date(2026, 4, 1)
    # 2026-03-06 + 30 = 2026-04-05, a Sunday in the Qingming holiday (4-6 April): moves to Tuesday 7 April.
    assert due_for(date(2026, 3, 6)) == ctx.calendar.on_or_after(date(2026, 4, 5))
    assert due_for(date(2026, 3, 6)) > date(2026, 4, 5)


def test_reply_letter_layout() -> None:
    content = LetterContent(
        kind="npc_suggestion",
        session="周口市第五届人民代表大会第三次会议",
        number="0123",
        suggestion_title="关于完善民警执法权力制约机制的建议",
        member_name="马刚",
        body="一是厘清执法权责。\n二是强化全程管控。",
        classification="A",
        issuing_unit="周口市公安局督察支队",
        issued_on=date(2026, 3, 5),
        contact_name="督察支队综合科",
        contact_phone="0394-8000000",
    )
    paragraphs = docx_paragraphs(render_docx(content))
    assert paragraphs[0] == "关于周口市第五届人民代表大会第三次会议第0123号建议的答复"
    assert paragraphs[1] == "马刚代表："
    assert "一是厘清执法权责。" in paragraphs and "二是强化全程管控。" in paragraphs
    assert paragraphs.index("感谢您对公安工作的关心和支持！") > paragraphs.index("二是强化全程管控。")
    assert any(p.startswith("办理类别：A类") for p in paragraphs)
    assert paragraphs[-4:] == [
        "周口市公安局督察支队",
        "2026年3月5日",
        "联系人：督察支队综合科",
        "联系电话：0394-8000000",
    ]

    proposal = dataclasses.replace(content, kind="cppcc_proposal", member_name="刘明")
    assert proposal.title.endswith("第0123号提案的答复") and proposal.salutation == "刘明委员："


def test_delivery_backoff_doubles_up_to_the_cap() -> None:
    settings = FeedbackSettings(
        secret_key=TEST_SECRET_KEY, delivery_retry_base_seconds=60, delivery_retry_max_seconds=300
    )
    ctx = FeedbackContext.from_settings(settings)
    assert [ctx.delivery.backoff(n) for n in (1, 2, 3, 4, 5)] == [60, 120, 240, 300, 300]


def test_smtp_host_without_sender_is_refused_at_start() -> None:
    import pydantic
    import pytest

    with pytest.raises(pydantic.ValidationError, match="SMTP_FROM"):
        FeedbackSettings(secret_key=TEST_SECRET_KEY, smtp_host="mail.example.cn")
