"""The ledger (台账): close-off (挂账销号) with a reason, marks removed with a reason, rectification
and B-class follow-up clocks that keep a matter on it until done, and a leader's county-only view."""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from openpyxl import load_workbook

from services.verification import ledger_export
from shared.auth import Principal, Role, token_auth
from shared.web import COOKIE_NAME
from tests import fixtures
from tests.ledger_support import check_ledger_entries
from tests.support import System, eventually
from tests.test_pagination import all_pages
from tests.test_pipeline import create_complaint, task_for
from tests.test_verification import b_class_reply, claim, clocks_of, follow_up_reply

# Counts the whole database's figures: a system of its own, on empty databases.
pytestmark = pytest.mark.private_system


async def sign_in_leader(system: System, county: str) -> str:
    """The county's leader account (``leader-<county>``); a token signed for it if not seeded."""
    username = f"leader-{county}"
    try:
        await system.token(username)
    except httpx.HTTPStatusError:
        principal = Principal(username=username, role=Role.LEADER, county_code=county)
        system._tokens[username] = token_auth(system.apps["intake"]).issue(principal=principal)
    return username


async def ledger_rows(system: System, user: str = "supervisor1", **params: Any) -> dict[str, dict[str, Any]]:
    rows = await all_pages(system, "verification", "/api/v1/ledger", user, {"min_age_days": 0, **params})
    return {r["case_id"]: r for r in rows}


async def audit_actions(system: System, case_id: str) -> list[dict[str, Any]]:
    response = await system.call("verification", "GET", f"/api/v1/audit/{case_id}", as_user="supervisor1")
    assert response.status_code == 200, response.text
    return list(response.json()["entries"])


def badge(n: int) -> dict[str, Any]:
    """An accused officer of this test alone (early warning counts badges across matters)."""
    return {"accused": {"badge_no": f"L{n:05d}"}}


