"""The supervision controls of issues 12 and 15, driven in a real browser, and their screenshots.

待办 (with the bell in the top bar) for a supervisor, an inspector and a county's leader; the
ledger's mark removal and 销号 with the 待答复/待审批/待回访 section, and the leader's read-only
ledger of their own county; the dashboard's 预警 panel, its threshold editor and the 通知送达
panel; the bureaus' leaders on the 组织机构 page; the 消息记录 log, masked; the operators' Excel
import with its progress and per-row results; and the Open311 keys, issued once and revoked.

The browser set-up (Chromium, one session per person) is tests/web_support.py's.  The services
run here without the demo matters but with the demo SMS and mail sinks (so messages are sent and
logged) and a ladder that looks every second (so an old matter is up the ladder at once).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from services.cli.demosinks import point_feedback_at, running_sinks
from shared.reference import load_organisation
from tests import fixtures
from tests import web_support as browsing
from tests.support import NatsServer, System, eventually, running_system
from tests.test_feedback_support import outside_world_env
from tests.test_imports import good_row, workbook
from tests.test_pagination import all_pages
from tests.web_support import Session, answered_by_api, record, reload_until, task_of

# The browser, the sessions and the skip without Chromium are tests/web_support.py's.
pytestmark = browsing.needs_chromium
browser = browsing.browser
open_session = browsing.open_session

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
LEADER = "leader-411624"
SHENQIU = {
    "unit": "沈丘县公安局槐店派出所",
    "county_code": "411624",
    "officer_name": "孟某",
    "badge_no": "045566",
}


@pytest.fixture(scope="module")
async def web(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[System]:
    """The four services, feedback sending through the demo sinks, the ladder looking every second."""
    async with running_sinks(lambda text, name: None) as sinks:
        env = outside_world_env(gateway=None, mailbox=None) | {"LADDER_INTERVAL_SECONDS": "1"}
        assert point_feedback_at(sinks, env, lambda text, name: None)
        async with running_system(
            backend="sqlite",
            root=tmp_path_factory.mktemp("web-supervision"),
            nats_url=nats_server.url,
            extra_env=env,
        ) as system:
            yield system


# --------------------------------------------------------------------------- helpers via the API


async def old_matter(system: System, **overrides: Any) -> dict[str, Any]:
    """A complaint about 沈丘 received months ago: every step of the ladder is already due."""
    return await record(
        system,
        received_at="2026-08-03T09:14:00+08:00",
        incident_at="2026-08-01T20:30:00+08:00",
        accused=SHENQIU,
        **overrides,
    )


async def notifications_of(system: System, user: str, tracking_code: str) -> list[dict[str, Any]]:
    response = await system.call(
        "feedback", "GET", "/api/v1/notifications", as_user=user, params={"open": "true", "limit": 200}
    )
    assert response.status_code == 200, response.text
    return [n for n in response.json() if n["tracking_code"] == tracking_code]


async def settled_unread(system: System, user: str, tracking_code: str) -> int:
    """The bell's number once ``user`` has an unread item of the matter and nothing more arrives."""

    async def probe() -> bool:
        return any(not n["read_at"] for n in await notifications_of(system, user, tracking_code))

    await eventually(probe, timeout=30.0, what=f"a notification of {tracking_code} for {user}")
    seen: list[int] = []

    async def steady() -> bool:
        response = await system.call("feedback", "GET", "/api/v1/notifications/summary", as_user=user)
        seen.append(int(response.json()["unread"]))
        return len(seen) >= 3 and seen[-1] == seen[-2] == seen[-3]

    await eventually(steady, timeout=30.0, interval=1.0, what=f"{user}'s unread count settled")
    return seen[-1]


async def bell_shows(session: Session, count: int) -> None:
    await session.page.wait_for_function(
        "n => { const c = document.querySelector('[data-bell-count]'); return c && c.textContent === n; }",
        arg=str(count),
    )


