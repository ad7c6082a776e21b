"""The demo's message sinks (issue 12 §1b): a local SMS gateway and SMTP server that accept every
message, feedback pointed at them, and the supervisors' 消息记录 listing what was sent, masked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from email.message import EmailMessage

import aiosmtplib
import httpx
import pytest

from services.cli.demosinks import DemoSinks, point_feedback_at, running_sinks
from tests import fixtures
from tests.support import NatsServer, System
from tests.test_feedback_support import answered_complaint, feedback_system, outside_world_env

Said = list[tuple[str, str]]


@pytest.fixture(scope="module")
def said() -> Said:
    return []


@pytest.fixture(scope="module")
async def sinks(said: Said) -> AsyncIterator[DemoSinks]:
    async with running_sinks(lambda text, name: said.append((name, text))) as running:
        yield running


@pytest.fixture(scope="module")
async def system(
    backend: str, nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory, sinks: DemoSinks
) -> AsyncIterator[System]:
    env = outside_world_env(gateway=None, mailbox=None)
    assert point_feedback_at(sinks, env, lambda text, name: None)
    async with feedback_system(
        backend=backend,
        root=tmp_path_factory.mktemp(f"demo-sinks-{backend}"),
        nats_url=nats_server.url,
        env=env,
    ) as running:
        yield running


async def test_the_sms_sink_accepts_a_message_once_per_key(sinks: DemoSinks, said: Said) -> None:
    before = sinks.sms.accepted
    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
        body = {"to": "13900001234", "text": "您反映的问题已受理，编号ZK0001。", "reference": "r-1"}
        first = await client.post(sinks.sms_url, json=body, headers={"Idempotency-Key": "k-1"})
        again = await client.post(sinks.sms_url, json=body, headers={"Idempotency-Key": "k-1"})
        keyless = await client.post(sinks.sms_url, json=body)
        elsewhere = await client.post(sinks.sms_url.replace("/sms", "/other"), json=body)
    assert first.status_code == 200 and first.json() == {"id": "k-1"}
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert keyless.status_code == 400 and elsewhere.status_code == 404
    assert sinks.sms.accepted == before + 1
    lines = [text for name, text in said if name == "sms"]
    assert any("139****1234" in line for line in lines)
    assert not any("13900001234" in line for line in lines)


async def test_the_smtp_sink_accepts_every_mail(sinks: DemoSinks, said: Said) -> None:
    message = EmailMessage()
    message["From"] = "dczd@demo.example.cn"
    message["To"] = "leader411624@example.gov.cn"
    message["Subject"] = "督察工作提醒"
    message.set_content("事项 ZK0001 已超期，请督促办理。")
    await aiosmtplib.send(message, hostname=sinks.smtp_host, port=sinks.smtp_port, start_tls=False, timeout=5)
    assert sinks.mail.accepted >= 1
    lines = [text for name, text in said if name == "smtp"]
    assert any("l***@example.gov.cn" in line and "督察工作提醒" in line for line in lines)
    assert not any("leader411624@" in line for line in lines)


def test_a_configured_gateway_is_not_replaced(sinks: DemoSinks) -> None:
    env = {"SMS_GATEWAY_URL": "https://sms.bureau.example/send"}
    assert not point_feedback_at(sinks, env, lambda text, name: None)
    assert env == {"SMS_GATEWAY_URL": "https://sms.bureau.example/send"}


async def test_an_answer_leaves_through_the_sink_and_the_message_log_lists_it_masked(
    system: System, sinks: DemoSinks
) -> None:
    phone = fixtures.unique_mobile()
    before = sinks.sms.accepted
    created, approved = await answered_complaint(
        system, complainant={"name": "王建国", "anonymous": False, "phone": phone}
    )
    assert approved["deliveries"][0]["status"] == "sent", approved
    assert sinks.sms.accepted > before

    response = await system.call("feedback", "GET", "/api/v1/messages", as_user="supervisor1")
    assert response.status_code == 200, response.text
    rows = [row for row in response.json() if row["case_id"] == created["id"]]
    assert rows, response.json()
    row = rows[0]
    assert row["kind"] == "answer" and row["kind_label"] == "答复"
    assert row["channel"] == "sms" and row["channel_label"] == "短信"
    assert row["tracking_code"] == created["tracking_code"] and row["status"] == "sent"
    assert row["sent_to_masked"] and row["sent_to_masked"].endswith(phone[-4:])
    assert phone not in response.text
    newest_first = [r["sent_at"] for r in response.json()]
    assert newest_first == sorted(newest_first, reverse=True)
    paged = await system.call(
        "feedback", "GET", "/api/v1/messages", as_user="supervisor1", params={"limit": 1, "offset": 0}
    )
    assert paged.status_code == 200 and len(paged.json()) == 1
    for user in ("operator1", "leader-411624", "deputy1"):
        refused = await system.call("feedback", "GET", "/api/v1/messages", as_user=user)
        assert refused.status_code == 403, user
    token = await system.token("supervisor1")
    page = await system.call("feedback", "GET", "/messages", headers={"Cookie": f"sv_token={token}"})
    assert page.status_code == 200 and "消息记录" in page.text
