"""The monthly and yearly 督察工作通报 (issue 15 §4), through the running services.

Matters with known outcomes in two counties; a month report for the city and one county made on
demand, opened with python-docx and openpyxl, its figures checked against the data made (and
against /api/v1/measures for the same period); a leader kept to their own county; the scheduler's
step under a moved clock makes each scheduled report once, even with two instances at once.
"""

from __future__ import annotations

import asyncio
import io
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from docx import Document
from openpyxl import load_workbook

from services.verification.context import VerificationContext
from services.verification.reports import load_config, make_period
from services.verification.reports_worker import ReportScheduler, due_periods
from shared.clock import Clock, ControlledClock
from shared.web import COOKIE_NAME
from tests.support import System, eventually
from tests.test_ledger_closeoff import sign_in_leader
from tests.test_pipeline import approve_answer, conclude, create_complaint, task_for, wait_status
from tests.test_statistics import rate

# Counts the whole database's figures, sets verification's clock and runs the report scheduler.
pytestmark = pytest.mark.private_system

SHANGHAI = ZoneInfo("Asia/Shanghai")
XIANGCHENG, SHENQIU = "411681", "411624"
SHENQIU_UNIT = {
    "unit": "沈丘县公安局刑警大队",
    "county_code": SHENQIU,
    "badge_no": None,
    "officer_name": None,
}


def received_now() -> dict[str, Any]:
    # The current month's report counts what was received and concluded in it: received just now.
    moment = datetime.now(SHANGHAI) - timedelta(minutes=10)
    return {"received_at": moment.isoformat(), "incident_at": (moment - timedelta(days=1)).isoformat()}


@pytest.fixture(scope="module")
async def data_set(system: System) -> dict[str, Any]:
    """项城市: x1 substantiated, x2 unsubstantiated and rated 满意, x3 open and marked 督办件;
    沈丘县: s1 partly substantiated."""
    x1 = await create_complaint(system, **received_now())
    x2 = await create_complaint(system, **received_now())
    x3 = await create_complaint(system, **received_now())
    s1 = await create_complaint(system, **received_now(), accused=SHENQIU_UNIT)
    await conclude(system, x1["id"], "inspector-411681", outcome="substantiated")
    await conclude(system, x2["id"], "inspector-411681", outcome="unsubstantiated")
    await conclude(system, s1["id"], "inspector-411624", outcome="partly_substantiated")
    await task_for(system, x3["id"], "inspector-411681")
    await wait_status(system, x2, "concluded")
    await approve_answer(system, x2["id"])
    await wait_status(system, x2, "answered")
    await rate(system, x2, "satisfied")
    marked = await system.call(
        "verification",
        "POST",
        f"/api/v1/ledger/{x3['id']}/marks",
        as_user="supervisor1",
        json={"mark": "supervised"},
    )
    assert marked.status_code == 201, marked.text
    month = datetime.fromisoformat(received_now()["received_at"])
    made = {"x1": x1, "x2": x2, "x3": x3, "s1": s1, "year": month.year, "month": month.month}

    # The rating reaches verification over the bus after feedback has answered.
    async def rating_counted() -> bool:
        return bool((await measures_api(system, made))["total"]["counts"]["satisfied"] == 1)

    await eventually(rating_counted, what="x2's rating in verification's measures")
    return made


async def make(
    system: System, data: dict[str, Any], *, user: str = "supervisor1", **extra: Any
) -> dict[str, Any]:
    body = {"period": "month", "year": data["year"], "month": data["month"], **extra}
    response = await system.call("verification", "POST", "/api/v1/reports", as_user=user, json=body)
    assert response.status_code == 201, response.text
    report = dict(response.json())
    assert report["status"] == "done", report
    return report


async def download(system: System, report_id: str, suffix: str, user: str = "supervisor1") -> bytes:
    response = await system.call("verification", "GET", f"/api/v1/reports/{report_id}.{suffix}", as_user=user)
    assert response.status_code == 200, response.text
    assert "filename*=UTF-8''" in response.headers["content-disposition"]
    return response.content