async def test_close_off_needs_the_work_done_and_a_reason(system: System) -> None:
    created = await create_complaint(system, **badge(1))
    case_id = created["id"]
    task = await task_for(system, case_id, "inspector-411681")
    row = (await ledger_rows(system))[case_id]
    assert row["pending"], row

    # Not on the ledger: a clear error naming the field, nothing recorded.
    unknown = await system.call(
        "verification",
        "POST",
        "/api/v1/ledger/no-such-case/close-off",
        as_user="supervisor1",
        json={"reason": "已办结"},
    )
    assert unknown.status_code == 422, unknown.text
    assert "台账" in unknown.text and "case_id" in unknown.text
    # Still being verified: stays on the ledger.
    early = await system.call(
        "verification",
        "POST",
        f"/api/v1/ledger/{case_id}/close-off",
        as_user="supervisor1",
        json={"reason": "销号"},
    )
    assert early.status_code == 409, early.text
    no_reason = await system.call(
        "verification", "POST", f"/api/v1/ledger/{case_id}/close-off", as_user="supervisor1", json={}
    )
    assert no_reason.status_code == 422
    not_supervisor = await system.call(
        "verification",
        "POST",
        f"/api/v1/ledger/{case_id}/close-off",
        as_user="inspector-411681",
        json={"reason": "销号"},
    )
    assert not_supervisor.status_code == 403

    marked = await system.call(
        "verification",
        "POST",
        f"/api/v1/ledger/{case_id}/marks",
        as_user="supervisor1",
        json={"mark": "supervised", "note": "群众反映强烈"},
    )
    assert marked.status_code == 201, marked.text

    # A finding with a rectification item and no due date: the data's default period applies,
    # on a clock of its own that keeps the matter on the ledger.
    await claim(system, task["id"], "inspector-411681")
    finding = await system.call(
        "verification",
        "POST",
        f"/api/v1/tasks/{task['id']}/finding",
        as_user="inspector-411681",
        json={
            "outcome": "partly_substantiated",
            "summary": "民警言语不文明属实，已批评教育。",
            "accountability": ["批评教育"],
            "rectifications": [{"item": "组织全所民警开展文明执法培训", "owner": "花园派出所"}],
        },
    )
    assert finding.status_code == 200, finding.text
    items = await system.call(
        "verification", "GET", f"/api/v1/tasks/{task['id']}/rectifications", as_user="supervisor1"
    )
    item = items.json()[0]
    clocks = await clocks_of(system, task["id"])
    rectification = clocks[f"rectification:{item['id']}"]
    assert rectification["status"] == "running" and rectification["next_step"] == "reminder"
    assert rectification["due_at"] == item["due_date"]
    assert clocks["verification"]["status"] == "stopped"
    row = (await ledger_rows(system))[case_id]
    assert row["status"] == "concluded" and any(p.startswith("整改期限") for p in row["pending"])
    assert case_id in await ledger_rows(system, clock="rectification")
    still_open = await system.call(
        "verification",
        "POST",
        f"/api/v1/ledger/{case_id}/close-off",
        as_user="supervisor1",
        json={"reason": "销号"},
    )
    assert still_open.status_code == 409 and "整改" in still_open.text

    checked = await system.call(
        "verification",
        "POST",
        f"/api/v1/rectifications/{item['id']}/check",
        as_user="supervisor1",
        json={"done": True, "note": "已检查培训记录"},
    )
    assert checked.status_code == 200, checked.text
    assert (await clocks_of(system, task["id"]))[f"rectification:{item['id']}"]["status"] == "stopped"
    # Marked (督办件): on the ledger until closed off, though no work is left.
    row = (await ledger_rows(system))[case_id]
    assert row["pending"] == [] and row["marks"] == ["supervised"]

    closed = await system.call(
        "verification",
        "POST",
        f"/api/v1/ledger/{case_id}/close-off",
        as_user="supervisor1",
        json={"reason": "整改到位，督办事项办结销号"},
    )
    assert closed.status_code == 200, closed.text
    assert closed.json()["closed_by"] == "supervisor1"
    assert case_id not in await ledger_rows(system)
    again = await system.call(
        "verification",
        "POST",
        f"/api/v1/ledger/{case_id}/close-off",
        as_user="supervisor1",
        json={"reason": "再次销号"},
    )
    assert again.status_code == 422
    entries = await audit_actions(system, case_id)
    closing = [e for e in entries if e["action"] == "ledger_closed_off"]
    assert len(closing) == 1 and closing[0]["reason"] == "整改到位，督办事项办结销号"
    assert closing[0]["actor"] == "supervisor1"


async def test_marks_are_removed_with_a_reason(system: System) -> None:
    created = await create_complaint(system, **badge(2))
    case_id = created["id"]
    await task_for(system, case_id, "inspector-411681")
    marked = await system.call(
        "verification",
        "POST",
        f"/api/v1/ledger/{case_id}/marks",
        as_user="supervisor1",
        json={"mark": "leader_assigned", "leader": "张副局长"},
    )
    assert marked.status_code == 201, marked.text
    path = f"/api/v1/ledger/{case_id}/marks/remove"
    absent = await system.call(
        "verification", "POST", path, as_user="supervisor1", json={"mark": "supervised", "reason": "误标"}
    )
    assert absent.status_code == 422 and "mark" in absent.text
    no_reason = await system.call(
        "verification", "POST", path, as_user="supervisor1", json={"mark": "leader_assigned"}
    )
    assert no_reason.status_code == 422
    inspector = await system.call(
        "verification",
        "POST",
        path,
        as_user="inspector-411681",
        json={"mark": "leader_assigned", "reason": "误标记"},
    )
    assert inspector.status_code == 403
    assert (await ledger_rows(system))[case_id]["marks"] == ["leader_assigned"]
    removed = await system.call(
        "verification",
        "POST",
        path,
        as_user="supervisor1",
        json={"mark": "leader_assigned", "reason": "包案领导调整，改由督察支队督办"},
    )
    assert removed.status_code == 200, removed.text
    assert (await ledger_rows(system))[case_id]["marks"] == []
    entries = await audit_actions(system, case_id)
    assert any(
        e["action"] == "ledger_leader_assigned_removed" and e["reason"] == "包案领导调整，改由督察支队督办"
        for e in entries
    )


