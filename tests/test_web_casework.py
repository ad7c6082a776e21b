"""The inspectors' and the supervisor's main paths through the web interface, in a real browser.

An inspector claims a task, records evidence and a finding and hands it in for another team's
cross-check.  The supervisor reads the dashboard, approves an answer and an extension, exports
the ledger and opens the routing pages and the pages of the controls.  The seeded system
(``web``: the four services with the demo matters) is tests/test_web_roles.py's, started
afresh for this module; the tests write their screenshots to docs/screenshots/ too.
"""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path
from typing import Any

from openpyxl import load_workbook

from tests import fixtures
from tests.support import System
from tests.test_web_roles import web
from tests.web_support import (
    Session,
    browser,
    chart_series,
    needs_chromium,
    open_session,
    record,
    reload_until,
    task_of,
)

__all__ = ["browser", "open_session", "web"]  # fixtures used by name below

pytestmark = needs_chromium


# --------------------------------------------------------------------------- inspectors


async def test_inspector_claims_records_a_finding_and_hands_in_for_review(
    open_session: Any, web: System
) -> None:
    created = await record(
        web,
        complainant={"name": "韩立新", "phone": "13903948812"},
        accused={
            "unit": "沈丘县公安局槐店派出所",
            "county_code": "411624",
            "officer_name": "孟某",
            "badge_no": "045566",
        },
        category="吃拿卡要",
        place="沈丘县槐店回族镇",
        incident_at=None,
        account="办理户籍证明时，民警孟某暗示需要请客送礼，否则拖着不办。",
    )
    task = await task_of(web, created["id"])
    # A serious matter: the city team leads and another team cross-checks the finding.
    assert task["team_code"] == "411600" and task["review_required"]
    reviewer_team = task["review_team_code"]
    assert reviewer_team and reviewer_team != task["team_code"]

    inspector = await open_session("inspector-411600")
    page = inspector.page
    assert page.url == inspector.url("verification", "/tasks")
    row = page.locator(f"tr[data-task='{task['id']}']")
    await reload_until(inspector, f"tr[data-task='{task['id']}']")
    assert "剩" in await row.inner_text()
    await inspector.shot("inspector-board.png")

    await row.locator("button[data-claim]").click()
    await page.wait_for_url(re.compile(r".*/tasks/" + task["id"] + "$"))
    await page.wait_for_selector("#finding-form:not([hidden])")
    assert "您已认领本任务" in await page.inner_text("[data-testid=task-status]")
    # No complainant identity on the task until asked for, with a reason, and then from intake.
    assert "韩立新" not in await inspector.text()
    await page.wait_for_selector("#identity-purpose option[value='核查需要']", state="attached")
    await page.select_option("#identity-purpose", "核查需要")
    await page.fill("#identity-reason", "联系投诉人了解情况")
    await page.click("#show-identity")
    await page.wait_for_selector("#identity >> text=韩立新")

    await page.select_option("#e-kind", "recording")
    await page.fill("#e-desc", "接待窗口监控录像")
    await page.set_input_files(
        "#e-file",
        files=[{"name": "jiedai.mp4", "mimeType": "video/mp4", "buffer": b"\x00\x00\x00\x18ftypmp42"}],
    )
    await page.click("#e-submit")
    await page.wait_for_selector("[data-testid=evidence-list] >> text=接待窗口监控录像")

    await page.fill("#x-days", "10")
    await page.fill("#x-reason", "需调取银行流水核实，现有期限内难以完成")
    await page.click("#extension-form button[type=submit]")
    await page.wait_for_selector("#extensions >> text=待审批")

    # Submitting without a summary: the check shows at the field.
    await page.select_option("#f-outcome", "partly_substantiated")
    await page.click("#f-submit")
    assert "请填写核查情况" in await page.inner_text("[data-field=summary]")
    await page.fill("#f-summary", "经调取监控录像和询问当事人，民警存在刁难群众问题，未发现索要财物的证据。")
    await page.fill("#f-facts", "孟某在办理过程中多次推诿，未一次性告知所需材料。")
    officer = page.locator(".officer-row").first
    assert await officer.locator(".o-name").input_value() == "孟某"
    await officer.locator("text=批评教育").click()
    await page.click("#f-add-rect")
    await page.fill(".rect-row .r-item", "槐店派出所开展窗口服务作风整顿")
    await page.fill(".rect-row .r-owner", "槐店派出所所长")
    await page.fill(".rect-row .r-due", "2027-01-15")
    await inspector.shot("inspector-task.png")
    assert await page.inner_text("#f-submit") == "提交结论并移交复核"
    await page.click("#f-submit")
    await page.wait_for_selector("#finding-form", state="hidden")
    await page.wait_for_selector("[data-testid=task-status]:has-text('等待交叉复核队复核')")

    # Another county's inspector is shown nothing of this matter.
    other_team = next(code for code in ("411621", "411627") if code != reviewer_team)
    stranger = await open_session(f"inspector-{other_team}")
    stranger.expected_statuses.add(404)
    await stranger.page.wait_for_selector("[data-testid=task-board], [data-testid=no-tasks]")
    assert created["tracking_code"] not in await stranger.text()
    await stranger.goto("verification", f"/tasks/{task['id']}")
    await stranger.page.wait_for_selector("[data-testid=load-error]")
    assert "不属于本队" in await stranger.text()
    assert "孟某" not in await stranger.text()

    # The cross-check: the reviewing team finds it under 待本队复核 and confirms.
    reviewer = await open_session(f"inspector-{reviewer_team}")
    await reviewer.page.click("text=待本队复核")
    link = reviewer.page.locator(f"tr[data-task='{task['id']}'] a[href$='/review']")
    await link.click()
    await reviewer.page.wait_for_selector("#review-form:not([hidden])")
    assert "未发现索要财物的证据" in await reviewer.page.inner_text("#finding")
    await reviewer.page.click("#v-submit")
    assert "请选择复核决定" in await reviewer.page.inner_text("[data-field=decision]")
    await reviewer.page.check("input[value=send_back]")
    await reviewer.page.click("#v-submit")
    assert "退回重查需写明理由" in await reviewer.page.inner_text("[data-field=reasons]")
    await reviewer.page.check("input[value=confirm]")
    await reviewer.page.fill("#v-reasons", "证据充分，认定恰当")
    await reviewer.shot("reviewer.png")
    await reviewer.page.click("#v-submit")
    await reviewer.page.wait_for_selector("[data-testid=review-state]")
    assert "复核已完成" in await reviewer.page.inner_text("[data-testid=review-state]")
    await task_of(web, created["id"], statuses=("concluded",))