async def read_and_handle(session: Session, system: System, user: str, tracking_code: str) -> None:
    """On 待办: the item of the matter is listed, 标为已读 takes one off the bell, 已处理 closes it."""
    unread = await settled_unread(system, user, tracking_code)
    assert unread >= 1
    page = session.page
    await session.goto("feedback", "/todo")
    row = page.locator("tr[data-item]", has_text=tracking_code).first
    await row.wait_for()
    await bell_shows(session, unread)
    item = await row.get_attribute("data-item")
    mine = page.locator(f"tr[data-item='{item}']")
    await mine.locator("[data-read]").click()
    await mine.locator(".badge", has_text=re.compile("^已读$")).wait_for()
    await bell_shows(session, unread - 1)
    await mine.locator("[data-handle]").click()
    await mine.locator(".badge.green", has_text="已处理").wait_for()
    assert await mine.locator("[data-read], [data-handle]").count() == 0
    handled = [n for n in await notifications_of(system, user, tracking_code) if n["id"] == item]
    assert not handled  # no longer open


async def mark(system: System, case_id: str, which: str, **extra: str) -> None:
    response = await system.call(
        "verification",
        "POST",
        f"/api/v1/ledger/{case_id}/marks",
        as_user="supervisor1",
        json={"mark": which, **extra},
    )
    assert response.status_code in (200, 201), response.text


async def ledger_cases(system: System, user: str = "supervisor1", **params: str) -> dict[str, dict[str, Any]]:
    rows = await all_pages(system, "verification", "/api/v1/ledger", user, {"min_age_days": "0", **params})
    return {row["case_id"]: row for row in rows}


# --------------------------------------------------------------------------- 待办 and the bell


async def test_supervisor_and_inspector_read_and_handle_their_todo(open_session: Any, web: System) -> None:
    created = await old_matter(web)
    task = await task_of(web, created["id"])
    code = created["tracking_code"]

    supervisor = await open_session("supervisor1")
    await read_and_handle(supervisor, web, "supervisor1", code)
    # The supervisor's 待办 also lists what waits for their approval.
    await supervisor.page.wait_for_selector("#t-extensions .empty, [data-testid=todo-extensions]")
    await supervisor.page.wait_for_selector("#t-answers .empty, [data-testid=todo-answers]")
    await supervisor.shot("supervisor-todo.png")

    inspector_name = f"inspector-{task['team_code']}"
    inspector = await open_session(inspector_name)
    await read_and_handle(inspector, web, inspector_name, code)
    assert "待审批的延期申请" not in await inspector.text()


async def test_leader_reads_todo_and_their_countys_ledger_only(open_session: Any, web: System) -> None:
    created = await old_matter(web)
    await task_of(web, created["id"])
    elsewhere = await record(web, received_at="2026-08-03T09:14:00+08:00", incident_at=None)
    await task_of(web, elsewhere["id"])

    leader = await open_session(LEADER)
    await read_and_handle(leader, web, LEADER, created["tracking_code"])
    await leader.shot("leader-todo.png")

    # The ledger: their county, fixed; no supervisor's action on it.
    page = leader.page
    await leader.goto("verification", "/ledger")
    ledger = page.locator("[data-testid=ledger]")
    await reload_until(leader, f"[data-testid=ledger] >> text={created['tracking_code']}")
    assert await page.locator("#l-county").is_disabled()
    assert await page.input_value("#l-county") == "411624"
    text = await ledger.inner_text()
    assert elsewhere["tracking_code"] not in text and "项城市" not in text
    assert await page.locator("[data-mark], [data-unmark], [data-close-off]").count() == 0
    await page.wait_for_selector("[data-testid=waiting], #waiting .empty:not(:has-text('正在加载'))")
    # Asking the API for another county still gives their own.
    rows = await ledger_cases(web, LEADER, county="411681")
    assert created["id"] in rows and elsewhere["id"] not in rows


# --------------------------------------------------------------------------- the ledger


