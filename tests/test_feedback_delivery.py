"""Answers reaching complainants: SMS through a real HTTP gateway, e-mail through a real SMTP server,
retries and the hand-over to a person, manual phone and letter deliveries.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests import fixtures
from tests.support import NatsServer, System
from tests.test_feedback_support import (
    Mailbox,
    SmsGateway,
    answered_complaint,
    approve,
    concluded_complaint,
    deliveries,
    delivery_in,
    feedback_system,
    identity_accessors,
    intake_status,
    outside_world_env,
    running_gateway,
    running_mailbox,
)
from tests.test_pipeline import public_status


@pytest.fixture(scope="module")
async def gateway() -> AsyncIterator[SmsGateway]:
    async with running_gateway() as running:
        yield running


@pytest.fixture(scope="module")
def mailbox() -> Iterator[Mailbox]:
    with running_mailbox() as running:
        yield running


@pytest.fixture(scope="module")
async def system(
    backend: str,
    nats_server: NatsServer,
    tmp_path_factory: pytest.TempPathFactory,
    gateway: SmsGateway,
    mailbox: Mailbox,
) -> AsyncIterator[System]:
    async with feedback_system(
        backend=backend,
        root=tmp_path_factory.mktemp(f"feedback-delivery-{backend}"),
        nats_url=nats_server.url,
        env=outside_world_env(gateway=gateway, mailbox=mailbox),
    ) as running:
        yield running


@pytest.fixture(autouse=True)
def healthy_gateway(gateway: SmsGateway) -> Iterator[None]:
    gateway.fail_next, gateway.fail_always = 0, False
    yield
    gateway.fail_next, gateway.fail_always = 0, False


def named(**complainant: Any) -> dict[str, Any]:
    return {"complainant": {"name": "王建国", "anonymous": False, **complainant}}


async def test_answer_goes_out_by_sms_exactly_once(system: System, gateway: SmsGateway) -> None:
    phone = fixtures.unique_mobile()
    created, approved = await answered_complaint(system, **named(phone=phone))

    assert approved["status"] == "delivered"
    [delivery] = approved["deliveries"]
    assert delivery["status"] == "sent" and delivery["channel"] == "sms" and delivery["attempts"] == 0
    [message] = gateway.sent_to(phone)
    assert message["text"] == approved["text"]
    assert "部分属实" in message["text"] and "30日内" in message["text"]
    assert [p["key"] for p in gateway.posts_to(phone)] == [f"sv-delivery-{delivery['id']}"]

    # Intake recorded that feedback read the contact to send it, and learnt the answer reached the person.
    assert await identity_accessors(system, created["id"]) == ["service:feedback"]
    complaint = await intake_status(system, created["id"], "answered")
    assert complaint["status"] == "answered"
    result = await public_status(system, created)
    assert result["status"] == "answered" and result["can_request_review"]
    assert "答复已通过短信送达" in [entry["label"] for entry in result["timeline"]]
    assert phone not in str(result)


async def test_gateway_failing_twice_then_succeeding_sends_one_sms(
    system: System, gateway: SmsGateway
) -> None:
    phone = fixtures.unique_mobile()
    gateway.fail_next = 2
    created, approved = await answered_complaint(system, **named(phone=phone))
    [first] = approved["deliveries"]
    assert first["status"] == "pending" and first["attempts"] == 1 and "503" in first["last_error"]

    sent = await delivery_in(system, created["id"], "sent")
    assert sent["id"] == first["id"] and sent["attempts"] == 2
    posts = gateway.posts_to(phone)
    assert len(posts) == 3
    assert {p["key"] for p in posts} == {f"sv-delivery-{first['id']}"}
    assert len(gateway.sent_to(phone)) == 1
    await intake_status(system, created["id"], "answered")


async def test_gateway_down_hands_the_delivery_to_a_person_who_retries_it(
    system: System, gateway: SmsGateway
) -> None:
    phone = fixtures.unique_mobile()
    gateway.fail_always = True
    created, _ = await answered_complaint(system, **named(phone=phone))

    failed = await delivery_in(system, created["id"], "failed")
    assert failed["attempts"] == 3 and "503" in failed["last_error"]
    assert gateway.sent_to(phone) == []
    listed = await system.call(
        "feedback", "GET", "/api/v1/deliveries", as_user="supervisor1", params={"status": "failed"}
    )
    assert failed["id"] in {d["id"] for d in listed.json()}
    # The public query has the answer all the same; intake does not count it as answered yet.
    assert (await public_status(system, created))["status"] == "answered"
    complaint = await system.call(
        "intake", "GET", f"/api/v1/complaints/{created['id']}", as_user="supervisor1"
    )
    assert complaint.json()["status"] == "concluded"

    gateway.fail_always = False
    retried = await system.call(
        "feedback", "POST", f"/api/v1/deliveries/{failed['id']}/retry", as_user="operator1"
    )
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "sent" and retried.json()["channel"] == "sms"
    assert len(gateway.sent_to(phone)) == 1
    assert {p["key"] for p in gateway.posts_to(phone)} == {f"sv-delivery-{failed['id']}"}
    await intake_status(system, created["id"], "answered")

    again = await system.call(
        "feedback", "POST", f"/api/v1/deliveries/{failed['id']}/retry", as_user="operator1"
    )
    assert again.status_code == 409 and again.json()["detail"][0]["field"] == "status"
    assert len(gateway.sent_to(phone)) == 1


async def test_answer_by_email_when_there_is_no_phone(system: System, mailbox: Mailbox) -> None:
    address = f"wang.{fixtures.unique_mobile()}@example.cn"
    created, approved = await answered_complaint(system, **named(phone=None, email=address))

    [delivery] = approved["deliveries"]
    assert delivery["status"] == "sent" and delivery["channel"] == "email"
    [message] = mailbox.to(address)
    assert created["tracking_code"] in str(message["Subject"])
    assert str(message["Message-ID"]).strip() == f"<sv-delivery-{delivery['id']}@gaj.zhoukou.example.cn>"
    body = message.get_content()
    assert approved["text"].strip() in body
    await intake_status(system, created["id"], "answered")
    assert await identity_accessors(system, created["id"]) == ["service:feedback"]


async def test_anonymous_complaint_is_answered_on_the_public_query_only(system: System) -> None:
    created, approved = await answered_complaint(
        system, complainant={"anonymous": True, "name": None, "phone": None}
    )
    assert approved["deliveries"] == [] and approved["channel"] == "none" and approved["served_at"]
    assert await deliveries(system, created["id"]) == []
    assert await identity_accessors(system, created["id"]) == []
    assert (await public_status(system, created))["status"] == "answered"
    await intake_status(system, created["id"], "answered")


async def test_no_automatic_channel_asks_for_a_letter_which_an_operator_records(system: System) -> None:
    created, approved = await answered_complaint(system, **named(phone=None, address="项城市莲花大道88号"))
    [failed] = approved["deliveries"]
    assert failed["status"] == "failed" and "请信函告知" in failed["last_error"]

    recorded = await system.call(
        "feedback",
        "POST",
        f"/api/v1/answers/{approved['id']}/deliveries",
        as_user="operator1",
        json={"channel": "letter", "note": "已挂号邮寄书面答复，回执电话13912345678"},
    )
    assert recorded.status_code == 201, recorded.text
    assert recorded.json()["status"] == "sent" and recorded.json()["mode"] == "manual"
    assert "13912345678" not in recorded.json()["note"]
    states = {d["id"]: d["status"] for d in await deliveries(system, created["id"])}
    assert states == {failed["id"]: "cancelled", recorded.json()["id"]: "sent"}
    await intake_status(system, created["id"], "answered")


async def test_operator_records_a_phone_call_and_the_sms_is_not_sent_as_well(
    system: System, gateway: SmsGateway
) -> None:
    phone = fixtures.unique_mobile()
    gateway.fail_always = True
    created, approved = await answered_complaint(system, **named(phone=phone))
    [pending] = approved["deliveries"]
    assert pending["status"] == "pending"

    recorded = await system.call(
        "feedback",
        "POST",
        f"/api/v1/answers/{approved['id']}/deliveries",
        as_user="operator1",
        json={"channel": "phone", "note": "已电话告知本人核查结论，对方表示知悉"},
    )
    assert recorded.status_code == 201, recorded.text
    gateway.fail_always = False
    states = {d["id"]: d["status"] for d in await deliveries(system, created["id"])}
    assert states[pending["id"]] == "cancelled"
    complaint = await intake_status(system, created["id"], "answered")
    assert complaint["status"] == "answered"
    answers = await system.call(
        "feedback", "GET", "/api/v1/answers", as_user="supervisor1", params={"case_id": created["id"]}
    )
    assert answers.json()[0]["channel"] == "phone"
    assert gateway.sent_to(phone) == []


async def test_a_failed_delivery_is_resolved_by_a_person_who_phoned(
    system: System, gateway: SmsGateway
) -> None:
    phone = fixtures.unique_mobile()
    gateway.fail_always = True
    created, _ = await answered_complaint(system, **named(phone=phone))
    failed = await delivery_in(system, created["id"], "failed")
    path = f"/api/v1/deliveries/{failed['id']}/resolve"

    for body, field in (({"channel": "email", "note": "已告知"}, "channel"), ({"channel": "phone"}, "note")):
        bad = await system.call("feedback", "POST", path, as_user="operator1", json=body)
        assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == field
    assert (await delivery_in(system, created["id"], "failed"))["id"] == failed["id"]

    resolved = await system.call(
        "feedback", "POST", path, as_user="supervisor1", json={"channel": "phone", "note": "已电话告知本人"}
    )
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["status"] == "sent" and resolved.json()["mode"] == "manual"
    assert resolved.json()["recorded_by"] == "supervisor1"
    again = await system.call(
        "feedback", "POST", path, as_user="operator1", json={"channel": "phone", "note": "再次"}
    )
    assert again.status_code == 409 and again.json()["detail"][0]["field"] == "status"
    missing = await system.call(
        "feedback",
        "POST",
        "/api/v1/deliveries/nope/resolve",
        as_user="operator1",
        json={"channel": "phone", "note": "已告知"},
    )
    assert missing.status_code == 404
    await intake_status(system, created["id"], "answered")
    assert gateway.sent_to(phone) == []


async def test_bad_input_on_delivery_endpoints_names_the_field_and_changes_nothing(system: System) -> None:
    created, draft = await concluded_complaint(system, **named(phone=fixtures.unique_mobile()))

    async def post(path: str, user: str = "operator1", **kwargs: Any) -> Any:
        return await system.call("feedback", "POST", path, as_user=user, **kwargs)

    not_approved = await post(
        f"/api/v1/answers/{draft['id']}/deliveries", json={"channel": "phone", "note": "已电话告知"}
    )
    assert not_approved.status_code == 409 and not_approved.json()["detail"][0]["field"] == "status"

    approved = await approve(system, draft["id"])
    before = await deliveries(system, created["id"])
    wrong_channel = await post(
        f"/api/v1/answers/{draft['id']}/deliveries", json={"channel": "sms", "note": "已发送"}
    )
    assert wrong_channel.status_code == 422
    assert wrong_channel.json()["detail"][0]["field"] == "channel"
    no_note = await post(f"/api/v1/answers/{draft['id']}/deliveries", json={"channel": "phone"})
    assert no_note.status_code == 422 and no_note.json()["detail"][0]["field"] == "note"
    blank_note = await post(
        f"/api/v1/answers/{draft['id']}/deliveries", json={"channel": "phone", "note": "   "}
    )
    assert blank_note.status_code == 422 and blank_note.json()["detail"][0]["field"] == "note"
    unknown = await post(
        "/api/v1/answers/no-such-answer/deliveries", json={"channel": "phone", "note": "已电话告知"}
    )
    assert unknown.status_code == 404
    as_deputy = await post(
        f"/api/v1/answers/{draft['id']}/deliveries",
        user="deputy1",
        json={"channel": "phone", "note": "已电话告知"},
    )
    assert as_deputy.status_code == 403
    twice = await system.call(
        "feedback", "POST", f"/api/v1/answers/{draft['id']}/approve", as_user="supervisor1"
    )
    assert twice.status_code == 409 and twice.json()["detail"][0]["field"] == "status"
    edit = await system.call(
        "feedback",
        "PUT",
        f"/api/v1/answers/{draft['id']}",
        as_user="supervisor1",
        json={"text": "改过的答复内容，共十个字以上"},
    )
    assert edit.status_code == 409

    sent_retry = await post(f"/api/v1/deliveries/{approved['deliveries'][0]['id']}/retry")
    assert sent_retry.status_code == 409 and sent_retry.json()["detail"][0]["field"] == "status"
    assert (await post("/api/v1/deliveries/no-such-delivery/retry")).status_code == 404
    bad_status = await system.call(
        "feedback", "GET", "/api/v1/deliveries", as_user="operator1", params={"status": "lost"}
    )
    assert bad_status.status_code == 422 and bad_status.json()["detail"][0]["field"] == "status"
    bad_answers = await system.call(
        "feedback", "GET", "/api/v1/answers", as_user="supervisor1", params={"status": "x"}
    )
    assert bad_answers.status_code == 422
    no_letter = await system.call(
        "feedback", "GET", f"/api/v1/answers/{draft['id']}/letter", as_user="supervisor1"
    )
    assert no_letter.status_code == 404

    assert await deliveries(system, created["id"]) == before