async def measures_api(system: System, data: dict[str, Any], county: str | None = None) -> dict[str, Any]:
    period = make_period(kind="month", year=data["year"], month=data["month"])
    params = {
        "start": period.start.isoformat(),
        "end": period.end.isoformat(),
        "by": "team" if county else "county",
    }
    if county:
        params["county"] = county
    response = await system.call(
        "verification", "GET", "/api/v1/measures", as_user="supervisor1", params=params
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def sheet_rows(workbook: Any, title: str) -> dict[str, list[Any]]:
    """A sheet's rows by their first cell (the unit or measure), below the caption and the heads."""
    return {row[0]: list(row[1:]) for row in workbook[title].iter_rows(min_row=3, values_only=True) if row[0]}


async def test_a_city_month_report_states_the_figures_of_the_data(
    system: System, data_set: dict[str, Any]
) -> None:
    report = await make(system, data_set)
    assert report["scope"] == "city" and report["scope_name"] == "全市"
    assert report["period_label"] == f"{data_set['year']}年{data_set['month']}月"

    book = load_workbook(io.BytesIO(await download(system, report["id"], "xlsx")))
    assert book.sheetnames == ["总体情况", "分组指标", "超期督办", "督办件和领导包案", "满意度"]
    groups = sheet_rows(book, "分组指标")
    assert groups["项城市"][:2] == [3, 2] and groups["沈丘县"][:2] == [1, 1] and groups["全市"][:2] == [4, 3]
    overall = sheet_rows(book, "总体情况")
    assert overall["受理"][0] == 4 and overall["办结"][0] == 3
    assert overall["按期办结率"][:3] == [3, 3, 1.0]
    assert overall["属实率"][:3] == [2, 3, pytest.approx(2 / 3)]
    assert overall["满意率"][1:3] == [1, 1.0]
    # Each measure as the measures API states it for the same period (its own test checks the API).
    api = await measures_api(system, data_set)
    names = {d["key"]: d["name"] for d in api["definitions"]}
    for key, rate_value in api["total"]["rates"].items():
        assert overall[names[key]][2] == (pytest.approx(rate_value) if rate_value is not None else None), key
    [cell] = [row[3] for row in book["总体情况"].iter_rows(min_row=3) if row[0].value == "按期办结率"]
    assert cell.data_type == "n" and cell.number_format == "0.0%"
    supervision = sheet_rows(book, "超期督办")
    assert supervision["项城市"][-2:] == [1, 0]  # x3 marked 督办件
    [(marked_county, mark)] = [(row[1], row[2]) for row in sheet_rows(book, "督办件和领导包案").values()]
    assert (marked_county, mark) == ("项城市", "督办件")
    satisfaction = sheet_rows(book, "满意度")
    assert satisfaction["项城市"][:2] == [1, 1] and satisfaction["项城市"][-1] == 1.0

    document = Document(io.BytesIO(await download(system, report["id"], "docx")))
    text = "\n".join(p.text for p in document.paragraphs)
    assert "周口市公安局督察工作通报" in text and f"{data_set['year']}年{data_set['month']}月" in text
    for heading in (
        "一、总体情况",
        "二、各县（市、区）情况",
        "三、超期和督办情况",
        "四、群众满意度",
        "五、存在的问题和工作要求",
    ):
        assert heading in text
    assert "共受理投诉及建议提案4件" in text and "已办结3件" in text
    assert len(document.inline_shapes) == 3  # the three charts, embedded as images
    [groups_table] = [
        t for t in document.tables if [c.text for c in t.rows[0].cells][:3] == ["单位", "受理", "办结"]
    ]
    county_rows = {r.cells[0].text: [c.text for c in r.cells] for r in groups_table.rows}
    assert county_rows["项城市"][1:3] == ["3", "2"]


async def test_a_county_report_and_a_leader_kept_to_their_county(
    system: System, data_set: dict[str, Any]
) -> None:
    report = await make(system, data_set, county=XIANGCHENG)
    assert report["scope"] == XIANGCHENG and report["scope_name"] == "项城市公安局"
    book = load_workbook(io.BytesIO(await download(system, report["id"], "xlsx")))
    overall = sheet_rows(book, "总体情况")
    assert overall["受理"][0] == 3 and overall["办结"][0] == 2 and overall["属实率"][:2] == [1, 2]
    api = await measures_api(system, data_set, county=XIANGCHENG)
    assert api["total"]["counts"]["received"] == 3
    document = Document(io.BytesIO(await download(system, report["id"], "docx")))
    text = "\n".join(p.text for p in document.paragraphs)
    assert "项城市公安局" in text and "二、各督察队情况" in text and "沈丘" not in text

    leader = await sign_in_leader(system, SHENQIU)
    refused = await system.call(
        "verification",
        "POST",
        "/api/v1/reports",
        as_user=leader,
        json={"period": "month", "year": data_set["year"], "month": data_set["month"], "county": XIANGCHENG},
    )
    assert refused.status_code == 403, refused.text
    for path in (f"/api/v1/reports/{report['id']}", f"/api/v1/reports/{report['id']}.docx"):
        response = await system.call("verification", "GET", path, as_user=leader)
        assert response.status_code == 403, (path, response.text)
    own = await make(system, data_set, user=leader)  # no county given: the leader's own
    assert own["scope"] == SHENQIU
    own_book = load_workbook(io.BytesIO(await download(system, own["id"], "xlsx", user=leader)))
    assert sheet_rows(own_book, "总体情况")["受理"][0] == 1
    listed = await system.call("verification", "GET", "/api/v1/reports", as_user=leader)
    assert listed.status_code == 200 and {r["scope"] for r in listed.json()} == {SHENQIU}
    everything = await system.call("verification", "GET", "/api/v1/reports", as_user="supervisor1")
    ids = [r["id"] for r in everything.json()]
    assert own["id"] == ids[0] and report["id"] in ids  # newest first


async def test_no_cell_of_a_report_is_a_formula(system: System, data_set: dict[str, Any]) -> None:
    marked = await system.call(
        "verification",
        "POST",
        f"/api/v1/ledger/{data_set['x3']['id']}/marks",
        as_user="supervisor1",
        json={"mark": "leader_assigned", "leader": '=HYPERLINK("http://x")'},
    )
    assert marked.status_code == 201, marked.text
    report = await make(system, data_set)
    book = load_workbook(io.BytesIO(await download(system, report["id"], "xlsx")))
    cells = [c for sheet in book.worksheets for row in sheet.iter_rows() for c in row if c.value is not None]
    assert not [c.coordinate for c in cells if c.data_type == "f"]
    assert any(c.value == '=HYPERLINK("http://x")' and c.quotePrefix for c in cells)


def test_the_reports_are_due_from_the_first_working_day_and_a_year_report_in_january(system: System) -> None:
    ctx: VerificationContext = system.apps["verification"].state.verification
    at = lambda text: datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)  # noqa: E731
    # 2026-11-01 is a Sunday: November's first working day is Monday the 2nd.
    assert due_periods(now=at("2026-11-01T10:00"), ctx=ctx, hour=8) == []
    assert due_periods(now=at("2026-11-02T07:59"), ctx=ctx, hour=8) == []
    [october] = due_periods(now=at("2026-11-02T08:00"), ctx=ctx, hour=8)
    assert (october.kind, october.year, october.month) == ("month", 2026, 10)
    january = due_periods(now=at("2027-01-20T09:00"), ctx=ctx, hour=8)
    assert [(p.kind, p.year, p.month) for p in january] == [("month", 2026, 12), ("year", 2026, None)]