async def test_supervisor_removes_a_mark_and_closes_a_matter_off(open_session: Any, web: System) -> None:
    marked = await record(web)
    await task_of(web, marked["id"])
    await mark(web, marked["id"], "supervised")
    await mark(web, marked["id"], "leader_assigned", leader="周口市公安局副局长张某")
    finished = await record(web)
    await answered_by_api(web, finished, "经查，民警言语不规范属实，已批评教育。")
    await task_of(web, finished["id"], statuses=("concluded",))
    await mark(web, finished["id"], "supervised")

    async def finished_on_ledger() -> dict[str, Any] | None:
        # The task can conclude before verification has projected the matter it belongs to.
        return (await ledger_cases(web)).get(finished["id"])

    assert not (await eventually(finished_on_ledger, what="the finished matter on the ledger"))["pending"]

    supervisor = await open_session("supervisor1")
    page = supervisor.page
    reasons: list[str] = []
    page.on("dialog", lambda dialog: dialog.accept(reasons.pop(0)) if reasons else dialog.dismiss())
    await supervisor.goto("verification", "/ledger")
    await page.fill("#l-age", "0")
    await page.click("#filters button[type=submit]")
    row = page.locator("[data-testid=ledger] tr", has_text=marked["tracking_code"])
    await row.wait_for()
    # The 待答复/待审批/待回访 section, from feedback's clocks: the finished matter's answer waits.
    await page.wait_for_selector(f"[data-testid=waiting] >> text={finished['tracking_code']}")

    reasons.append("已由支队直接督办，撤销领导包案")
    await row.locator("[data-unmark=leader_assigned]").click()
    await page.wait_for_selector("#toast >> text=已撤销领导包案标记")
    row = page.locator("[data-testid=ledger] tr", has_text=marked["tracking_code"])
    await row.locator("[data-unmark=supervised]").wait_for()
    assert await row.locator("[data-unmark=leader_assigned]").count() == 0
    assert (await ledger_cases(web))[marked["id"]]["marks"] == ["supervised"]

    closing = page.locator("[data-testid=ledger] tr", has_text=finished["tracking_code"])
    assert await closing.locator("[data-close-off]").count() == 1
    assert await row.locator("[data-close-off]").count() == 0  # still being verified: it stays
    await supervisor.shot("supervisor-ledger-closeoff.png")
    reasons.append("已办结并答复，督办事项全部落实，挂账销号")
    await closing.locator("[data-close-off]").click()
    await page.wait_for_selector("#toast >> text=已销号")
    await closing.wait_for(state="detached")
    assert finished["id"] not in await ledger_cases(web)


# --------------------------------------------------------------------------- the dashboard


