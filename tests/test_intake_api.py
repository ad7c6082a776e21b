"""Intake through its HTTP API with all four services running: validation and idempotency.

Repeats are in tests/test_intake_repeats.py, identity protection and roles in
tests/test_intake_access.py; both take their helpers from here.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests import fixtures
from tests.support import System
from tests.test_pipeline import create_complaint, current_assignment

CJK = re.compile(r"[\u4e00-\u9fff]")
VALID_ID = "411623196503140024"
# A second person: complaints by one person about one unit while the first is open are linked repeats.
OTHER_VALID_ID = "411623196503140032"


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def now() -> datetime:
    return datetime.now(UTC)


async def post_complaint(system: System, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    return await system.call("intake", "POST", "/api/v1/complaints", as_user="operator1", json=body, **kwargs)


async def complaints_by_phone(system: System, phone: str) -> list[dict[str, Any]]:
    response = await system.call(
        "intake", "GET", "/api/v1/complaints", as_user="operator1", params={"phone": phone}
    )
    assert response.status_code == 200, response.text
    return list(response.json())


def problems(response: httpx.Response) -> dict[str, str]:
    """The 422 body as field -> message, after checking its shape."""
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail, detail
    for item in detail:
        assert set(item) >= {"field", "message", "type"}, item
        assert item["message"], item
    return {item["field"]: item["message"] for item in detail}


def message_for(found: dict[str, str], field: str) -> str:
    """The message for ``field`` or for a part of it (``complainant`` is named by ``complainant.name``)."""
    for name, message in found.items():
        if name == field or name.startswith(field + "."):
            return message
    raise AssertionError(f"{field} not named in {found}")


def is_english(message: str, *echoed: str) -> bool:
    """English, apart from the person's own words quoted back."""
    for text in echoed:
        message = message.replace(text, "")
    return not CJK.search(message) and bool(re.search(r"[A-Za-z]{3,}", message))


def with_phone(phone: str, **overrides: Any) -> dict[str, Any]:
    body = fixtures.complaint(**overrides)
    body["complainant"]["phone"] = phone
    return body


# --- validation -----------------------------------------------------------------------------------


def invalid_bodies(phone: str) -> list[tuple[str, dict[str, Any], str]]:
    """(case, body, field named) for each rejected request; all with the same valid phone unless it is the point."""
    long_account = "民" * 20_001
    return [
        ("bad mobile", with_phone("1380000000"), "complainant.phone"),
        (
            "id checksum",
            with_phone(phone, complainant={"id_number": "411623196503140025"}),
            "complainant.id_number",
        ),
        (
            "id birth date",
            with_phone(phone, complainant={"id_number": "411623199913320024"}),
            "complainant.id_number",
        ),
        ("incident in future", with_phone(phone, incident_at=iso(now() + timedelta(days=1))), "incident_at"),
        (
            "received in future",
            with_phone(
                phone, received_at=iso(now() + timedelta(days=2)), incident_at=iso(now() - timedelta(days=1))
            ),
            "received_at",
        ),
        (
            "incident after receipt",
            with_phone(
                phone, received_at=iso(now() - timedelta(days=10)), incident_at=iso(now() - timedelta(days=5))
            ),
            "incident_at",
        ),
        ("unknown county", with_phone(phone, accused={"county_code": "419999"}), "accused.county_code"),
        ("unknown category", with_phone(phone, category="乱收费"), "category"),
        ("empty account", with_phone(phone, account=""), "account"),
        ("blank account", with_phone(phone, account="  \n\t "), "account"),
        ("long account", with_phone(phone, account=long_account), "account"),
        ("named without name", with_phone(phone, complainant={"name": None}), "complainant"),
        ("named with blank name", with_phone(phone, complainant={"name": "   "}), "complainant"),
        ("naive incident time", with_phone(phone, incident_at="2026-10-30T20:30:00"), "incident_at"),
        ("naive receipt time", with_phone(phone, received_at="2026-11-02T09:14:00"), "received_at"),
    ]


async def test_each_invalid_complaint_names_its_field_in_chinese_and_stores_nothing(system: System) -> None:
    phone = fixtures.unique_mobile()
    assert await complaints_by_phone(system, phone) == []
    for case, body, field in invalid_bodies(phone):
        found = problems(await post_complaint(system, body))
        assert CJK.search(message_for(found, field)), (case, found)
    assert await complaints_by_phone(system, phone) == []
    # The same phone with a valid body is stored, so the count above did look in the right place.
    await create_complaint(system, complainant={"phone": phone})
    assert len(await complaints_by_phone(system, phone)) == 1


async def test_each_invalid_complaint_is_explained_in_english_on_request(system: System) -> None:
    phone = fixtures.unique_mobile()
    for case, body, field in invalid_bodies(phone):
        found = problems(
            await post_complaint(system, body, headers={"Accept-Language": "en-GB,en;q=0.9,zh;q=0.5"})
        )
        assert is_english(message_for(found, field), "乱收费"), (case, found)
    assert await complaints_by_phone(system, phone) == []


async def test_validation_messages_say_what_is_wrong(system: System) -> None:
    phone = fixtures.unique_mobile()
    cases = {case: (body, field) for case, body, field in invalid_bodies(phone)}

    async def message(case: str, language: str | None = None) -> str:
        body, field = cases[case]
        headers = {"Accept-Language": language} if language else {}
        return message_for(problems(await post_complaint(system, body, headers=headers)), field)

    assert "20000" in await message("long account")
    assert "20000" in await message("long account", "en")
    assert "时区" in await message("naive incident time")
    assert "time zone" in (await message("naive incident time", "en")).lower()
    assert "校验" in await message("id checksum")
    assert "checksum" in (await message("id checksum", "en")).lower()
    assert "出生日期" in await message("id birth date")
    assert "birth" in (await message("id birth date", "en")).lower()
    assert "419999" in await message("unknown county")
    assert "乱收费" in await message("unknown category")
    assert "态度粗暴" in await message("unknown category")  # lists what may be chosen