async def test_b_class_reply_keeps_a_follow_up_clock_until_answered(system: System) -> None:
    response = await system.call(
        "intake", "POST", "/api/v1/suggestions", as_user="operator1", json=fixtures.suggestion()
    )
    assert response.status_code == 201, response.text
    created = response.json()
    task = await task_for(system, created["id"], "inspector-411600")
    await claim(system, task["id"], "inspector-411600")
    reply = await b_class_reply(system, task["id"], "已列入明年工作计划，正在制定实施方案。")
    assert reply.status_code == 200, reply.text
    follow = (await clocks_of(system, task["id"]))["b_follow_up"]
    assert follow["status"] == "running" and follow["label"] == "B类后续答复"
    row = (await ledger_rows(system))[created["id"]]
    assert "B类后续答复" in row["pending"]
    done = await follow_up_reply(system, task["id"], "实施方案已印发执行。")
    assert done.status_code == 200, done.text
    assert (await clocks_of(system, task["id"]))["b_follow_up"]["status"] == "stopped"
    assert created["id"] not in await ledger_rows(system)


async def test_a_leader_reads_their_county_only(system: System) -> None:
    mine = await create_complaint(system, **badge(3))
    other = await create_complaint(
        system,
        accused={"unit": "沈丘县公安局刑警大队", "county_code": "411624", "badge_no": "L00004"},
    )

    async def both_on_ledger() -> bool:
        rows = await ledger_rows(system)
        return mine["id"] in rows and other["id"] in rows

    await eventually(both_on_ledger, what="both matters on the ledger")
    leader = await sign_in_leader(system, "411681")
    rows = await ledger_rows(system, user=leader)
    assert mine["id"] in rows and other["id"] not in rows
    assert {r["county_code"] for r in rows.values()} == {"411681"}
    # Asking for another county changes nothing: the leader's own is forced.
    forced = await ledger_rows(system, user=leader, county="411624")
    assert other["id"] not in forced and mine["id"] in forced
    # No identities: the complainant's name and phone never reach the leader.
    for row in rows.values():
        assert "王建国" not in str(row)
    stats = await system.call("verification", "GET", "/api/v1/stats", as_user=leader, params={"by": "county"})
    assert stats.status_code == 200, stats.text
    assert stats.json()["county"] == "411681"
    assert {g["code"] for g in stats.json()["groups"]} <= {"411681"}
    workbook = await system.call("verification", "GET", "/api/v1/ledger.xlsx", as_user=leader)
    assert workbook.status_code == 200
    for method, path, body in (
        ("POST", f"/api/v1/ledger/{mine['id']}/close-off", {"reason": "销号"}),
        ("POST", f"/api/v1/ledger/{mine['id']}/marks", {"mark": "supervised"}),
        ("POST", f"/api/v1/ledger/{mine['id']}/marks/remove", {"mark": "supervised", "reason": "撤销"}),
        (
            "PUT",
            "/api/v1/warning-thresholds",
            {"thresholds": [{"measure": "complaints", "count": 5, "window_months": 12}], "reason": "调整"},
        ),
    ):
        refused = await system.call("verification", method, path, as_user=leader, json=body)
        assert refused.status_code == 403, (path, refused.text)
    cookie = {"Cookie": f"{COOKIE_NAME}={await system.token(leader)}"}
    page = await system.call("verification", "GET", "/ledger", headers=cookie)
    assert page.status_code == 200, page.text
    assert '"county": "411681"' in page.text and '"leader": true' in page.text
    dashboard = await system.call("verification", "GET", "/dashboard", headers=cookie)
    assert dashboard.status_code == 200


async def test_the_kept_entries_are_what_the_tables_say(system: System) -> None:
    """After this module's matters (closed off, marked and unmarked, B-class replies, rectification
    items), the ledger's kept entries give the rows the tables give at read time, under every
    filter, and a rebuild gives the same entries."""
    created = await create_complaint(system, **badge(9))
    await task_for(system, created["id"], "inspector-411681")
    assert await check_ledger_entries(system) >= 1


