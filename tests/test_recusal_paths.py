"""Recusal (回避) on every path that picks a team, through the services' HTTP APIs (issue 14, items 1-2).

A supervisor naming a reviewer, reassignment and its fallback reviewer, and the rectification
checker each go through ``shared.recusal``; a refusal names the field (or refuses the caller) and
changes nothing.
"""

from __future__ import annotations

from typing import Any

from tests.support import System
from tests.test_pipeline import create_complaint, current_assignment, task_for
from tests.test_routing_api import next_assignment

SUMMARY = "经调取执法记录仪视频并询问在场人员，民警索要财物属实，已给予诫勉谈话。"


async def task_detail(system: System, task_id: str) -> dict[str, Any]:
    response = await system.call("verification", "GET", f"/api/v1/tasks/{task_id}", as_user="supervisor1")
    assert response.status_code == 200, response.text
    return dict(response.json()["task"])


async def require_review(system: System, task_id: str, team_code: str) -> Any:
    return await system.call(
        "verification",
        "POST",
        f"/api/v1/tasks/{task_id}/require-review",
        as_user="supervisor1",
        json={"reason": "督察支队指定复核", "review_team_code": team_code},
    )


def assert_refused_on(response: Any, field: str) -> None:
    assert response.status_code in (409, 422), response.text
    detail = response.json()["detail"]
    assert [e["field"] for e in detail] == [field], detail
    assert "回避" in detail[0]["message"], detail


async def test_supervisor_cannot_name_the_accused_countys_own_team_as_reviewer(system: System) -> None:
    created = await create_complaint(
        system,
        accused={
            "unit": "淮阳区公安分局",
            "county_code": "411603",
            "officer_name": "分局长",
            "badge_no": None,
        },
        category="不作为",
    )
    assignment = await current_assignment(system, created["id"])
    assert assignment["team_code"] == "411600"
    task = await task_for(system, created["id"], "inspector-411600")
    before = await task_detail(system, task["id"])

    named = await require_review(system, task["id"], "411603")
    assert_refused_on(named, "review_team_code")
    after = await task_detail(system, task["id"])
    assert after["review_team_code"] == before["review_team_code"] != "411603"
    # The accused county's team never sees the matter it would have confirmed.
    seen = await system.call(
        "verification", "GET", "/api/v1/tasks", as_user="inspector-411603", params={"case_id": created["id"]}
    )
    assert seen.status_code == 200 and seen.json() == []

    allowed = await require_review(system, task["id"], "411624")
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["review_team_code"] == "411624"


async def test_supervisor_cannot_name_a_team_that_already_had_the_matter_as_reviewer(system: System) -> None:
    created = await create_complaint(system)
    first = await current_assignment(system, created["id"])
    assert first["team_code"] == "411681"
    moved = await system.call(
        "routing",
        "POST",
        f"/api/v1/assignments/{created['id']}/reassign",
        as_user="supervisor1",
        json={"team_code": "411624", "reason": "项城市公安局督察大队人手不足"},
    )
    assert moved.status_code == 200, moved.text
    task = await task_for(system, created["id"], "inspector-411624")
    # 411681 is the accused county and had the matter: it cannot review the team that replaced it.
    named = await require_review(system, task["id"], "411681")
    assert_refused_on(named, "review_team_code")
    assert (await task_detail(system, task["id"]))["review_required"] is False


async def test_reassignment_never_falls_back_to_a_conflicted_city_team_as_reviewer(system: System) -> None:
    # A complaint against the city's own inspection team: the city team may neither verify nor review it.
    created = await create_complaint(
        system,
        accused={
            "unit": "周口市公安局督察支队",
            "county_code": "411600",
            "officer_name": None,
            "badge_no": None,
        },
        category="不作为",
        account="我向周口市公安局督察支队反映民警违规问题，支队一直不予受理也不答复。",
    )
    first = await current_assignment(system, created["id"])
    assert first["team_code"] != "411600" and first["review_required"]
    assert first["review_team_code"] not in (None, "411600", first["team_code"])

    # The supervisor moves the matter to the team that was to review it: a new reviewer is needed.
    target = first["review_team_code"]
    moved = await system.call(
        "routing",
        "POST",
        f"/api/v1/assignments/{created['id']}/reassign",
        as_user="supervisor1",
        json={"team_code": target, "reason": "改由原复核队核查"},
    )
    assert moved.status_code == 200, moved.text
    second = moved.json()
    assert second["team_code"] == target and second["review_required"]
    assert second["review_team_code"] not in (None, "411600", target, first["team_code"])

    back_to_city = await system.call(
        "routing",
        "POST",
        f"/api/v1/assignments/{created['id']}/reassign",
        as_user="supervisor1",
        json={"team_code": "411600", "reason": "试图交市局"},
    )
    assert_refused_on(back_to_city, "team_code")
    back_to_first = await system.call(
        "routing",
        "POST",
        f"/api/v1/assignments/{created['id']}/reassign",
        as_user="supervisor1",
        json={"team_code": first["team_code"], "reason": "交回原队"},
    )
    assert_refused_on(back_to_first, "team_code")
    assert (await current_assignment(system, created["id"]))["id"] == second["id"]