async def test_several_problems_are_reported_together(system: System) -> None:
    body = with_phone(fixtures.unique_mobile(), accused={"county_code": "419999"}, category="乱收费")
    found = problems(await post_complaint(system, body))
    assert {"accused.county_code", "category"} <= set(found)


async def test_landline_and_valid_id_number_are_accepted(system: System) -> None:
    landline = await post_complaint(system, with_phone("0394-8234567"))
    assert landline.status_code == 201, landline.text
    with_id = await post_complaint(
        system, with_phone(fixtures.unique_mobile(), complainant={"id_number": VALID_ID})
    )
    assert with_id.status_code == 201, with_id.text
    lower_x = await post_complaint(
        system, with_phone(fixtures.unique_mobile(), complainant={"id_number": "11010519491231002x"})
    )
    assert lower_x.status_code == 201, lower_x.text
    identity = await system.call(
        "intake",
        "GET",
        f"/api/v1/complaints/{with_id.json()['id']}/identity",
        as_user="operator1",
        params={"purpose": "核查需要", "reason": "核对身份证号"},
    )
    assert identity.json()["id_number"] == VALID_ID


async def test_several_allegations_without_a_category_route_as_a_key_clue(system: System) -> None:
    body = fixtures.complaint(
        allegations=[{"category": "态度粗暴"}, {"category": "吃拿卡要", "description": "索要好处费"}]
    )
    del body["category"]
    response = await post_complaint(system, body)
    assert response.status_code == 201, response.text
    assert response.json()["key_clue_hints"]
    stored = await system.call(
        "intake", "GET", f"/api/v1/complaints/{response.json()['id']}", as_user="operator1"
    )
    assert [a["category"] for a in stored.json()["allegations"]] == ["态度粗暴", "吃拿卡要"]
    assignment = await current_assignment(system, response.json()["id"])
    assert assignment["key_clue"] is True
    assert (assignment["kind"], assignment["team_code"], assignment["rule"]) == (
        "joint",
        "411600",
        "key_clue_serious",
    )


async def test_neither_category_nor_allegations_is_refused(system: System) -> None:
    body = fixtures.complaint()
    del body["category"]
    assert problems(await post_complaint(system, body))


# --- idempotency ----------------------------------------------------------------------------------


async def test_idempotency_key_makes_a_retried_complaint_count_once(system: System) -> None:
    phone = fixtures.unique_mobile()
    body = with_phone(phone)
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = await post_complaint(system, body, headers=key)
    again = await post_complaint(system, body, headers=key)
    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert first.json() == again.json()
    assert len(await complaints_by_phone(system, phone)) == 1

    case_id = first.json()["id"]
    await current_assignment(system, case_id)
    history = await system.call(
        "routing", "GET", "/api/v1/assignments/history", as_user="supervisor1", params={"case_id": case_id}
    )
    assert len(history.json()) == 1

    changed = await post_complaint(
        system, body | {"account": body["account"] + "补充：当时有多名群众在场。"}, headers=key
    )
    assert changed.status_code == 409, changed.text
    assert len(await complaints_by_phone(system, phone)) == 1
    # Without a key, the same body is a second complaint (the operator really meant it).
    assert (await post_complaint(system, body)).status_code == 201
    assert len(await complaints_by_phone(system, phone)) == 2


async def test_concurrent_retries_with_one_key_record_one_complaint(system: System) -> None:
    phone = fixtures.unique_mobile()
    body = with_phone(phone)
    key = {"Idempotency-Key": str(uuid.uuid4())}
    answers = await asyncio.gather(*(post_complaint(system, body, headers=key) for _ in range(4)))
    assert [a.status_code for a in answers] == [201] * 4, [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert len(await complaints_by_phone(system, phone)) == 1


async def post_suggestion(system: System, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    return await system.call(
        "intake", "POST", "/api/v1/suggestions", as_user="operator1", json=body, **kwargs
    )


async def test_idempotency_key_makes_a_retried_suggestion_count_once(system: System) -> None:
    body = fixtures.suggestion()
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = await post_suggestion(system, body, headers=key)
    again = await post_suggestion(system, body, headers=key)
    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert first.json() == again.json()
    listed = await system.call(
        "intake",
        "GET",
        "/api/v1/suggestions",
        as_user="operator1",
        params={"tracking_code": first.json()["tracking_code"]},
    )
    assert [s["id"] for s in listed.json()] == [first.json()["id"]]
    changed = await post_suggestion(system, body | {"title": "关于加强执法记录仪使用管理的建议"}, headers=key)
    assert changed.status_code == 409, changed.text


async def test_suggestion_number_is_unique_within_a_session(system: System) -> None:
    body = fixtures.suggestion()
    assert (await post_suggestion(system, body)).status_code == 201
    duplicate = await post_suggestion(system, body | {"title": "另一件建议"})
    assert duplicate.status_code == 409, duplicate.text
    assert [e["field"] for e in duplicate.json()["detail"]] == ["number"]
    other_session = await post_suggestion(system, body | {"session": "周口市第五届人民代表大会第四次会议"})
    assert other_session.status_code == 201, other_session.text
