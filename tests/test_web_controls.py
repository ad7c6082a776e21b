"""The web controls of actions that once were API-only, driven in a real browser, one test per role.

Operator: reclassifying a matter from the search page, recording a letter for a delivery that
needs a person.  Supervisor: flagging a key clue, requiring a cross-check review, checking a
rectification, the audit trail with its chain check, the identity-access log, retrying a failed
delivery and deactivating an account.  Inspector: a co-handling view and the B-class follow-up
reply.  The browser set-up (a seeded system, Chromium, one session per person) is
tests/web_support.py's,
without its demo data.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests import fixtures
from tests import web_support as browsing
from tests.support import NatsServer, System, running_system
from tests.web_support import answered_by_api, claimed_and_found, first_listed, record, task_of

# The browser, the sessions and the skip without Chromium are tests/web_support.py's.
pytestmark = browsing.needs_chromium
browser = browsing.browser
open_session = browsing.open_session


@pytest.fixture(scope="module")
async def web(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[System]:
    """The four services without the demo data: each test makes the matters it drives."""
    root = tmp_path_factory.mktemp("controls")
    async with running_system(backend="sqlite", root=root, nats_url=nats_server.url) as system:
        yield system


async def failed_delivery(system: System, **complainant: Any) -> dict[str, Any]:
    """An answered complaint whose complainant left neither phone nor e-mail: its answer waits for a person."""
    created = await record(
        system,
        complainant={"name": "赵国庆", "phone": None, "address": "项城市莲花大道88号", **complainant},
    )
    await answered_by_api(system, created, "经查，民警言语不规范属实，已批评教育。")

    delivery = await first_listed(
        system, "/api/v1/deliveries", {"case_id": created["id"], "status": "failed"}, what="failed delivery"
    )
    return {"created": created, "delivery": delivery}


async def delivery_status(system: System, case_id: str) -> dict[str, str]:
    response = await system.call(
        "feedback", "GET", "/api/v1/deliveries", as_user="supervisor1", params={"case_id": case_id}
    )
    return {d["id"]: d["status"] for d in response.json()}


async def concluded_with_rectification(system: System) -> dict[str, Any]:
    created = await record(system)
    return await claimed_and_found(
        system,
        created["id"],
        {
            "outcome": "partly_substantiated",
            "summary": "民警言语不文明属实，推搡一节无法查实。",
            "rectifications": [
                {
                    "item": "全所开展文明执法教育",
                    "owner": "花园派出所所长",
                    "due_date": "2026-12-31T17:30:00+08:00",
                }
            ],
        },
    )


# --------------------------------------------------------------------------- operator


async def test_operator_reclassifies_a_matter_and_records_a_letter(open_session: Any, web: System) -> None:
    created = await record(web)
    operator = await open_session("operator1")
    page = operator.page
    page.on("dialog", lambda dialog: dialog.accept())
    await operator.goto("intake", "/operator/search")
    await page.fill("#q", created["tracking_code"])
    await page.press("#q", "Enter")
    await page.click(f"button[data-reclassify='{created['id']}']")
    await page.select_option("#rc-kind", "citizen_suggestion")
    await page.fill("#rc-reason", "来电人所提为交通管理方面的建议，不属投诉")
    await page.fill("#rc-forward", "周口市公安局交通警察支队")
    await page.click("#rc-submit")
    result = page.locator("[data-testid=reclassify-result]")
    await result.wait_for()
    assert "群众建议" in await result.inner_text()
    reread = await web.call("intake", "GET", f"/api/v1/complaints/{created['id']}", as_user="operator1")
    assert reread.json()["status"] == "reclassified"

    waiting = await failed_delivery(web)
    delivery = waiting["delivery"]
    await operator.goto("feedback", "/deliveries")
    row = page.locator(f"tr[data-delivery='{delivery['id']}']")
    await row.wait_for()
    assert waiting["created"]["tracking_code"] in await row.inner_text()
    await row.locator(".r-channel").select_option("letter")
    await row.locator(".r-note").fill("已挂号邮寄书面答复")
    await row.locator("button[type=submit]").click()
    await row.wait_for(state="detached")
    states = await delivery_status(web, waiting["created"]["id"])
    assert states[delivery["id"]] == "sent"

    # The supervisor's pages stay the supervisor's.
    operator.expected_statuses.add(403)
    for service, path in (("verification", "/audit"), ("intake", "/accounts")):
        response = await page.goto(operator.url(service, path))
        assert response.status == 403
    assert "审计记录" not in await page.inner_text("nav.mainnav")


# --------------------------------------------------------------------------- supervisor


async def test_supervisor_flags_requires_review_checks_audits_and_deactivates(
    open_session: Any, web: System
) -> None:
    flagged = await record(web)
    await task_of(web, flagged["id"])
    reviewed = await record(web)
    review_task = await task_of(web, reviewed["id"])
    rectified = await concluded_with_rectification(web)
    waiting = await failed_delivery(web, name="钱永刚")
    # An inspector reads a complainant's identity: the supervisor sees it in the log.
    read = await web.call(
        "intake",
        "GET",
        f"/api/v1/complaints/{reviewed['id']}/identity",
        as_user=f"inspector-{review_task['team_code']}",
        params={"purpose": (await purposes(web))[0], "reason": "联系投诉人核实情况"},
    )
    assert read.status_code == 200, read.text

    supervisor = await open_session("supervisor1")
    page = supervisor.page
    page.on("dialog", lambda dialog: dialog.accept())

    # Flagging a key clue on routing's case page.
    await supervisor.goto("routing", f"/cases/{flagged['id']}")
    await page.wait_for_selector("[data-testid=assignments]")
    await page.fill("#k-reason", "涉及多名民警，列为重点线索由支队直查")
    await page.click("#flag-form button[type=submit]")
    await page.wait_for_selector("[data-testid=assignments] .badge.red >> text=重点线索")

    # Requiring a cross-check review on the task page.
    await supervisor.goto("verification", f"/tasks/{review_task['id']}")
    await page.wait_for_selector("#require-review-panel:not([hidden])")
    await page.fill("#rr-reason", "群众反映强烈，需交叉复核")
    await page.click("#require-review-form button[type=submit]")
    await page.wait_for_selector("#task-badges >> text=需交叉复核")

    # Checking a rectification.
    await supervisor.goto("verification", f"/tasks/{rectified['id']}")
    check = page.locator("form.rect-check").first
    await check.wait_for()
    await check.locator(".rc-note").fill("12月20日现场检查，教育记录齐全")
    await check.locator("button[data-done='1']").click()
    await page.wait_for_selector("#rect-panel >> text=已整改")

    # The audit trail of a matter from all four services, with the chain check.
    await supervisor.goto("verification", "/audit")
    await page.fill("#a-q", reviewed["tracking_code"])
    await page.press("#a-q", "Enter")
    verdict = page.locator("[data-testid=audit-result]")
    await verdict.wait_for()
    assert "校验通过" in await verdict.inner_text()
    trail = await page.inner_text("[data-testid=audit-trail]")
    assert "登记投诉" in trail and "指定交叉复核" in trail and "查阅投诉人身份" in trail
    assert (await page.locator("[data-testid=audit-chains] tr").count()) == 4

    # The identity-access log from the search page.
    await supervisor.goto("intake", "/operator/search")
    await page.fill("#q", reviewed["tracking_code"])
    await page.press("#q", "Enter")
    await page.click(f"button[data-accesses='{reviewed['id']}']")
    log = page.locator("table[data-testid=identity-accesses]")
    await log.wait_for()
    assert f"inspector-{review_task['team_code']}" in await log.inner_text()

    # Retrying a failed delivery (it fails again: there is still no channel), then recording a call.
    delivery = waiting["delivery"]
    await supervisor.goto("feedback", "/deliveries")
    row = page.locator(f"tr[data-delivery='{delivery['id']}']")
    await row.wait_for()
    await row.locator("button[data-retry]").click()
    await page.wait_for_selector("#toast >> text=已重新发送")
    row = page.locator(f"tr[data-delivery='{delivery['id']}']")
    await row.locator(".r-channel").select_option("phone")
    await row.locator(".r-note").fill("已电话告知，对方表示知悉")
    await row.locator("button[type=submit]").click()
    await row.wait_for(state="detached")
    assert (await delivery_status(web, waiting["created"]["id"]))[delivery["id"]] == "sent"

    # Deactivating an account.
    await supervisor.goto("intake", "/accounts")
    await page.click("button[data-deactivate='inspector-411627']")
    await page.wait_for_selector("tr[data-username='inspector-411627'] >> text=已停用")
    refused = await web.call(
        "intake", "POST", "/api/v1/auth/token", data={"username": "inspector-411627", "password": "demo"}
    )
    assert refused.status_code in (401, 403)


async def purposes(system: System) -> list[str]:
    response = await system.call("intake", "GET", "/api/v1/identity-purposes", as_user="operator1")
    return list(response.json())


# --------------------------------------------------------------------------- inspectors


async def test_inspectors_give_a_co_handling_view_and_a_follow_up_reply(
    open_session: Any, web: System
) -> None:
    response = await web.call(
        "intake",
        "POST",
        "/api/v1/suggestions",
        as_user="operator1",
        json=fixtures.suggestion(co_units=["郸城县公安局"], received_at=None),
    )
    assert response.status_code == 201, response.text
    created = response.json()
    task = await task_of(web, created["id"])
    assert task["participants"] == ["411625"]

    co_handler = await open_session("inspector-411625")
    page = co_handler.page
    await co_handler.goto("verification", f"/tasks/{task['id']}")
    await page.wait_for_selector("#co-view-form:not([hidden])")
    await page.fill("#cv-view", "郸城县局同意在人口较多的行政村增设警务室，已列入明年计划。")
    await page.click("#co-view-form button[type=submit]")
    await page.wait_for_selector("[data-testid=co-views] >> text=已列入明年计划")
    assert await page.locator("#co-view-form").is_hidden()

    lead = "inspector-411600"
    claimed = await web.call("verification", "POST", f"/api/v1/tasks/{task['id']}/claim", as_user=lead)
    assert claimed.status_code == 200, claimed.text
    reply = await web.call(
        "verification",
        "POST",
        f"/api/v1/tasks/{task['id']}/finding",
        as_user=lead,
        json={
            "outcome": "no_finding",
            "no_finding_reason": "建议答复",
            "classification": "B",
            "summary": "我局已将执法权力制约机制建设列入明年工作计划，正在制定实施方案。",
        },
    )
    assert reply.status_code == 200, reply.text

    handler = await open_session(lead)
    page = handler.page
    await handler.goto("verification", f"/tasks/{task['id']}")
    await page.wait_for_selector("#follow-up-panel:not([hidden])")
    await page.select_option("#fu-class", "A")
    await page.fill("#fu-summary", "实施方案已印发执行，执法全过程记录制度已落实。")
    await page.click("#follow-up-form button[type=submit]")
    await page.wait_for_selector("#follow-up-panel[hidden]", state="attached")
    detail = await web.call("verification", "GET", f"/api/v1/tasks/{task['id']}", as_user=lead)
    assert [f.get("follow_up") for f in detail.json()["findings"]][-1] is True
