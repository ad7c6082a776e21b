"""The task board's list: its tabs (scope) filtered by the server, clocks in the same response, paged."""

from __future__ import annotations

from typing import Any

import pytest

from tests import fixtures
from tests import web_support as browsing
from tests.support import System, eventually
from tests.test_pipeline import create_complaint, current_assignment, task_for

# The board in a browser: tests/web_support.py's Chromium and sessions, on this module's system.
browser = browsing.browser
open_session = browsing.open_session


@pytest.fixture(scope="module")
async def web(system: System) -> System:
    return system


async def board(system: System, user: str, scope: str, **params: Any) -> list[dict[str, Any]]:
    response = await system.call(
        "verification", "GET", "/api/v1/tasks", as_user=user, params={"scope": scope, **params}
    )
    assert response.status_code == 200, response.text
    return list(response.json())


async def ids_in(system: System, user: str, scope: str, case_id: str) -> set[str]:
    return {t["id"] for t in await board(system, user, scope, case_id=case_id)}


async def in_review(system: System) -> tuple[dict[str, Any], str, str]:
    """A matter the lead team has answered and another team must cross-check (复核)."""
    created = await create_complaint(
        system,
        accused={
            "unit": "商水县公安局交警大队",
            "county_code": "411623",
            "officer_name": None,
            "badge_no": None,
        },
        category="吃拿卡要",
    )
    assignment = await current_assignment(system, created["id"])
    assert assignment["review_required"] and assignment["review_team_code"] != assignment["team_code"]
    lead, reviewer = f"inspector-{assignment['team_code']}", f"inspector-{assignment['review_team_code']}"
    task = await task_for(system, created["id"], lead)
    claimed = await system.call("verification", "POST", f"/api/v1/tasks/{task['id']}/claim", as_user=lead)
    assert claimed.status_code == 200, claimed.text
    answered = await system.call(
        "verification",
        "POST",
        f"/api/v1/tasks/{task['id']}/finding",
        as_user=lead,
        json={"outcome": "unsubstantiated", "summary": "未发现违规收费。"},
    )
    assert answered.status_code == 200, answered.text
    return task, lead, reviewer


async def test_a_task_in_review_is_the_reviewers_to_review_and_the_leads_in_hand(system: System) -> None:
    task, lead, reviewer = await in_review(system)
    case_id = task["case_id"]
    assert await ids_in(system, reviewer, "review", case_id) == {task["id"]}
    assert await ids_in(system, reviewer, "active", case_id) == set()
    assert await ids_in(system, reviewer, "done", case_id) == set()
    # The lead team still has it in hand (在办), never to review itself.
    assert await ids_in(system, lead, "active", case_id) == {task["id"]}
    assert await ids_in(system, lead, "review", case_id) == set()
    # A supervisor reviews for no team: every task in review is in hand.
    assert await ids_in(system, "supervisor1", "active", case_id) == {task["id"]}
    assert await ids_in(system, "supervisor1", "review", case_id) == set()
    # Absent, the scope is every visible task, as before.
    every = await system.call(
        "verification", "GET", "/api/v1/tasks", as_user=reviewer, params={"case_id": case_id}
    )
    assert {t["id"] for t in every.json()} == {task["id"]}


async def test_a_co_handling_team_has_the_task_in_hand_and_no_other_team_sees_it(system: System) -> None:
    response = await system.call(
        "intake",
        "POST",
        "/api/v1/suggestions",
        as_user="operator1",
        json=fixtures.suggestion(co_units=["郸城县公安局"]),
    )
    assert response.status_code == 201, response.text
    case_id = response.json()["id"]
    task = await task_for(system, case_id, "inspector-411600")
    assert task["participants"] == ["411625"]
    # The lead team's and the participant's: each way of seeing it finds it once, in the total too.
    for user in ("inspector-411600", "inspector-411625", "supervisor1"):
        page = await system.call(
            "verification",
            "GET",
            "/api/v1/tasks",
            as_user=user,
            params={"scope": "active", "case_id": case_id, "include": "clocks"},
        )
        assert page.status_code == 200, page.text
        assert [t["id"] for t in page.json()] == [task["id"]] and page.headers["X-Total-Count"] == "1"
    assert await ids_in(system, "inspector-411623", "active", case_id) == set()
    assert await ids_in(system, "inspector-411625", "done", case_id) == set()