async def test_supervisor_sees_warnings_and_changes_the_thresholds(open_session: Any, web: System) -> None:
    supervisor = await open_session("supervisor1")
    supervisor.expected_statuses.add(422)
    page = supervisor.page
    await supervisor.goto("verification", "/dashboard")
    await page.wait_for_selector("#thresholds:not([hidden]) #t-complaints-count")

    # A bad value: refused at the field, in Chinese, and nothing changes.
    await page.fill("#t-complaints-count", "0")
    await page.fill("#t-reason", "测试")
    await page.click("#thresholds button[type=submit]")
    error = page.locator("#thresholds .field-error:not(:empty)").first
    await error.wait_for()
    assert "不能小于 1" in await error.inner_text()
    before = await web.call("verification", "GET", "/api/v1/warning-thresholds", as_user="supervisor1")
    assert {t["measure"]: t["count"] for t in before.json()}["complaints"] == 3

    await page.fill("#t-complaints-count", "2")
    await page.fill("#t-reason", "近期群众反映集中，预警门槛下调为12个月内2次")
    await page.click("#thresholds button[type=submit]")
    await page.wait_for_selector("#toast >> text=预警门槛已保存")
    after = await web.call("verification", "GET", "/api/v1/warning-thresholds", as_user="supervisor1")
    complaints = next(t for t in after.json() if t["measure"] == "complaints")
    assert complaints["count"] == 2 and "下调" in complaints["reason"]

    badge = f"09{fixtures.unique_mobile()[-4:]}"
    for _ in range(2):
        created = await record(web, accused={**SHENQIU, "officer_name": "周某", "badge_no": badge})
    await task_of(web, created["id"])

    async def warned() -> bool:
        response = await web.call("verification", "GET", "/api/v1/warnings", as_user="supervisor1")
        # The matters' tracking codes come with verification's copy of each matter, a moment later.
        return any(
            w["subject_key"] == badge and all(m["tracking_code"] for m in w["matters"])
            for w in response.json()
        )

    await eventually(warned, timeout=30.0, what="early warning of the officer")
    await supervisor.goto("verification", "/dashboard")
    await page.wait_for_selector(f"[data-testid=warnings] >> text={badge}")
    assert created["tracking_code"] in await page.inner_text("[data-testid=warnings]")
    stats = page.locator("#notification-stats")
    await page.wait_for_selector(
        "#notification-stats table, #notification-stats .empty:not(:has-text('正在加载'))"
    )
    assert "暂不可用" not in await stats.inner_text()
    await page.locator("[data-testid=warnings-panel]").scroll_into_view_if_needed()
    await supervisor.shot("supervisor-warnings.png")


async def test_dashboard_draws_the_county_map_the_12345_measures_and_saves_a_png(
    open_session: Any, web: System
) -> None:
    created = await record(web, accused=SHENQIU)
    await task_of(web, created["id"])
    supervisor = await open_session("supervisor1")
    page = supervisor.page
    await supervisor.goto("verification", "/dashboard")

    # The map: one region per county, each coloured by its complaints per 10,000 residents.
    await page.wait_for_selector("#chart-map canvas")
    counties = {c.name: c for c in load_organisation().counties.values()}
    series = await browsing.chart_series(page, "chart-map")
    assert series and [s["type"] for s in series] == ["map"]
    values = {d["name"]: d["value"] for d in series[0]["data"]}
    assert set(values) == set(counties)
    assert values["沈丘县"] > 0 and all(v >= 0 for v in values.values())
    regions = await page.evaluate(
        "() => SV.chart.of(document.getElementById('chart-map')).getModel().getSeriesByType('map')[0]"
        ".getData().count()"
    )
    assert regions == len(counties)

    # 12345 考核指标: the seven measures, each with its definition printed under the table.
    await page.wait_for_selector("[data-testid=measures-table]")
    answer = await web.call(
        "verification",
        "GET",
        "/api/v1/measures",
        as_user="supervisor1",
        params={"start": "2026-01-01", "end": "2026-12-31", "by": "county"},
    )
    assert answer.status_code == 200, answer.text
    definitions = answer.json()["definitions"]
    names = ["响应率", "办结率", "按期办结率", "解决率", "满意率", "属实率", "重复投诉率"]
    assert sorted(d["name"] for d in definitions) == sorted(names)
    head = await page.inner_text("[data-testid=measures-table] thead")
    listed = await page.inner_text("[data-testid=measure-definitions]")
    for d in definitions:
        assert d["name"] in head
        assert d["definition"] in listed
    assert await page.locator("[data-testid=measure-definitions] dt").count() == len(names)
    # Another period: 本年, then a chosen one.
    await page.click("#measures-period >> text=本年")
    await page.wait_for_selector("#measures-hint >> text=-01-01 至")
    await page.click("#measures-period >> text=自定义")
    await page.fill("#measures-start", "2026-01-01")
    await page.fill("#measures-end", "2026-06-30")
    await page.click("#measures-apply")
    await page.wait_for_selector("#measures-hint >> text=2026-01-01 至 2026-06-30")
    await page.wait_for_selector("[data-testid=measures-table]")

    # PNG: from the chart itself, and from its 保存为图片 button (a download).
    url = await page.evaluate(
        "() => SV.chart.of(document.getElementById('chart-map')).getDataURL({ type: 'png', pixelRatio: 1 })"
    )
    assert url.startswith("data:image/png;base64,")
    await page.locator("[data-testid=map-panel]").scroll_into_view_if_needed()
    # The button is drawn on the canvas: where ECharts laid it out, in the page's coordinates.
    button = await page.evaluate(
        """() => { const node = document.getElementById('chart-map'); const chart = SV.chart.of(node);
          const view = chart.getViewOfComponentModel(chart.getModel().getComponent('toolbox'));
          const r = view.group.getBoundingRect().clone(); r.applyTransform(view.group.getComputedTransform());
          const box = node.querySelector('.chart-box').getBoundingClientRect();
          return { x: box.left + r.x + r.width / 2, y: box.top + r.y + r.height / 2 }; }"""
    )
    async with page.expect_download() as download:
        await page.mouse.click(button["x"], button["y"])
    saved = await download.value
    assert saved.suggested_filename.endswith(".png")
    png = await asyncio.to_thread(Path(await saved.path()).read_bytes)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    await supervisor.shot("supervisor-dashboard-map.png")

    # A county's leader: their own county on the map, and their own county's measures.
    leader = await open_session(LEADER)
    await leader.goto("verification", "/dashboard")
    await leader.page.wait_for_selector("#chart-map canvas")
    series = await browsing.chart_series(leader.page, "chart-map")
    # ECharts lists every region of the map; only the leader's own county has a figure.
    assert series and [d["name"] for d in series[0]["data"] if d.get("value") is not None] == ["沈丘县"]
    await leader.page.wait_for_selector("[data-testid=measures-table]")
    assert "沈丘县" in await leader.page.inner_text("[data-testid=measures-table]")
    assert "郸城县" not in await leader.page.inner_text("[data-testid=measures-table]")


