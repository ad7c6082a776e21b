"""A repeat of an open complaint (重复件) is linked to it, not worked twice, and answered with it.

Through the running services, real NATS and a real SMS gateway: the repeat gets its own tracking
code, no assignment and no task; the open matter's task and timeline show the repeat call; the
answer reaches both callers; a new matter (with a reason) is worked on its own; a repeat after an
answer rated 不满意 stays a key clue.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import fixtures
from tests.support import System, eventually
from tests.test_feedback_support import (
    SmsGateway,
    approve,
    conclude_as,
    create,
    deliveries,
    gateway_system_fixtures,
    identity_accessors,
    pending_answer,
)
from tests.test_pipeline import current_assignment, public_status, wait_status

_serial = itertools.count(1)
# GB 11643: the weights of the first 17 digits and the check character of the sum modulo 11.
ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
ID_CHECK = "10X98765432"


def unique_id_number() -> str:
    """A made-up resident ID number with a valid GB 11643 check digit, different on every call."""
    body = f"411624{1970 + os.getpid() % 40}0101{next(_serial) % 1000:03d}"
    total = sum(int(d) * w for d, w in zip(body, ID_WEIGHTS, strict=True))
    return body + ID_CHECK[total % 11]


gateway, system = gateway_system_fixtures("repeats")


@pytest.fixture(autouse=True)
def healthy_gateway(gateway: SmsGateway) -> Iterator[None]:
    gateway.fail_next, gateway.fail_always = 0, False
    yield


def caller(*, phone: str, id_number: str) -> dict[str, Any]:
    return {"complainant": {"name": "王建国", "anonymous": False, "phone": phone, "id_number": id_number}}


async def post_complaint(system: System, body: dict[str, Any]) -> Any:
    return await system.call("intake", "POST", "/api/v1/complaints", as_user="operator1", json=body)


async def tasks_of(system: System, case_id: str) -> list[dict[str, Any]]:
    response = await system.call(
        "verification", "GET", "/api/v1/tasks", as_user="supervisor1", params={"case_id": case_id}
    )
    assert response.status_code == 200, response.text
    return list(response.json())


async def routed_since(system: System) -> None:
    """Wait until routing and verification have taken every complaint recorded so far.

    Each service's consumer takes intake's events in order: once a complaint recorded now has its
    task, every earlier one was handled (a linked repeat by being left alone).
    """
    sentinel = await create(system)
    await current_assignment(system, sentinel["id"])

    async def has_task() -> list[dict[str, Any]] | None:
        return await tasks_of(system, sentinel["id"]) or None

    await eventually(has_task, what="the sentinel's task")


async def answer_sent(system: System, case_id: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        found = await deliveries(system, case_id, kind="answer")
        return found[0] if found and found[0]["status"] == "sent" else None

    return dict(await eventually(probe, what="the answer's delivery sent"))


async def repeat_stats(system: System) -> dict[str, int]:
    response = await system.call(
        "intake", "GET", "/api/v1/stats", as_user="supervisor1", params={"weeks": 104}
    )
    assert response.status_code == 200, response.text
    county = response.json()["by_county"].get("411681", {})
    return {key: county.get(key, 0) for key in ("received", "repeats", "repeat_calls")}


async def test_repeat_of_an_open_complaint_is_linked_and_answered_with_it(
    system: System, gateway: SmsGateway
) -> None:
    id_number = unique_id_number()
    first_phone, second_phone = fixtures.unique_mobile(), fixtures.unique_mobile()
    first = await create(system, **caller(phone=first_phone, id_number=id_number))
    assignment = await current_assignment(system, first["id"])
    before = await repeat_stats(system)

    # The operator's form asks before submitting: the same person (by ID number), the same unit.
    check = await system.call(
        "intake",
        "POST",
        "/api/v1/complaints/repeat-check",
        as_user="operator1",
        json={"id_number": id_number, "unit": "项城市公安局花园派出所", "county_code": "411681"},
    )
    assert check.status_code == 200, check.text
    assert check.json()["open_matter"]["id"] == first["id"]
    assert check.json()["open_matter"]["open"] is True

    second = await create(
        system,
        **caller(phone=second_phone, id_number=id_number),
        channel="web",
        account="上次反映民警态度恶劣的事情至今没有结果，我再反映一次。",
    )
    assert second["repeat_of"] == first["id"] and second["linked_repeat"] is True
    assert not second["repeat_after_rejection"]
    # Its own code and secret: the caller may not have the first.
    assert second["tracking_code"] != first["tracking_code"] and second["query_secret"]
    assert any("重复件" in hint for hint in second["key_clue_hints"])

    # Not routed, no second task: the open matter's task lists the repeat call instead.
    await routed_since(system)
    missing = await system.call(
        "routing", "GET", "/api/v1/assignments", as_user="supervisor1", params={"case_id": second["id"]}
    )
    assert missing.status_code == 404, missing.text
    assert await tasks_of(system, second["id"]) == []
    [task] = await tasks_of(system, first["id"])
    inspector = f"inspector-{assignment['team_code']}"

    async def repeat_calls() -> list[dict[str, Any]] | None:
        detail = await system.call("verification", "GET", f"/api/v1/tasks/{task['id']}", as_user=inspector)
        assert detail.status_code == 200, detail.text
        return detail.json()["repeat_calls"] or None

    [call] = await eventually(repeat_calls, what="the repeat call on the task")
    assert (call["tracking_code"], call["channel"], call["recorded_by"]) == (
        second["tracking_code"],
        "web",
        "operator1",
    )
    assert second_phone not in str(call) and id_number not in str(call) and "王建国" not in str(call)

    # Both public queries: the repeat shows the open matter's progress, the open one the repeat call.
    first_view = await public_status(system, first)
    assert "重复来电" in " ".join(e["label"] for e in first_view["timeline"])
    second_view = await public_status(system, second)
    assert second_view["status"] == first_view["status"] == "routed"
    assert "重复件" in " ".join(e["label"] for e in second_view["timeline"])

    # Counted as a repeat call, not a new matter.
    after = await repeat_stats(system)
    assert after["received"] == before["received"] + 1  # routed_since's sentinel, not the repeat
    assert after["repeats"] == before["repeats"] + 1
    assert after["repeat_calls"] == before["repeat_calls"] + 1

    # The open matter is concluded and its answer approved: both callers get it.
    await conclude_as(system, first["id"], inspector)
    await wait_status(system, first, "concluded")
    answer = await pending_answer(system, first["id"])
    approved = await approve(system, answer["id"])
    assert approved["status"] == "delivered"
    first_answered = await wait_status(system, first, "answered")
    second_answered = await wait_status(system, second, "answered")
    assert first_answered["answer"] and second_answered["answer"]
    assert second["tracking_code"] in second_answered["answer"]
    assert not second_answered["can_rate"]

    assert (await answer_sent(system, second["id"]))["channel"] == "sms"
    assert (await answer_sent(system, first["id"]))["channel"] == "sms"
    # Each caller gets the answer once, under their own tracking code (notices may go out beside it).
    assert [m["text"] for m in gateway.sent_to(first_phone)].count(approved["text"]) == 1
    to_second = [m["text"] for m in gateway.sent_to(second_phone)]
    assert to_second == [approved["text"].replace(first["tracking_code"], second["tracking_code"])]
    assert second["tracking_code"] in to_second[0]
    # The repeat's contact was read from intake by the repeat's own case id.
    assert await identity_accessors(system, second["id"]) == ["service:feedback"]
    assert "答复已通过短信送达" in [e["label"] for e in (await public_status(system, second))["timeline"]]
    # Still one task, one assignment for the matter.
    assert len(await tasks_of(system, first["id"])) == 1
    assert await tasks_of(system, second["id"]) == []


async def test_new_matter_needs_a_reason_and_is_then_worked_on_its_own(system: System) -> None:
    phone = fixtures.unique_mobile()
    first = await create(system, complainant={"phone": phone})
    await current_assignment(system, first["id"])

    body = fixtures.complaint(
        complainant={"phone": phone},
        account="这次是另一件事：11月5日我去派出所办证，窗口民警推诿不办。",
        new_matter=True,
    )
    refused = await post_complaint(system, body)
    assert refused.status_code == 422, refused.text
    [problem] = refused.json()["detail"]
    assert problem["field"] == "new_matter_reason"
    assert "理由" in problem["message"]
    listed = await system.call(
        "intake", "GET", "/api/v1/complaints", as_user="operator1", params={"phone": phone}
    )
    assert [c["id"] for c in listed.json()] == [first["id"]]

    accepted = await post_complaint(
        system, body | {"new_matter_reason": "本次反映的是另一起办证事件，不是同一事项"}
    )
    assert accepted.status_code == 201, accepted.text
    second = accepted.json()
    assert second["repeat_of"] is None and second["linked_repeat"] is False
    assignment = await current_assignment(system, second["id"])
    assert assignment["case_id"] == second["id"]

    async def second_task() -> list[dict[str, Any]] | None:
        return await tasks_of(system, second["id"]) or None

    assert len(await eventually(second_task, what="the new matter's task")) == 1
    read = await system.call("intake", "GET", f"/api/v1/complaints/{second['id']}", as_user="supervisor1")
    assert read.json()["new_matter_reason"] == "本次反映的是另一起办证事件，不是同一事项"
    trail = await system.call("intake", "GET", f"/api/v1/audit/{second['id']}", as_user="supervisor1")
    assert trail.status_code == 200, trail.text
    assert "另一起办证事件" in trail.text


async def test_repeat_after_an_unsatisfied_rating_stays_a_key_clue(system: System) -> None:
    phone = fixtures.unique_mobile()
    first = await create(system, complainant={"phone": phone})
    assignment = await current_assignment(system, first["id"])
    await conclude_as(system, first["id"], f"inspector-{assignment['team_code']}")
    await wait_status(system, first, "concluded")
    await approve(system, (await pending_answer(system, first["id"]))["id"])
    await wait_status(system, first, "answered")
    rating = await system.call(
        "feedback",
        "POST",
        "/api/v1/public/rating",
        json={
            "tracking_code": first["tracking_code"],
            "query_secret": first["query_secret"],
            "rating": "unsatisfied",
            "reason": "民警的问题没有得到处理",
        },
    )
    assert rating.status_code == 200, rating.text

    async def rating_known() -> bool:
        response = await system.call(
            "intake", "GET", f"/api/v1/complaints/{first['id']}", as_user="operator1"
        )
        return bool(response.json()["last_rating"] == "unsatisfied")

    await eventually(rating_known, what="intake to record the rating")
    check = await system.call(
        "intake",
        "POST",
        "/api/v1/complaints/repeat-check",
        as_user="operator1",
        json={"phone": phone, "unit": "项城市公安局花园派出所", "county_code": "411681"},
    )
    assert check.json()["open_matter"] is None and check.json()["earlier"]["id"] == first["id"]

    again = await create(system, complainant={"phone": phone}, account="我对答复不满意，民警仍然态度恶劣。")
    assert again["repeat_of"] == first["id"]
    assert again["repeat_after_rejection"] is True and again["linked_repeat"] is False
    assert any("不满意" in hint for hint in again["key_clue_hints"])
    second = await current_assignment(system, again["id"])
    assert second["key_clue"] is True


async def test_repeat_check_names_bad_fields(system: System) -> None:
    response = await system.call(
        "intake",
        "POST",
        "/api/v1/complaints/repeat-check",
        as_user="operator1",
        json={"phone": "12345", "unit": "项城市公安局花园派出所", "county_code": "411681"},
    )
    assert response.status_code == 422, response.text
    assert [p["field"] for p in response.json()["detail"]] == ["phone"]


# --- the operator's form ------------------------------------------------------------------------

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"browser tests need Chromium at {CHROMIUM}")
async def test_operator_sees_the_open_complaint_and_chooses_link_or_new_matter(system: System) -> None:
    from playwright.async_api import async_playwright

    phone = fixtures.unique_mobile()
    first = await create(system, complainant={"phone": phone})
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        try:
            page = await (await browser.new_context(locale="zh-CN", timezone_id="Asia/Shanghai")).new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            await page.goto(system.urls["intake"] + "/login")
            await page.fill("#username", "operator1")
            await page.fill("#password", "demo")
            async with page.expect_navigation():
                await page.press("#password", "Enter")
            await page.goto(system.urls["intake"] + "/operator/complaint")

            async def fill_caller() -> None:
                await page.fill("#c-name", "王建国")
                await page.fill("#c-phone", phone)
                await page.fill("#c-unit", "项城市公安局花园派出所")
                await page.select_option("#c-county", "411681")
                await page.select_option("#c-category", "态度粗暴")
                await page.fill("#c-account", "上次反映的民警态度问题还没有结果，我再来反映。")

            # Before submitting, the open complaint is shown; linking is the default.
            await fill_caller()
            box = page.locator("[data-testid=repeat-check]")
            await box.wait_for()
            assert first["tracking_code"] in await box.inner_text()
            assert await page.is_checked("#c-repeat-link")
            await page.click("#c-submit")
            await page.locator("[data-testid=receipt]").wait_for()
            assert "已作为重复件关联" in await page.inner_text("#receipt")
            linked = await system.call(
                "intake", "GET", "/api/v1/complaints", as_user="operator1", params={"phone": phone}
            )
            assert [c["linked_repeat"] for c in linked.json()] == [True, False]

            # A new matter needs a reason, named at its field in Chinese; then it is recorded on its own.
            await fill_caller()
            await box.wait_for()
            await page.check("#c-repeat-new")
            await page.click("#c-submit")
            await page.wait_for_selector("[data-field=new_matter_reason].invalid")
            assert "理由" in await page.inner_text("[data-field=new_matter_reason]")
            await page.fill("#c-new-reason", "另一起事件：11月5日办证时被推诿")
            await page.click("#c-submit")

            async def recorded_all() -> list[dict[str, Any]] | None:
                listed = await system.call(
                    "intake", "GET", "/api/v1/complaints", as_user="operator1", params={"phone": phone}
                )
                return listed.json() if len(listed.json()) == 3 else None

            recorded = await eventually(recorded_all, what="the new matter recorded")
            # The receipt of the new matter replaces the repeat's.
            await page.wait_for_selector("#receipt:not(:has-text('已作为重复件关联'))")
            assert sorted((c["linked_repeat"], c["new_matter_reason"] or "") for c in recorded) == [
                (False, ""),
                (False, "另一起事件：11月5日办证时被推诿"),
                (True, ""),
            ]
            assert not errors, errors
        finally:
            await browser.close()