async def test_a_ladder_step_reaches_the_filter_by_step(system: System) -> None:
    """The ladder's round takes the steps of a matter left overdue; each step's event, with no
    other change of the task, puts it on the matter's entry: the ledger filtered by the step then
    lists the matter, as the tables do."""
    created = await create_complaint(
        system,
        **badge(12),
        received_at="2024-05-06T10:00:00+08:00",
        incident_at="2024-05-05T21:00:00+08:00",
    )
    await task_for(system, created["id"], "inspector-411681")
    scheduler = system.apps["verification"].state.scheduler
    while await scheduler.tick():
        pass

    async def listed_under_its_last_step() -> bool:
        return created["id"] in await ledger_rows(system, step="rebuke")

    await eventually(listed_under_its_last_step, what="the matter on the ledger under 通报")

    # The round took other matters' steps too: each reaches its entry when its event is handled.
    async def agreeing() -> bool:
        try:
            await check_ledger_entries(system)
        except AssertionError:
            return False
        return True

    await eventually(agreeing, what="the entries as the tables give them, every step's event handled")


async def test_the_ledger_filters_by_the_day_received(system: System) -> None:
    """受理日期起/止: the matters received in the period, both days included, the same on the page
    and in the export; a period that ends before it starts is refused on the field."""
    created = await create_complaint(
        system, received_at="2024-03-15T09:00:00+08:00", incident_at="2024-03-14T20:30:00+08:00"
    )
    await task_for(system, created["id"], "inspector-411681")
    within = await ledger_rows(system, start="2024-03-15", end="2024-03-15")
    assert list(within) == [created["id"]]
    assert created["id"] not in await ledger_rows(system, start="2024-03-16")
    assert created["id"] not in await ledger_rows(system, end="2024-03-14")
    backwards = await system.call(
        "verification",
        "GET",
        "/api/v1/ledger",
        as_user="supervisor1",
        params={"start": "2024-03-16", "end": "2024-03-15"},
    )
    assert backwards.status_code == 422 and "end" in backwards.text, backwards.text
    exported = await system.call(
        "verification",
        "GET",
        "/api/v1/ledger.xlsx",
        as_user="supervisor1",
        params={"start": "2024-03-15", "end": "2024-03-15", "min_age_days": 0},
    )
    assert exported.status_code == 200, exported.text
    sheet = load_workbook(io.BytesIO(exported.content)).active
    text = [str(cell.value) for row in sheet.iter_rows() for cell in row if cell.value is not None]
    assert any("2024-03-15 至 2024-03-15" in t for t in text), text[:10]
    assert any(created["tracking_code"] in t for t in text)


def _exported_row(row: dict[str, Any]) -> list[Any]:
    """What the workbook shows of a row of the ledger's API, column by column, as openpyxl reads
    it back (an empty cell is None)."""
    local = ZoneInfo("Asia/Shanghai")
    lines = []
    for clock in row["clocks"]:
        left = clock["working_days_left"]
        state = f"（剩{left}个工作日）" if left >= 0 else f"（超期{-left}个工作日）"
        if clock["status"] != "running":
            state = "（已停止）"
        lines.append(
            f"{clock['label']}：{datetime.fromisoformat(clock['due_at']).astimezone(local):%Y-%m-%d}{state}"
        )
    counties = {"411681": "项城市"}
    return [
        row["tracking_code"],
        row["title"],
        {"complaint": "投诉"}.get(row["case_kind"], "建议提案"),
        counties[row["county_code"]] if row["county_code"] else None,
        "、".join(row["categories"]) or None,
        row["team_name"],
        {"open": "待认领", "claimed": "核查中"}[row["status"]],
        f"{datetime.fromisoformat(row['received_at']).astimezone(local):%Y-%m-%d}",
        row["age_days"],
        "\n".join(lines) or None,
        {"rebuke": "书面通报", None: None}[row["worst_step"]],
        "、".join({"supervised": "督办件", "leader_assigned": "领导包案"}[m] for m in row["marks"]) or None,
    ]


