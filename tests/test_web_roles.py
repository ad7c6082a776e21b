"""Each role's main path through the web interface, in a real browser (Chromium via Playwright).

The four services run in this process on free ports with the demo matters seeded
through their APIs (services/demo_seed.py), so the pages show a living system.
The tests drive the pages as the people would, assert on what the page shows,
and check what each role must not see.  They also write the screenshots of the
main pages to docs/screenshots/.  Here: signing in, the operator, the public and
the deputies; the inspectors and the supervisor are tests/test_web_casework.py's,
on this module's seeded system (``web``).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.demo_seed import seed
from tests import fixtures
from tests.support import NatsServer, System, running_system
from tests.web_support import (
    PHONE,
    answered_by_api,
    browser,
    needs_chromium,
    open_session,
    record,
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