async def test_clocks_come_with_the_page_as_each_tasks_own_clocks(system: System) -> None:
    task, lead, reviewer = await in_review(system)
    rows = await board(system, reviewer, "review", case_id=task["case_id"], include="clocks")
    assert [r["id"] for r in rows] == [task["id"]]
    own = await system.call("verification", "GET", f"/api/v1/tasks/{task['id']}/clocks", as_user=reviewer)
    assert own.status_code == 200 and own.json()
    assert rows[0]["clock_states"] == own.json()
    # Not asked, not loaded.
    plain = await board(system, lead, "active", case_id=task["case_id"])
    assert plain[0]["clock_states"] is None


async def test_a_returned_task_is_done_not_in_hand(system: System) -> None:
    created = await create_complaint(system)
    assignment = await current_assignment(system, created["id"])
    lead = f"inspector-{assignment['team_code']}"
    task = await task_for(system, created["id"], lead)
    assert task["id"] in await ids_in(system, lead, "active", created["id"])
    returned = await system.call(
        "verification",
        "POST",
        f"/api/v1/tasks/{task['id']}/return",
        as_user=lead,
        json={"reason": "不属本队管辖，退回重新分派"},
    )
    assert returned.status_code == 200, returned.text
    assert task["id"] not in await ids_in(system, lead, "active", created["id"])
    assert task["id"] in await ids_in(system, lead, "done", created["id"])
    assert task["id"] in await ids_in(system, "supervisor1", "done", created["id"])


async def test_the_active_tab_pages_by_offset_nearest_deadline_first_with_its_total(system: System) -> None:
    created = [await create_complaint(system) for _ in range(3)]
    for matter in created:
        await current_assignment(system, matter["id"])

    async def all_in_hand() -> list[dict[str, Any]] | None:
        rows = await board(system, "supervisor1", "active", limit=500)
        return rows if {c["id"] for c in created} <= {r["case_id"] for r in rows} else None

    whole = await eventually(all_in_hand, what="the new matters' tasks in hand")
    assert len(whole) == len({t["id"] for t in whole})
    assert all(t["status"] in ("open", "claimed", "in_review") for t in whole)
    dues = [t["due_at"] for t in whole]
    dated = [d for d in dues if d is not None]
    assert dated == sorted(dated) and dues == dated + [None] * (len(dues) - len(dated))
    # Two pages of two by offset are the whole tab's first four, each with its clocks.
    walked: list[dict[str, Any]] = []
    for offset in (0, 2):
        page = await system.call(
            "verification",
            "GET",
            "/api/v1/tasks",
            as_user="supervisor1",
            params={"scope": "active", "include": "clocks", "limit": 2, "offset": offset},
        )
        assert page.status_code == 200 and int(page.headers["X-Total-Count"]) == len(whole)
        assert (f'offset={offset + 2}>; rel="next"' in page.headers.get("Link", "")) == (
            len(whole) > offset + 2
        )
        walked.extend(page.json())
    assert [t["id"] for t in walked] == [t["id"] for t in whole[:4]]
    assert all(isinstance(t["clock_states"], list) for t in walked)
    # Past the end: no rows, and still the tab's total.
    beyond = await system.call(
        "verification",
        "GET",
        "/api/v1/tasks",
        as_user="supervisor1",
        params={"scope": "active", "limit": 2, "offset": len(whole) + 5},
    )
    assert beyond.status_code == 200 and beyond.json() == []
    assert int(beyond.headers["X-Total-Count"]) >= len(whole)


async def test_an_unknown_scope_is_refused(system: System) -> None:
    response = await system.call(
        "verification", "GET", "/api/v1/tasks", as_user="supervisor1", params={"scope": "all"}
    )
    assert response.status_code == 422


@browsing.needs_chromium
async def test_the_board_shows_a_tab_a_page_at_a_time_with_clocks(system: System, open_session: Any) -> None:
    created = await browsing.record(system)
    task = await browsing.task_of(system, created["id"])
    inspector = await open_session(f"inspector-{task['team_code']}")
    page = inspector.page
    assert page.url == inspector.url("verification", "/tasks")
    row = f"tr[data-task='{task['id']}']"
    await browsing.reload_until(inspector, row)
    # The clocks came with the page: the chips show the working days left.
    assert "剩" in await page.inner_text(row)
    active = await system.call(
        "verification",
        "GET",
        "/api/v1/tasks",
        as_user=f"inspector-{task['team_code']}",
        params={"scope": "active", "limit": 1},
    )
    info = await page.inner_text("[data-testid=page-info]")
    assert f"共 {active.headers['X-Total-Count']} 件" in info and "第 1 页" in info
    await page.click("text=已办结")
    await page.wait_for_selector(row, state="detached")
    await page.click("text=在办任务")
    await page.locator(row).locator("button[data-claim]").click()
    await page.wait_for_url(f"**/tasks/{task['id']}")