# --------------------------------------------------------------------------- supervisor


async def test_supervisor_approves_and_exports_the_ledger(open_session: Any, web: System) -> None:
    created = await record(
        web,
        complainant={"name": "邵文华", "phone": "13603941122"},
        accused={
            "unit": "郸城县公安局交警大队",
            "county_code": "411625",
            "officer_name": None,
            "badge_no": None,
        },
        category="执法不规范",
        account="交警大队处理事故时未出具事故认定书。",
    )
    task = await task_of(web, created["id"])
    inspector = f"inspector-{task['team_code']}"
    await web.call("verification", "POST", f"/api/v1/tasks/{task['id']}/claim", as_user=inspector)
    found = await web.call(
        "verification",
        "POST",
        f"/api/v1/tasks/{task['id']}/finding",
        as_user=inspector,
        json={
            "outcome": "substantiated",
            "summary": "经查，事故处理民警未按规定出具事故认定书，反映属实，已督促补发。",
        },
    )
    assert found.status_code == 200, found.text

    supervisor = await open_session("supervisor1")
    supervisor.expected_statuses.add(422)
    assert supervisor.page.url == supervisor.url("verification", "/dashboard")
    await supervisor.page.wait_for_selector("#chart-weekly canvas")
    assert "按期办结率" in await supervisor.page.inner_text("#kpis")
    volume = await chart_series(supervisor.page, "chart-volume")
    assert volume and any(v for s in volume if s["type"] == "bar" for v in s["data"])
    assert "项城市" in await supervisor.page.inner_text("[data-testid=stats-table]")
    # Satisfaction comes from feedback and repeats from intake, fetched across origins (CORS).
    await supervisor.page.wait_for_selector("#chart-satisfaction canvas")
    await supervisor.page.wait_for_selector("#chart-repeat canvas")
    # Per team as well as per county, and the weekly figures of one of them.
    await supervisor.page.click("#by >> text=按督察队")
    await supervisor.page.wait_for_selector("[data-testid=stats-table] >> text=项城市公安局督察大队")
    await supervisor.page.select_option("#weekly-group", "411681")
    await supervisor.page.wait_for_selector("#chart-weekly canvas")
    assert [s["type"] for s in await chart_series(supervisor.page, "chart-weekly") or []] == ["line", "line"]
    await supervisor.page.click("#by >> text=按县（市、区）")
    await supervisor.page.wait_for_selector("[data-testid=stats-table] th >> text=县（市、区）")
    await supervisor.page.select_option("#weekly-group", "")
    await supervisor.shot("supervisor-dashboard.png")

    await supervisor.goto("verification", "/approvals")
    card = supervisor.page.locator("form.answer-card", has_text=created["tracking_code"])
    await reload_until(supervisor, f"form.answer-card:has-text('{created['tracking_code']}')")
    assert "已督促补发" in await card.locator("textarea").input_value()
    extension = supervisor.page.locator("form.extension-decision").first
    await extension.wait_for()
    await supervisor.shot("supervisor-approvals.png")
    # The supervisor edits the draft (a PUT to feedback, preflighted across origins) and publishes it.
    edited = (await card.locator("textarea").input_value()).replace(
        "已督促补发", "已督促当事民警补发事故认定书"
    )
    await card.locator("textarea").fill(edited)
    await card.locator("[data-approve]").click()
    await supervisor.page.wait_for_selector("[data-testid=answer-approved]")
    published = await web.call(
        "feedback", "GET", "/api/v1/answers", as_user="supervisor1", params={"case_id": created["id"]}
    )
    assert [a["status"] for a in published.json()] == ["delivered"]
    assert "已督促当事民警补发事故认定书" in published.json()[0]["text"]
    await extension.locator("button[data-approve='0']").click()
    await extension.locator(".field-error", has_text="不批准延期需说明理由").wait_for()
    await extension.locator("button[data-approve='1']").click()
    await supervisor.page.wait_for_selector("text=已批准，期限延至")

    await supervisor.goto("verification", "/ledger")
    ledger = supervisor.page.locator("[data-testid=ledger]")
    await ledger.wait_for()
    assert "通报" in await ledger.inner_text()  # a seeded matter 41 days old went up the whole ladder
    await supervisor.shot("supervisor-ledger.png")
    await supervisor.page.fill("#l-age", "0")
    await supervisor.page.select_option("#l-county", "411624")
    await supervisor.page.click("#filters button[type=submit]")
    await supervisor.page.wait_for_selector("[data-testid=ledger] >> text=沈丘县")
    async with supervisor.page.expect_download() as download_info:
        await supervisor.page.click("#export")
    download = await download_info.value
    assert download.suggested_filename.endswith(".xlsx")
    saved = await download.path()
    workbook = load_workbook(io.BytesIO(await asyncio.to_thread(Path(saved).read_bytes)))
    sheet = workbook.active
    assert "督办台账" in str(sheet.cell(row=1, column=1).value)
    assert "沈丘县" in str(sheet.cell(row=2, column=1).value)
    counties = {sheet.cell(row=r, column=5).value for r in range(4, sheet.max_row + 1)}
    assert counties == {"沈丘县"}

    await supervisor.goto("routing", f"/cases/{created['id']}")
    await supervisor.page.wait_for_selector("[data-testid=assignments]")
    assert "郸城县公安局督察大队" in await supervisor.page.inner_text("[data-testid=assignments]")
    await supervisor.shot("supervisor-assignment.png")
    await supervisor.goto("routing", "/rules")
    await supervisor.page.wait_for_selector("[data-testid=rules]")
    await supervisor.shot("supervisor-rules.png")
    await supervisor.goto("routing", "/org")
    await supervisor.page.wait_for_selector("[data-testid=teams]")
    await supervisor.shot("supervisor-org.png")


