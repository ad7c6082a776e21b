"""Paging of the lists (shared.pagination): the cursor codec, a keyset walk over a real table in
every direction, and the ledger's pages with their total, next cursor and Link header."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook, load_workbook
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.verification import ledger_export
from shared.db import create_engine
from shared.pagination import BadCursor, Key, Page, decode_cursor, encode_cursor
from tests import fixtures
from tests.support import System, eventually
from tests.test_pipeline import create_complaint


async def all_pages(
    system: System, service: str, path: str, user: str, params: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Every row of a paged list, following X-Next-Cursor: the whole list whatever its default page."""
    rows: list[dict[str, Any]] = []
    query = {**(params or {}), "limit": 500}
    while True:
        response = await system.call(service, "GET", path, as_user=user, params=query)
        assert response.status_code == 200, response.text
        rows.extend(response.json())
        cursor = response.headers.get("X-Next-Cursor")
        if not cursor:
            return rows
        query = {**query, "after": cursor}


def test_cursor_round_trips_each_kind_of_key() -> None:
    moment = datetime(2026, 11, 30, 8, 0, 1, 123456, tzinfo=UTC)
    key = (moment, "案-001", 42, True, None)
    cursor = encode_cursor(key)
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert decode_cursor(cursor) == key


@pytest.mark.parametrize("cursor", ["", "!!", "bm90IGpzb24", encode_cursor([])[:-1] or "W10", "WzFd"])
def test_a_cursor_not_made_here_is_refused(cursor: str) -> None:
    with pytest.raises(BadCursor):
        decode_cursor(cursor)