async def test_the_scheduled_run_makes_each_report_once(system: System, data_set: dict[str, Any]) -> None:
    app = system.apps["verification"]
    ctx: VerificationContext = app.state.verification
    ctx.clock = ControlledClock(datetime(2026, 11, 2, 9, 0, tzinfo=SHANGHAI))
    try:

        def instance() -> ReportScheduler:
            # Two instances on one database, as two processes of the service would be; one county
            # besides the city keeps the test short (the real one makes every county's).
            return ReportScheduler(
                session_factory=app.state.runtime.session_factory,
                ctx=ctx,
                config=load_config,
                hour=8,
                interval_seconds=60,
                counties=[XIANGCHENG],
            )

        made = await asyncio.gather(instance().run_due(), instance().run_due())
        assert sum(made) == 2
        assert await instance().run_due() == 0  # a restart makes nothing again
        ctx.clock.set(datetime(2026, 11, 20, 9, 0, tzinfo=SHANGHAI))
        assert await instance().run_due() == 0
    finally:
        ctx.clock = Clock()
    listed = await system.call(
        "verification", "GET", "/api/v1/reports", as_user="supervisor1", params={"limit": 200}
    )
    scheduled = [r for r in listed.json() if r["scheduled"]]
    assert sorted((r["scope"], r["period_label"], r["generated_by"]) for r in scheduled) == [
        (XIANGCHENG, "2026年10月", "system"),
        ("city", "2026年10月", "system"),
    ]
    assert all(r["status"] == "done" for r in scheduled)
    word = await download(system, scheduled[0]["id"], "docx")
    assert len(Document(io.BytesIO(word)).inline_shapes) == 3


async def test_the_reports_page_for_supervisors_and_leaders(system: System) -> None:
    for user, leader in (("supervisor1", False), (await sign_in_leader(system, SHENQIU), True)):
        cookie = {"Cookie": f"{COOKIE_NAME}={await system.token(user)}"}
        page = await system.call("verification", "GET", "/reports", headers=cookie)
        assert page.status_code == 200, page.text
        assert "督察工作通报" in page.text and "立即生成" in page.text and '/reports"' in page.text
        assert ('"leader": true' in page.text) is leader
    cookie = {"Cookie": f"{COOKIE_NAME}={await system.token('operator1')}"}
    refused = await system.call("verification", "GET", "/reports", headers=cookie)
    assert "立即生成" not in refused.text
