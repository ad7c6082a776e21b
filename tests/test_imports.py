"""Bulk import of transferred matters (issue 15 §2): an .xlsx of a 12345/12389 transfer list."""

from __future__ import annotations

import io
import itertools
import os
import time
from collections.abc import Sequence
from typing import Any

import httpx
from openpyxl import Workbook, load_workbook

from tests import fixtures
from tests.support import (
    System,
    eventually,
)
from tests.test_pipeline import current_assignment

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
HEADERS = [
    "平台工单号",
    "来源平台",
    "受理时间",
    "投诉人姓名",
    "联系电话",
    "被投诉单位",
    "所属县（市、区）",
    "被投诉民警",
    "警号",
    "投诉类别",
    "事情经过",
]
_tickets = itertools.count(1)


def ticket() -> str:
    return f"12345-{os.getpid() % 10000:04d}-{time.monotonic_ns() % 10**9:09d}-{next(_tickets):05d}"


def good_row(**overrides: str) -> dict[str, str]:
    row = {
        "平台工单号": ticket(),
        "来源平台": "12345转办",
        "受理时间": "2026-11-02 09:14",
        "投诉人姓名": "王建国",
        "联系电话": fixtures.unique_mobile(),
        "被投诉单位": "项城市公安局花园派出所",
        "所属县（市、区）": "项城市",
        "被投诉民警": "李某",
        "警号": "041234",
        "投诉类别": "态度粗暴",
        "事情经过": "10月30日晚被拦下检查，民警态度恶劣，言语辱骂。",
    }
    row.update(overrides)
    return row


def workbook(rows: Sequence[dict[str, Any]], headers: Sequence[str] = HEADERS) -> bytes:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(list(headers))
    for row in rows:
        sheet.append([row.get(h, "") for h in headers])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


async def upload(system: System, content: bytes, name: str = "transfer.xlsx") -> Any:
    return await system.call(
        "intake", "POST", "/api/v1/imports", as_user="operator1", files={"file": (name, content, XLSX)}
    )