# --------------------------------------------------------------------------- the bureaus' leaders


async def test_supervisor_edits_a_bureau_leaders_phone(open_session: Any, web: System) -> None:
    supervisor = await open_session("supervisor1")
    supervisor.expected_statuses.add(422)
    page = supervisor.page
    await supervisor.goto("routing", "/org")
    await page.click("button[data-bureau='411625']")
    await page.wait_for_selector("#bureau-editor-box:not([hidden])")
    await page.fill("#b-phone", "12345")
    await page.click("#bureau-editor button[type=submit]")
    error = page.locator("#bureau-editor [data-field=phone] .field-error")
    await error.wait_for()
    assert "联系电话格式不正确" in await error.inner_text()

    await page.fill("#b-phone", "0394-5123456")
    await page.click("#bureau-editor button[type=submit]")
    await page.wait_for_selector("#toast >> text=分管领导信息已保存")
    await page.wait_for_selector("#bureau-editor-box", state="hidden")
    response = await web.call("routing", "GET", "/api/v1/bureaus", as_user="supervisor1")
    bureau = next(b for b in response.json() if b["code"] == "411625")
    assert bureau["phone"] and bureau["phone"].endswith("3456")
    await page.locator("[data-testid=bureaus]").scroll_into_view_if_needed()
    await supervisor.shot("supervisor-bureaus.png")


# --------------------------------------------------------------------------- 消息记录


async def test_supervisor_reads_the_message_log_masked(open_session: Any, web: System) -> None:
    phone = fixtures.unique_mobile()
    created = await record(web, complainant={"name": "韩立新", "phone": phone})
    # Claiming the task tells the complainant the matter was accepted (告知受理), by SMS.
    task = await task_of(web, created["id"])
    claimed = await web.call(
        "verification", "POST", f"/api/v1/tasks/{task['id']}/claim", as_user=f"inspector-{task['team_code']}"
    )
    assert claimed.status_code == 200, claimed.text

    async def logged() -> bool:
        response = await web.call("feedback", "GET", "/api/v1/messages", as_user="supervisor1")
        return any(m["case_id"] == created["id"] for m in response.json())

    await eventually(logged, timeout=30.0, what="the acceptance notice sent")
    supervisor = await open_session("supervisor1")
    await supervisor.goto("feedback", "/messages")
    table = supervisor.page.locator("[data-testid=messages]")
    await table.wait_for()
    text = await table.inner_text()
    assert created["tracking_code"] in text and phone[-4:] in text
    shown = await supervisor.text()
    assert phone not in shown and "韩立新" not in shown
    assert not re.search(r"(?<!\d)1\d{10}(?!\d)", shown), "a full mobile number on the page"
    await supervisor.shot("supervisor-messages.png")