async def test_neither_a_joint_check_participant_nor_the_accused_county_certifies_its_rectification(
    system: System,
) -> None:
    created = await create_complaint(
        system,
        accused={
            "unit": "郸城县公安局城关派出所",
            "county_code": "411625",
            "officer_name": "李某",
            "badge_no": None,
        },
        category="吃拿卡要",
    )
    assignment = await current_assignment(system, created["id"])
    assert (assignment["kind"], assignment["team_code"], assignment["participants"]) == (
        "joint",
        "411600",
        ["411625"],
    )
    reviewer = assignment["review_team_code"]
    task = await task_for(system, created["id"], "inspector-411600")
    claimed = await system.call(
        "verification", "POST", f"/api/v1/tasks/{task['id']}/claim", as_user="inspector-411600"
    )
    assert claimed.status_code == 200, claimed.text
    finding = await system.call(
        "verification",
        "POST",
        f"/api/v1/tasks/{task['id']}/finding",
        as_user="inspector-411600",
        json={
            "outcome": "substantiated",
            "summary": SUMMARY,
            "accountability": ["诫勉谈话"],
            "rectifications": [
                {
                    "item": "退还所收财物并公开道歉",
                    "owner": "城关派出所所长",
                    "due_date": "2026-12-20T17:30:00+08:00",
                }
            ],
        },
    )
    assert finding.status_code == 200, finding.text
    items = await system.call(
        "verification", "GET", f"/api/v1/tasks/{task['id']}/rectifications", as_user="inspector-411625"
    )
    assert items.status_code == 200, items.text
    item = items.json()[0]

    for inspector in ("inspector-411625", "inspector-411600"):
        own = await system.call(
            "verification",
            "POST",
            f"/api/v1/rectifications/{item['id']}/check",
            as_user=inspector,
            json={"done": True, "note": "已整改"},
        )
        assert own.status_code == 403, (inspector, own.text)
    listed = await system.call(
        "verification", "GET", f"/api/v1/tasks/{task['id']}/rectifications", as_user="supervisor1"
    )
    assert listed.json()[0]["status"] == "open" and listed.json()[0]["checked_by"] is None

    by_reviewer = await system.call(
        "verification",
        "POST",
        f"/api/v1/rectifications/{item['id']}/check",
        as_user=f"inspector-{reviewer}",
        json={"done": True, "note": "复核队现场检查，财物已退还"},
    )
    assert by_reviewer.status_code == 200, by_reviewer.text
    assert by_reviewer.json()["checked_by"] == f"inspector-{reviewer}"


async def test_a_reopened_matter_is_reviewed_by_none_of_its_earlier_teams(system: System) -> None:
    # Returned by its county, the matter goes elsewhere; the supervisor cannot make the county review it.
    created = await create_complaint(system)
    first = await current_assignment(system, created["id"])
    task = await task_for(system, created["id"], "inspector-411681")
    returned = await system.call(
        "verification",
        "POST",
        f"/api/v1/tasks/{task['id']}/return",
        as_user="inspector-411681",
        json={"reason": "被投诉民警系本队队长的亲属，申请回避"},
    )
    assert returned.status_code == 200, returned.text
    second = await next_assignment(system, created["id"], {first["id"]})
    assert second["team_code"] != "411681"
    new_task = await task_for(system, created["id"], f"inspector-{second['team_code']}")
    named = await require_review(system, new_task["id"], "411681")
    assert_refused_on(named, "review_team_code")