# The pages of the actions that once were API-only (tests/test_web_controls.py drives their
# controls): (who, service, path, what shows the page is drawn, screenshot).
CONTROL_PAGES = (
    (
        "supervisor1",
        "verification",
        "/audit?case_id={case}",
        "[data-testid=audit-trail]",
        "supervisor-audit.png",
    ),
    (
        "supervisor1",
        "verification",
        "/tasks/{task}",
        "#require-review-panel:not([hidden])",
        "supervisor-task.png",
    ),
    ("supervisor1", "intake", "/accounts", "[data-testid=accounts]", "supervisor-accounts.png"),
    (
        "operator1",
        "feedback",
        "/deliveries",
        "[data-testid=deliveries], [data-testid=no-deliveries]",
        "operator-deliveries.png",
    ),
)


async def test_pages_of_the_controls_have_their_screenshots(open_session: Any, web: System) -> None:
    created = await record(web)
    await task_of(web, created["id"])
    response = await web.call(
        "intake",
        "POST",
        "/api/v1/suggestions",
        as_user="operator1",
        json=fixtures.suggestion(number="9101", co_units=["郸城县公安局"], received_at=None),
    )
    assert response.status_code == 201, response.text
    co_handled = await task_of(web, response.json()["id"])
    sessions: dict[str, Session] = {}
    for user, service, path, ready, name in CONTROL_PAGES:
        if user not in sessions:
            sessions[user] = await open_session(user)
        session = sessions[user]
        await session.goto(service, path.format(case=created["id"], task=co_handled["id"]))
        await session.page.wait_for_selector(ready)
        await session.shot(name)