ROWS = Table(
    "paged",
    MetaData(),
    Column("id", String(8), primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("rank", Integer, nullable=False),
)


@pytest.mark.parametrize("descending", [(False, False), (True, True), (False, True), (True, False)], ids=str)
@pytest.mark.parametrize("size", [1, 3, 7, 50])
async def test_a_keyset_walk_returns_every_row_once_in_order(
    tmp_path: Path, descending: tuple[bool, bool], size: int
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'paged.db'}")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    # Many rows share a time: the second key column breaks the ties.
    rows: list[dict[str, Any]] = [
        {"id": f"r{n:03d}", "at": start + timedelta(hours=n // 4), "rank": n % 5} for n in range(23)
    ]
    async with engine.begin() as connection:
        await connection.run_sync(ROWS.metadata.create_all)
        await connection.execute(ROWS.insert(), rows)
    keys = [Key(ROWS.c.at, descending[0]), Key(ROWS.c.id, descending[1])]
    expected = sorted(rows, key=lambda r: r["id"], reverse=descending[1])
    expected = sorted(expected, key=lambda r: r["at"], reverse=descending[0])
    seen: list[str] = []
    after = None
    async with AsyncSession(engine) as session:
        for _ in range(len(rows) + 1):
            page = Page(limit=size, after=after)
            found = list(await session.exec(page.keyset(select(ROWS), keys)))  # type: ignore[call-overload]
            cut = page.cut(found, key_of=lambda r: (r.at.replace(tzinfo=UTC), r.id))
            seen.extend(r.id for r in cut)
            assert await page.count(session, select(ROWS).where(ROWS.c.rank < 5)) == len(rows)
            if page.next_cursor is None:
                break
            after = decode_cursor(page.next_cursor)
    await engine.dispose()
    assert seen == [r["id"] for r in expected]


async def test_the_ledger_pages_with_its_total_and_next_link(system: System) -> None:
    created = [await create_complaint(system, category="久拖不决") for _ in range(3)]
    ids = {c["id"] for c in created}

    async def on_ledger() -> list[dict[str, Any]] | None:
        rows = await all_pages(system, "verification", "/api/v1/ledger", "supervisor1", {"min_age_days": 0})
        return rows if ids <= {r["case_id"] for r in rows} else None

    whole = await eventually(on_ledger, what="the matters on the ledger")
    assert len({r["case_id"] for r in whole}) == len(whole)
    first = await system.call(
        "verification", "GET", "/api/v1/ledger", as_user="supervisor1", params={"min_age_days": 0, "limit": 2}
    )
    assert first.status_code == 200 and len(first.json()) == 2
    assert int(first.headers["X-Total-Count"]) >= len(whole)
    cursor = first.headers["X-Next-Cursor"]
    link = first.headers["Link"]
    assert link.endswith('>; rel="next"') and f"after={cursor}" in link and "limit=2" in link
    # The pages in order are the whole ledger in order, each matter once.
    walked: list[str] = [r["case_id"] for r in first.json()]
    while cursor:
        page = await system.call(
            "verification",
            "GET",
            "/api/v1/ledger",
            as_user="supervisor1",
            params={"min_age_days": 0, "limit": 2, "after": cursor},
        )
        assert page.status_code == 200 and int(page.headers["X-Total-Count"]) == int(
            first.headers["X-Total-Count"]
        )
        walked.extend(r["case_id"] for r in page.json())
        cursor = page.headers.get("X-Next-Cursor", "")
        assert bool(cursor) == ("Link" in page.headers)
    assert ids <= set(walked) and len(walked) == len(set(walked))
    one = await system.call(
        "verification",
        "GET",
        "/api/v1/ledger",
        as_user="supervisor1",
        params={"min_age_days": 0, "case_id": created[0]["id"]},
    )
    assert [r["case_id"] for r in one.json()] == [created[0]["id"]] and one.headers["X-Total-Count"] == "1"
    assert "X-Next-Cursor" not in one.headers and "Link" not in one.headers
    refused = await system.call(
        "verification", "GET", "/api/v1/ledger", as_user="supervisor1", params={"after": "bm90LWEtY3Vyc29y"}
    )
    assert refused.status_code == 422 and refused.json()["detail"][0]["field"] == "after"


async def test_a_callers_complaints_page_newest_first_by_cursor(system: System) -> None:
    phone = fixtures.unique_mobile()
    times = ("2026-11-02T09:00:00+08:00", "2026-11-03T09:00:00+08:00", "2026-11-03T09:00:00+08:00")
    created = [
        await create_complaint(
            system, received_at=at, complainant={"name": "李四", "phone": phone, "anonymous": False}
        )
        for at in times
    ]
    seen: list[str] = []
    params: dict[str, Any] = {"phone": phone, "limit": 1}
    for _ in range(len(created) + 1):
        page = await system.call("intake", "GET", "/api/v1/complaints", as_user="operator1", params=params)
        assert page.status_code == 200 and page.headers["X-Total-Count"] == str(len(created)), page.text
        seen.extend(c["id"] for c in page.json())
        if "X-Next-Cursor" not in page.headers:
            break
        params = {**params, "after": page.headers["X-Next-Cursor"]}
    assert sorted(seen) == sorted(c["id"] for c in created) and len(seen) == len(set(seen))
    assert seen[-1] == created[0]["id"]  # the earliest received comes last


def test_the_ledger_export_writes_formula_like_text_as_text(tmp_path: Path) -> None:
    """The ledger's rows, written as the worksheet's XML and put into the workbook openpyxl saved,
    read back as openpyxl would have written them: text stays text whatever it starts with (with
    quotePrefix on = + - @), markup is escaped, numbers are numbers, every cell is bordered and
    wrapped, the worst step's cell is filled; no file is left behind."""
    path = str(tmp_path / "ledger.xlsx")
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("台账")
    for heading in ("标题", "筛选条件", "序号"):  # rows 1 to 3, as the ledger's heading takes them
        sheet.append([heading])
    body = ledger_export._SheetBody(sheet, directory=str(tmp_path))
    first: list[int | str] = [
        1,
        '=HYPERLINK("x")',
        "正常",
        "-1+2",
        "@x",
        "+1",
        "#N/A",
        "a & b <c> d",
        "  前后空格 ",
        "",
        270,
        "办理期限：2026-04-01（超期150个工作日）\n答复期限：2026-04-15（剩3个工作日）",
        "=催办",
    ]
    body.add(first, worst_step="chase")
    body.add([2, "B", "C", "D", "E", "F", "G", "H", "I", "J", 0, "L", "督办件"], worst_step=None)
    workbook.save(path)
    body.splice_into(path)
    body.discard()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ledger.xlsx"]
    sheet_read: Any = load_workbook(path).active
    assert [c.value for c in sheet_read["A"]] == ["标题", "筛选条件", "序号", 1, 2]
    cells = list(sheet_read[4])
    assert [(c.value, c.data_type, bool(c.quotePrefix)) for c in cells] == [
        (1, "n", False),
        ('=HYPERLINK("x")', "s", True),
        ("正常", "s", False),
        ("-1+2", "s", True),
        ("@x", "s", True),
        ("+1", "s", True),
        ("#N/A", "s", False),
        ("a & b <c> d", "s", False),
        ("  前后空格 ", "s", False),
        (None, "n", False),
        (270, "n", False),
        ("办理期限：2026-04-01（超期150个工作日）\n答复期限：2026-04-15（剩3个工作日）", "s", False),
        ("=催办", "s", True),
    ]
    both = [*cells, *sheet_read[5]]
    assert all(c.border.left.style == "thin" and c.border.bottom.style == "thin" for c in both)
    assert all(c.alignment.wrap_text and c.alignment.vertical == "top" for c in both)
    # The worst step's colour, on its column alone (催办: ``_STEP_FILLS``); none without a step.
    assert cells[11].fill.fgColor.rgb.endswith("FDECEC")
    assert [c.fill.fill_type for c in both if c.column != 12] == [None] * 24
    assert sheet_read["L5"].fill.fill_type is None