async def finished(system: System, import_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """The import's report once it is no longer running (polled for its counts only, as the page does)."""
    path = f"/api/v1/imports/{import_id}"

    async def probe() -> bool:
        response = await system.call(
            "intake", "GET", path, as_user="operator1", params={"with_items": "false"}
        )
        assert response.status_code == 200, response.text
        return bool(response.json()["status"] != "running")

    await eventually(probe, timeout=timeout, interval=0.2, what="import finished")
    response = await system.call("intake", "GET", path, as_user="operator1")
    return dict(response.json())


async def imported(system: System, rows: Sequence[dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
    response = await upload(system, workbook(rows, **kwargs))
    assert response.status_code == 202, response.text
    return await finished(system, response.json()["id"])


async def count_imports(system: System) -> int:
    response = await system.call(
        "intake", "GET", "/api/v1/imports", as_user="operator1", params={"limit": 100}
    )
    assert response.status_code == 200, response.text
    return len(response.json())


async def test_template_has_the_chinese_headers(system: System) -> None:
    response = await system.call("intake", "GET", "/api/v1/imports/template.xlsx", as_user="operator1")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(XLSX)
    sheet = load_workbook(io.BytesIO(response.content)).worksheets[0]
    rows = list(sheet.iter_rows(values_only=True))
    assert len(rows) == 1
    for header in (
        "平台工单号",
        "受理时间",
        "投诉人姓名",
        "联系电话",
        "被投诉单位",
        "所属县（市、区）",
        "投诉类别",
        "事情经过",
    ):
        assert header in rows[0]


async def test_a_good_file_imports_and_the_complaints_route(system: System) -> None:
    rows = [good_row(), good_row(), good_row(**{"所属县（市、区）": "411681"})]
    report = await imported(system, rows)
    assert report["status"] == "done"
    assert (report["rows"], report["accepted"], report["refused"], report["duplicates"]) == (3, 3, 0, 0)
    assert [i["row"] for i in report["items"]] == [2, 3, 4]
    assert all(i["result"] == "accepted" and i["tracking_code"].startswith("C") for i in report["items"])
    found = await system.call(
        "intake",
        "GET",
        "/api/v1/complaints",
        as_user="operator1",
        params={"tracking_code": report["items"][0]["tracking_code"]},
    )
    complaint = found.json()[0]
    assert complaint["platform_ticket_no"] == rows[0]["平台工单号"]
    assert complaint["channel"] == "transfer_12345"
    assert complaint["received_at"].startswith("2026-11-02T01:14")  # 09:14 in Beijing time
    assignment = await current_assignment(system, complaint["id"])
    assert assignment["team_code"] == "411681"


async def test_a_mixed_file_records_the_good_rows_and_names_the_bad_fields(system: System) -> None:
    rows = [
        good_row(),
        good_row(联系电话="12345"),
        good_row(投诉类别="不存在的类别"),
        good_row(平台工单号=""),
        good_row(事情经过=""),
        good_row(**{"所属县（市、区）": "火星县"}),
        good_row(受理时间="昨天下午"),
        good_row(),
    ]
    report = await imported(system, rows)
    assert (report["accepted"], report["refused"], report["duplicates"]) == (2, 6, 0)
    by_row = {i["row"]: i for i in report["items"]}
    assert by_row[2]["result"] == by_row[9]["result"] == "accepted"
    expected_fields = {
        3: "联系电话",
        4: "投诉类别",
        5: "平台工单号",
        6: "事情经过",
        7: "所属县（市、区）",
        8: "受理时间",
    }
    for row, field in expected_fields.items():
        item = by_row[row]
        assert item["result"] == "refused" and item["field"] == field, item
        assert item["message"] and any("\u4e00" <= ch <= "\u9fff" for ch in item["message"]), item
        assert item["tracking_code"] is None
    assert "电话号码格式不正确" in by_row[3]["message"]
    assert "未知的投诉类别" in by_row[4]["message"]


async def test_reimporting_records_nothing_twice(system: System) -> None:
    rows = [good_row(), good_row()]
    first = await imported(system, rows)
    assert first["accepted"] == 2
    again = await imported(system, [*rows, good_row(), rows[0]])
    assert (again["accepted"], again["duplicates"], again["refused"]) == (1, 3, 0)
    by_row = {i["row"]: i for i in again["items"]}
    assert by_row[2]["result"] == by_row[3]["result"] == by_row[5]["result"] == "duplicate"
    assert by_row[2]["tracking_code"] == first["items"][0]["tracking_code"]
    assert by_row[2]["field"] == "平台工单号" and "已登记" in by_row[2]["message"]
    for row in rows:
        found = await system.call(
            "intake", "GET", "/api/v1/complaints", as_user="operator1", params={"phone": row["联系电话"]}
        )
        assert len(found.json()) == 1


async def test_reordered_columns_and_synonyms(system: System) -> None:
    synonyms = {
        "平台工单号": "工单编号",
        "受理时间": "来电时间",
        "投诉人姓名": "姓名",
        "联系电话": "手机号",
        "被投诉单位": "被举报单位",
        "所属县（市、区）": "区县",
        "投诉类别": "问题类别",
        "事情经过": "诉求内容",
    }
    row = good_row()
    renamed = {synonyms.get(k, k): v for k, v in row.items()}
    headers = list(reversed([synonyms.get(h, h) for h in HEADERS]))
    report = await imported(system, [renamed], headers=headers)
    assert report["accepted"] == 1, report
    found = await system.call(
        "intake", "GET", "/api/v1/complaints", as_user="operator1", params={"phone": row["联系电话"]}
    )
    assert found.json()[0]["platform_ticket_no"] == row["平台工单号"]


async def test_bad_files_are_refused_and_nothing_is_stored(system: System) -> None:
    before = await count_imports(system)
    cases: list[tuple[bytes, int, str]] = [
        (b"ticket,name\n1,2\n", 422, "文件类型不正确"),
        (b"PK\x03\x04not really a zip", 422, "文件类型不正确"),
        (b"", 422, "文件为空"),
        (workbook([]), 422, "没有数据行"),
        (workbook([{"姓名": "王"}], headers=["姓名"]), 422, "缺少必需的列"),
        (b"PK\x03\x04" + os.urandom(5 * 1024 * 1024 + 10), 413, "文件过大"),
    ]
    for content, status, words in cases:
        response = await upload(system, content)
        assert response.status_code == status, response.text
        detail = response.json()["detail"]
        assert detail[0]["field"] == "file" and words in detail[0]["message"], detail

    safe = good_row()
    for formula in ('=HYPERLINK("http://evil.example","点击")', "=1+1"):
        response = await upload(system, workbook([safe, good_row(事情经过=formula)]))
        assert response.status_code == 422, response.text
        assert "公式" in response.json()["detail"][0]["message"]
    found = await system.call(
        "intake", "GET", "/api/v1/complaints", as_user="operator1", params={"phone": safe["联系电话"]}
    )
    assert found.json() == []
    assert await count_imports(system) == before


async def test_the_report_never_holds_a_formula(system: System) -> None:
    rows = [
        good_row(平台工单号="-" + ticket(), 事情经过="@民警拒不出示证件"),
        good_row(平台工单号="+" + ticket(), 投诉类别="+SUM(A1)"),
        good_row(平台工单号="@" + ticket(), 联系电话="-1"),
    ]
    report = await imported(system, rows)
    response = await system.call(
        "intake", "GET", f"/api/v1/imports/{report['id']}/report.xlsx", as_user="operator1"
    )
    assert response.status_code == 200
    sheet = load_workbook(io.BytesIO(response.content)).worksheets[0]
    values = [cell for row in sheet.iter_rows() for cell in row if cell.value is not None]
    assert any(str(c.value).startswith(("-", "+", "@")) for c in values)
    for cell in values:
        assert cell.data_type != "f", (cell.coordinate, cell.value)
        if str(cell.value).startswith(("=", "+", "-", "@")):
            assert cell.data_type == "s" and cell.quotePrefix, (cell.coordinate, cell.value)
    # Each ticket number fits its column, which a reader's program would otherwise cut off.
    tickets = [str(row[2]) for row in sheet.iter_rows(min_row=2, values_only=True)]
    assert sheet.column_dimensions["C"].width >= max(len(t) for t in tickets)


async def test_the_import_page_is_the_operators(system: System) -> None:
    async with httpx.AsyncClient(base_url=system.urls["intake"], timeout=20.0) as browser:
        signed_in = await browser.post("/login", data={"username": "operator1", "password": "demo"})
        assert signed_in.status_code in (200, 303), signed_in.text
        page = await browser.get("/operator/import")
        assert page.status_code == 200, page.text
        for words in (
            "批量导入",
            "下载导入模板",
            "/api/v1/imports/template.xlsx",
            "开始导入",
            'id="progress"',
        ):
            assert words in page.text
    async with httpx.AsyncClient(base_url=system.urls["intake"], timeout=20.0) as browser:
        await browser.post("/login", data={"username": "supervisor1", "password": "demo"})
        page = await browser.get("/operator/import", follow_redirects=False)
        assert page.status_code in (303, 403), page.status_code