async def test_the_export_holds_each_row_of_the_ledger(system: System) -> None:
    """The workbook as a reader opens it: the heading (title, the filters with the count, the
    column heads, frozen panes, the filter over every row), then the ledger's rows in its order,
    each column what the ledger's API says of the matter; a title that starts like a formula is
    text with quotePrefix, and the worst step's cell has its colour."""
    overdue = await create_complaint(
        system,
        **badge(13),
        received_at="2024-06-03T10:00:00+08:00",
        incident_at="2024-06-02T21:00:00+08:00",
    )
    await task_for(system, overdue["id"], "inspector-411681")
    # A matter's title begins with the session of the congress, which the operator types.
    response = await system.call(
        "intake",
        "POST",
        "/api/v1/suggestions",
        as_user="operator1",
        json=fixtures.suggestion(session='=HYPERLINK("http://evil.example","点击")'),
    )
    assert response.status_code == 201, response.text
    formula = response.json()
    await task_for(system, formula["id"], "inspector-411600")
    marked = await system.call(
        "verification",
        "POST",
        f"/api/v1/ledger/{formula['id']}/marks",
        as_user="supervisor1",
        json={"mark": "supervised"},
    )
    assert marked.status_code == 201, marked.text
    scheduler = system.apps["verification"].state.scheduler
    while await scheduler.tick():
        pass

    async def both_listed() -> dict[str, dict[str, Any]] | None:
        rows = await ledger_rows(system)
        at_rebuke = rows.get(overdue["id"], {}).get("worst_step") == "rebuke"
        return rows if at_rebuke and rows.get(formula["id"], {}).get("marks") == ["supervised"] else None

    rows = await eventually(both_listed, what="both matters on the ledger, the complaint at 通报")
    exported = await system.call(
        "verification", "GET", "/api/v1/ledger.xlsx", as_user="supervisor1", params={"min_age_days": 0}
    )
    assert exported.status_code == 200, exported.text
    sheet: Any = load_workbook(io.BytesIO(exported.content)).active
    count = len(rows)
    assert str(sheet["A1"].value).endswith("长期未办结投诉及建议提案督办台账")
    assert "筛选条件：受理满：0日" in sheet["A2"].value and sheet["A2"].value.endswith(f"共 {count} 件")
    assert [c.value for c in sheet[3]] == [name for name, _ in ledger_export.LEDGER_COLUMNS]
    assert sheet.freeze_panes == "C4" and sheet.auto_filter.ref == f"A3:M{3 + count}"
    assert sheet.max_row == 3 + count and sheet.max_column == 13
    body = [list(r) for r in sheet.iter_rows(min_row=4)]
    assert [r[0].value for r in body] == list(range(1, count + 1))
    assert [r[1].value for r in body] == [row["tracking_code"] for row in rows.values()]
    by_code = {r[1].value: r for r in body}
    for case_id in (overdue["id"], formula["id"]):
        cells = by_code[rows[case_id]["tracking_code"]]
        assert [c.value for c in cells[1:]] == _exported_row(rows[case_id]), case_id
        assert all(c.border.left.style == "thin" and c.alignment.wrap_text for c in cells)
    title = by_code[formula["tracking_code"]][2]
    assert title.value.startswith('=HYPERLINK("http://evil.example","点击")第')
    assert (title.data_type, title.quotePrefix) == ("s", True)
    assert not any(c.quotePrefix for c in by_code[overdue["tracking_code"]])
    assert by_code[overdue["tracking_code"]][11].fill.fgColor.rgb.endswith("F1E8FA")
    # Printed as wide as a landscape page, heads on each; the complaint's clocks take two lines, and
    # its row says so (no reader makes a row taller for wrapped text by itself).
    assert sheet.sheet_properties.pageSetUpPr.fitToPage and sheet.print_title_rows == "$3:$3"
    overdue_cells = by_code[overdue["tracking_code"]]
    lines = overdue_cells[10].value.count("\n") + 1
    assert lines >= 2 and sheet.row_dimensions[overdue_cells[0].row].height == 15 * lines