# --------------------------------------------------------------------------- 批量导入


async def test_operator_imports_a_transfer_list(open_session: Any, web: System) -> None:
    rows = [
        good_row(),
        good_row(**{"受理时间": "昨天上午"}),
        good_row(**{"被投诉单位": "项城市公安局城关派出所"}),
    ]
    operator = await open_session("operator1")
    page = operator.page
    await operator.goto("intake", "/operator/import")
    await page.set_input_files(
        "#i-file", files=[{"name": "12345转办清单.xlsx", "mimeType": XLSX, "buffer": workbook(rows)}]
    )
    await page.click("#start")
    await page.wait_for_selector("[data-testid=import-summary]:has-text('已完成')", timeout=60_000)
    assert await page.evaluate("document.getElementById('progress').value") == 3
    assert await page.evaluate("document.getElementById('progress').max") == 3
    items = page.locator("[data-testid=import-items]")
    await items.wait_for()
    assert await items.locator("tbody tr").count() == 3
    assert await items.locator(".badge.green", has_text="已登记").count() == 2
    refused = items.locator("tbody tr", has=page.locator(".badge.red", has_text="未通过"))
    assert await refused.count() == 1
    refused_text = await refused.inner_text()
    assert rows[1]["平台工单号"] in refused_text and "受理时间" in refused_text
    assert "登记 2，未通过 1" in await page.inner_text("[data-testid=import-summary]")
    assert await page.locator("[data-testid=import-report]").is_visible()
    await operator.shot("operator-import.png")


# --------------------------------------------------------------------------- Open311 keys


async def test_supervisor_issues_and_revokes_an_open311_key(open_session: Any, web: System) -> None:
    name = f"周口市12345政务服务便民热线平台{fixtures.unique_mobile()[-4:]}"
    supervisor = await open_session("supervisor1")
    page = supervisor.page
    page.on("dialog", lambda dialog: dialog.accept())
    await supervisor.goto("intake", "/open311-keys")
    await page.fill("#key-name", name)
    await page.click("#key-issue")
    key = page.locator("[data-testid=api-key]")
    await key.wait_for()
    secret = (await key.inner_text()).strip()
    assert len(secret) >= 20
    row = page.locator(f"tr[data-name='{name}']")
    assert "启用" in await row.inner_text()
    await supervisor.shot("supervisor-open311-keys.png")

    await row.locator("[data-revoke]").click()
    await page.wait_for_selector(f"tr[data-name='{name}'] >> text=已停用")
    # Shown once: the page read again lists the system without its key.
    await page.reload()
    await page.wait_for_selector(f"tr[data-name='{name}'] >> text=已停用")
    assert secret not in await supervisor.text()


# --------------------------------------------------------------------------- 回访 (its screenshot)


async def test_operator_follow_ups_page_lists_a_call_due(open_session: Any, web: System) -> None:
    created = await record(web)
    await answered_by_api(web, created, "经调取执法记录仪视频，民警执法过程规范，未发现投诉所反映问题。")
    operator = await open_session("operator1")
    await operator.goto("feedback", "/follow-ups")
    row = f"tr[data-case='{created['id']}']"
    await reload_until(operator, row, timeout=40.0)
    assert created["tracking_code"] in await operator.page.inner_text(row)
    await operator.shot("operator-follow-ups.png")
