"""Each role's main path through the web interface, in a real browser (Chromium via Playwright).

The four services run in this process on free ports with the demo matters seeded
through their APIs (services/demo_seed.py), so the pages show a living system.
The tests drive the pages as the people would, assert on what the page shows,
and check what each role must not see.  They also write the screenshots of the
main pages to docs/screenshots/.
"""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook

from services.demo_seed import seed
from tests import fixtures
from tests.support import NatsServer, System, running_system
from tests.web_support import (
    PHONE,
    Session,
    answered_by_api,
    browser,
    chart_series,
    needs_chromium,
    open_session,
    record,
    reload_until,
    task_of,
)

__all__ = ["browser", "open_session"]  # fixtures used by name below

pytestmark = needs_chromium


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
async def web(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[System]:
    root = tmp_path_factory.mktemp("web")
    # The ladder scheduler looks every second, so the seeded old matters are up the ladder at once.
    async with running_system(
        backend="sqlite", root=root, nats_url=nats_server.url, extra_env={"LADDER_INTERVAL_SECONDS": "1"}
    ) as system:
        served = await system.client("feedback").get("/query")
        if served.status_code != 200:
            pytest.fail(
                "feedback serves no pages: add services.feedback.web.web_router to routers=[...] in "
                "services/feedback/main.py"
            )
        said: list[str] = []
        assert await seed(system.urls, said.append), said
        # Idempotent: a second run finds the matters and leaves them alone.
        assert not await seed(system.urls, said.append)
        yield system


# --------------------------------------------------------------------------- sign-in


async def test_one_sign_in_across_services_and_sign_out(open_session: Any) -> None:
    visitor = await open_session()
    await visitor.goto("intake", "/")
    assert "/login" in visitor.page.url
    await visitor.shot("login.png")

    await visitor.sign_in("operator1", "wrong-password")
    assert "用户名或密码错误" in await visitor.text()

    # A page of another service sends the stranger to the one sign-in, and back afterwards.
    await visitor.goto("verification", "/ledger")
    assert visitor.page.url.startswith(visitor.url("intake", "/login?next="))
    await visitor.sign_in("supervisor1")
    assert visitor.page.url == visitor.url("verification", "/ledger")
    assert "长期未办结事项督办台账" in await visitor.text()

    # The cookie is the session: HttpOnly and SameSite=Strict, so no script and no other site use it.
    cookie = next(c for c in await visitor.context.cookies() if c["name"] == "sv_token")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert "sv_token" not in await visitor.page.evaluate("document.cookie")

    # Links across services keep the supervisor signed in.
    async with visitor.page.expect_navigation():
        await visitor.page.click("nav.mainnav >> text=分派规则")
    await visitor.page.wait_for_selector("[data-testid=rules]")
    assert visitor.page.url == visitor.url("routing", "/rules")
    assert "ordinary_county" in await visitor.text()

    async with visitor.page.expect_navigation():
        await visitor.page.click("text=退出登录")
    assert "/login" in visitor.page.url
    await visitor.goto("routing", "/rules")
    assert "/login" in visitor.page.url


async def test_a_role_does_not_see_another_roles_pages(open_session: Any) -> None:
    operator = await open_session("operator1")
    assert operator.page.url == operator.url("intake", "/operator/complaint")
    operator.expected_statuses.add(403)
    nav = await operator.page.inner_text("nav.mainnav")
    assert "投诉登记" in nav and "督办台账" not in nav
    response = await operator.page.goto(operator.url("verification", "/ledger"))
    assert response.status == 403
    assert "无权查看此页面" in await operator.text()
    response = await operator.page.goto(operator.url("feedback", "/deputy"))
    assert response.status == 403
    # A mistyped address: a page in Chinese with the way back, not an error in English.
    operator.expected_statuses.add(404)
    response = await operator.page.goto(operator.url("routing", "/no-such-page"))
    assert response.status == 404
    assert "您访问的页面不存在" in await operator.text()


# --------------------------------------------------------------------------- operator


async def test_operator_records_a_complaint_from_the_keyboard(open_session: Any) -> None:
    operator = await open_session("operator1")
    operator.expected_statuses.add(422)
    page = operator.page
    keyboard = page.keyboard
    assert await page.evaluate("document.activeElement.id") == "c-name"

    await keyboard.type("陈志强")
    await keyboard.press("Tab")
    # A caller with earlier matters (the demo data has two for this number): the operator is told at once.
    await keyboard.type("13803945517")
    await page.wait_for_selector("[data-testid=phone-history]")
    assert "该号码已有 2 件历史投诉" in await page.inner_text("#history")

    # Enter submits; what is missing is shown at the field, in Chinese.
    await keyboard.press("Enter")
    assert "请填写被投诉单位" in await page.inner_text("[data-field='accused.unit']")
    assert "请填写投诉人陈述的事情经过" in await page.inner_text("[data-field=account]")

    await keyboard.press("Alt+u")
    assert await page.evaluate("document.activeElement.id") == "c-unit"
    await keyboard.type("项城")
    await page.wait_for_selector(".ac-list li")
    options = await page.inner_text(".ac-list")
    assert "项城市公安局" in options
    await keyboard.press("Enter")
    assert await page.input_value("#c-unit") == "项城市公安局"
    assert await page.input_value("#c-county") == "411681"
    await keyboard.type("花园派出所")

    await keyboard.press("Alt+c")
    await keyboard.press("2")  # the categories are numbered for type-ahead
    assert await page.input_value("#c-category") == "态度粗暴"
    await keyboard.press("Alt+a")
    await keyboard.type("民警在接待时言语粗暴，拒绝告知扣车依据。")

    # The server's own checks are shown at the field too: a time in the future is refused.
    await page.fill("#c-received", "2099-01-01T10:00")
    await keyboard.press("Control+Enter")
    await page.wait_for_selector("[data-field=received_at].invalid")
    assert "受理时间不能晚于当前时间" in await page.inner_text("[data-field=received_at]")
    await page.fill("#c-received", "")
    await page.focus("#c-account")
    await keyboard.press("Control+Enter")

    receipt = page.locator("[data-testid=receipt]")
    await receipt.wait_for()
    code = await page.inner_text("[data-testid=tracking-code]")
    secret = await page.inner_text("[data-testid=query-secret]")
    assert re.fullmatch(r"C\d{6}[0-9A-Z]{6}", code)
    sms = await page.inner_text("[data-testid=sms-text]")
    assert code in sms and secret in sms and "/query" in sms
    # Same caller, same bureau within the repeat window: flagged while the caller is still on the line.
    assert "重复件" in await page.inner_text("#receipt")
    assert await page.locator("[data-testid=earlier-matters]").count() == 1
    await operator.shot("operator-complaint.png")
    # The form is empty again and the cursor waits for the next caller.
    assert await page.input_value("#c-name") == ""
    assert await page.evaluate("document.activeElement.id") == "c-name"


async def test_operator_records_a_suggestion_from_the_keyboard(open_session: Any, web: System) -> None:
    operator = await open_session("operator1")
    operator.expected_statuses.add(409)
    await operator.goto("intake", "/operator/suggestion")
    page = operator.page
    keyboard = page.keyboard
    assert await page.evaluate("document.activeElement.id") == "s-kind"
    await keyboard.press("Tab")
    await keyboard.press("Tab")
    await keyboard.type("0201")
    await keyboard.press("Tab")
    await keyboard.type("关于加强农村地区交通安全宣传的建议")
    await keyboard.press("Tab")
    await keyboard.type("马刚")
    await keyboard.press("Tab")
    await keyboard.type("川汇区代表团")
    await keyboard.press("Tab")
    await keyboard.type("1380394")  # too short: the check at the field says so as they type
    await keyboard.press("Tab")
    assert "电话号码格式不正确" in await page.inner_text("[data-field='deputy.phone']")
    await page.focus("#s-phone")
    await keyboard.type("0101")
    await keyboard.press("Tab")
    assert await page.inner_text("[data-field='deputy.phone'] .field-error") == ""
    await keyboard.press("Alt+u")
    await keyboard.type("周口市公安局交通")
    await page.wait_for_selector(".ac-list li")
    await keyboard.press("Enter")
    assert await page.input_value("#s-lead") == "周口市公安局交通警察支队"
    await keyboard.press("Alt+a")
    await keyboard.type("建议在农村集市、学校周边开展常态化交通安全宣传。")
    await keyboard.press("Control+Enter")
    await page.wait_for_selector("[data-testid=receipt]")
    code = await page.inner_text("[data-testid=tracking-code]")
    assert code.startswith("S")
    await operator.shot("operator-suggestion.png")

    # The same number again: the server's 409 is shown at the number field.
    await page.fill("#s-number", "0201")
    await page.fill("#s-title", "重复登记")
    await page.fill("#s-deputy", "马刚")
    await page.fill("#s-delegation", "川汇区代表团")
    await page.fill("#s-lead", "周口市公安局")
    await page.fill("#s-text", "重复")
    await page.press("#s-title", "Enter")
    await page.wait_for_selector("[data-field=number].invalid")
    assert "已登记" in await page.inner_text("[data-field=number]")


async def test_operator_finds_matters_by_phone_or_code(open_session: Any) -> None:
    operator = await open_session("operator1")
    await operator.goto("intake", "/operator/search")
    page = operator.page
    await page.keyboard.type("13803945517")
    await page.keyboard.press("Enter")
    table = page.locator("[data-testid=complaint-results]")
    await table.wait_for()
    text = await table.inner_text()
    assert "项城市公安局花园派出所" in text
    # Lists show the caller masked, never the full name or number.
    assert "陈志强" not in text and "13803945517" not in text
    await operator.shot("operator-search.png")


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


# --------------------------------------------------------------------------- the public and deputies


async def test_public_query_shows_the_answer_and_takes_a_rating(open_session: Any, web: System) -> None:
    created = await record(
        web,
        complainant={"name": "蒋秀梅", "phone": "13703946630"},
        accused={
            "unit": "周口市公安局川汇分局人和派出所",
            "county_code": "411602",
            "officer_name": "钱某",
            "badge_no": "043321",
        },
        category="态度粗暴",
        account="民警钱某接警时对我大声呵斥。",
    )
    await answered_by_api(web, created, "经核查，出警民警语言不规范问题属实，已对其进行批评教育。")

    public = await open_session(viewport=PHONE)
    public.expected_statuses.add(404)
    await public.goto("feedback", "/query")
    page = public.page
    await page.fill("#q-code", created["tracking_code"])
    await page.fill("#q-secret", "WRONG-SECRET")
    await page.press("#q-secret", "Enter")
    await page.wait_for_selector("[data-field=query_secret].invalid")
    assert "查询码或查询密码不正确" in await page.inner_text("[data-field=query_secret]")

    await page.fill("#q-secret", created["query_secret"])
    await page.press("#q-secret", "Enter")
    await page.wait_for_selector("[data-testid=answer]")
    assert await page.inner_text("[data-testid=public-status]") == "已答复"
    assert "已对其进行批评教育" in await page.inner_text("[data-testid=answer]")
    shown = await public.text()
    for private in ("蒋秀梅", "13703946630", "钱某", "043321", "inspector-"):
        assert private not in shown, private
    await public.shot("public-query.png")

    await page.check("#rating input[value=unsatisfied]")
    await page.click("#rating button[type=submit]")
    assert "请写明理由" in await page.inner_text("#rating [data-field=reason]")
    await page.check("#rating input[value=satisfied]")
    await page.click("#rating button[type=submit]")
    await page.wait_for_selector("[data-testid=rating-done]")
    assert "感谢您的评价" in await page.inner_text("[data-testid=rating-done]")
    await page.wait_for_selector("#rating", state="hidden")
    assert "满意" in await page.inner_text("#r-facts")


async def test_deputy_sees_only_their_suggestions_and_rates_the_reply(open_session: Any, web: System) -> None:
    other = await web.call(
        "intake",
        "POST",
        "/api/v1/suggestions",
        as_user="operator1",
        json=fixtures.suggestion(
            title="关于加强淮阳区龙湖景区节假日警力的建议",
            deputy={"name": "李红", "delegation": "淮阳区代表团", "phone": "13800000102"},
        ),
    )
    assert other.status_code == 201, other.text

    deputy = await open_session("deputy1", viewport=PHONE)
    assert deputy.page.url == deputy.url("feedback", "/deputy")
    page = deputy.page
    reply = page.locator("[data-testid=suggestion]", has_text="学校周边增设交通安全警示设施")
    await reply.wait_for()
    assert "减速带" in await reply.locator("[data-testid=reply]").inner_text()
    assert "周口市公安局" in await reply.inner_text()
    assert "期限" in await reply.inner_text()
    assert "龙湖景区" not in await deputy.text()
    await deputy.shot("deputy.png")

    async with page.expect_download() as download_info:
        await reply.locator("[data-testid=letter]").click()
    letter = await download_info.value
    assert letter.suggested_filename.endswith(".docx")

    await reply.locator("input[value=satisfied]").check()
    await reply.locator("button[type=submit]").click()
    await page.wait_for_selector("#toast")
    reply = page.locator("[data-testid=suggestion]", has_text="学校周边增设交通安全警示设施")
    await reply.locator("text=您的评价：满意").wait_for()
    assert await reply.locator("form.rate-form").count() == 0
