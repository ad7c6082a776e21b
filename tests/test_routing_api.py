"""Routing through its HTTP API with all four services running: the sample cases, rules, reassignment, returns."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests import fixtures
from tests.support import System, eventually
from tests.test_pipeline import create_complaint, current_assignment, task_for

CLOCK_FIELDS = {"name", "label", "due_at", "rule", "source"}


def clocks_by_name(assignment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    for clock in assignment["clocks"]:
        assert set(clock) >= CLOCK_FIELDS, clock
        assert all(clock[f] for f in CLOCK_FIELDS), clock
    return {c["name"]: c for c in assignment["clocks"]}


async def next_assignment(system: System, case_id: str, seen: set[str]) -> dict[str, Any]:
    """Wait for an assignment of ``case_id`` that is not one of ``seen``."""

    async def probe() -> dict[str, Any] | None:
        current = await current_assignment(system, case_id)
        return current if current["id"] not in seen else None

    return dict(await eventually(probe, what="a new assignment"))


async def tasks_of(system: System, case_id: str) -> list[dict[str, Any]]:
    response = await system.call(
        "verification", "GET", "/api/v1/tasks", as_user="supervisor1", params={"case_id": case_id}
    )
    assert response.status_code == 200, response.text
    return list(response.json())


async def rule_named(system: System, name: str) -> dict[str, Any]:
    response = await system.call("routing", "GET", "/api/v1/rules", as_user="supervisor1")
    assert response.status_code == 200, response.text
    return dict(next(r for r in response.json() if r["name"] == name))


def rule_body(rule: dict[str, Any], **changes: Any) -> dict[str, Any]:
    fields = ("priority", "case_kinds", "when", "assign", "review", "description", "enabled")
    return {f: rule[f] for f in fields} | changes


async def put_rule(system: System, name: str, body: dict[str, Any], user: str = "supervisor1") -> Any:
    return await system.call("routing", "PUT", f"/api/v1/rules/{name}", as_user=user, json=body)


# --- the sample cases -----------------------------------------------------------------------------


async def test_ordinary_complaint_goes_to_its_county_with_clocks(system: System) -> None:
    created = await create_complaint(system)
    assignment = await current_assignment(system, created["id"])
    assert (assignment["team_code"], assignment["kind"], assignment["rule"]) == (
        "411681",
        "county",
        "ordinary_county",
    )
    assert not assignment["key_clue"] and not assignment["review_required"]
    clocks = clocks_by_name(assignment)
    assert {"acceptance_notice", "verification"} <= set(clocks)


async def test_repeat_from_same_phone_about_same_unit_is_linked(system: System) -> None:
    phone = fixtures.unique_mobile()
    first = await create_complaint(system, complainant={"phone": phone})
    assert first["repeat_of"] is None and first["earlier_matters"] == []
    second = await create_complaint(
        system, complainant={"phone": phone}, account="上次反映的问题至今没有人联系我，民警仍然态度恶劣。"
    )
    assert second["repeat_of"] == first["id"]
    assert [m["id"] for m in second["earlier_matters"]] == [first["id"]]
    assert second["earlier_matters"][0]["tracking_code"] == first["tracking_code"]
    assert second["earlier_matters"][0]["accused_unit"] == "项城市公安局花园派出所"
    assert not second["repeat_after_rejection"]


async def test_complaint_about_a_county_inspection_team_goes_elsewhere_with_review(system: System) -> None:
    created = await create_complaint(
        system,
        accused={
            "unit": "扶沟县公安局督察大队",
            "county_code": "411621",
            "officer_name": None,
            "badge_no": None,
        },
        category="不作为",
        account="我多次向扶沟县公安局督察大队反映民警违规问题，督察大队一直不予受理也不答复。",
    )
    assignment = await current_assignment(system, created["id"])
    assert assignment["team_code"] != "411621"
    assert "411621" not in assignment["participants"]
    assert assignment["review_required"] is True
    assert assignment["review_team_code"] not in (None, "411621", assignment["team_code"])
    assert assignment["key_clue"] is True


async def test_complaint_about_a_county_deputy_chief_goes_to_the_city(system: System) -> None:
    created = await create_complaint(
        system,
        accused={
            "unit": "淮阳区公安分局",
            "county_code": "411603",
            "officer_name": "分局副局长",
            "badge_no": None,
        },
        category="乱作为/滥用职权",
        account="淮阳区公安分局一名副局长插手我与他人的借贷纠纷，指使民警扣押我的车辆。",
    )
    assignment = await current_assignment(system, created["id"])
    assert (assignment["team_code"], assignment["kind"]) == ("411600", "city")
    assert assignment["rule"] == "key_clue_leadership_or_team"
    assert assignment["key_clue"] and assignment["review_required"]
    assert "411603" not in (assignment["review_team_code"], *assignment["participants"])


@pytest.mark.parametrize(
    ("unit", "county", "category"),
    [
        ("郸城县公安局城关派出所", "411625", "刑讯逼供/非法取证"),
        ("商水县公安局交警大队", "411623", "吃拿卡要"),
    ],
)
async def test_serious_categories_are_joint_checks_led_by_the_city(
    system: System, unit: str, county: str, category: str
) -> None:
    created = await create_complaint(system, accused={"unit": unit, "county_code": county}, category=category)
    assert any("重点线索" in hint for hint in created["key_clue_hints"])
    assignment = await current_assignment(system, created["id"])
    assert (assignment["kind"], assignment["team_code"]) == ("joint", "411600")
    assert assignment["participants"] == [county]
    assert assignment["key_clue"] is True and assignment["review_required"] is True
    assert assignment["rule"] == "key_clue_serious"


async def test_injury_mentioned_in_the_account_makes_a_joint_key_clue(system: System) -> None:
    created = await create_complaint(
        system,
        accused={
            "unit": "沈丘县公安局看守所",
            "county_code": "411624",
            "officer_name": None,
            "badge_no": None,
        },
        category="其他违法违纪",
        account="我弟弟在沈丘县公安局看守所羁押期间被同监室人员打伤住院，看守所民警发现后未及时制止。",
    )
    assignment = await current_assignment(system, created["id"])
    assert (assignment["kind"], assignment["team_code"], assignment["rule"]) == (
        "joint",
        "411600",
        "key_clue_serious",
    )
    assert assignment["participants"] == ["411624"]
    assert assignment["key_clue"] is True


async def test_anonymous_complaint_is_routed_without_an_acceptance_notice_clock(system: System) -> None:
    body = fixtures.complaint()
    body["complainant"] = {"anonymous": True}
    response = await system.call("intake", "POST", "/api/v1/complaints", as_user="operator1", json=body)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["earlier_matters"] == [] and created["repeat_of"] is None
    assignment = await current_assignment(system, created["id"])
    assert assignment["team_code"] == "411681"
    clocks = clocks_by_name(assignment)
    assert "acceptance_notice" not in clocks
    assert "verification" in clocks


async def test_city_unit_goes_to_the_city_team(system: System) -> None:
    created = await create_complaint(
        system,
        accused={
            "unit": "周口市公安局交通警察支队",
            "county_code": "411600",
            "officer_name": None,
            "badge_no": None,
        },
        category="执法不规范",
        account="市交警支队民警在八一大道查车时未出示证件，也未开具任何文书便扣留了我的驾驶证。",
    )
    assignment = await current_assignment(system, created["id"])
    assert (assignment["team_code"], assignment["kind"]) == ("411600", "city")
    assert assignment["rule"] == "city_unit"


async def test_assignment_clocks_name_their_rule_and_source(system: System) -> None:
    created = await create_complaint(system)
    assignment = await current_assignment(system, created["id"])
    clocks = clocks_by_name(assignment)
    verification = clocks["verification"]
    assert verification["label"] == "核查办结"
    assert "13个工作日" in verification["rule"]
    due = datetime.fromisoformat(verification["due_at"])
    received = datetime.fromisoformat("2026-11-02T09:14:00+08:00")
    # 13 working days: at least two and a half weeks, at most five weeks (holidays), after receipt.
    assert received + timedelta(days=17) <= due <= received + timedelta(days=35)


# --- rules ----------------------------------------------------------------------------------------


async def test_supervisor_edits_a_rule_with_a_recorded_reason(system: System) -> None:
    listed = await system.call("routing", "GET", "/api/v1/rules", as_user="supervisor1")
    assert listed.status_code == 200, listed.text
    names = [r["name"] for r in listed.json()]
    assert {
        "ordinary_county",
        "key_clue_leadership_or_team",
        "returned_twice",
        "suggestion_lead_unit",
    } <= set(names)
    priorities = [r["priority"] for r in listed.json()]
    assert priorities == sorted(priorities)

    original = await rule_named(system, "ordinary_county")
    assert original["enabled"] is True
    disabled = rule_body(original, enabled=False)

    no_reason = await put_rule(system, "ordinary_county", disabled)
    assert no_reason.status_code == 422, no_reason.text
    assert "reason" in {e["field"] for e in no_reason.json()["detail"]}
    assert (await rule_named(system, "ordinary_county"))["enabled"] is True

    for user in ("operator1", "inspector-411681", "deputy1"):
        forbidden = await put_rule(system, "ordinary_county", disabled | {"reason": "试图修改"}, user=user)
        assert forbidden.status_code == 403, (user, forbidden.text)
        assert (await system.call("routing", "GET", "/api/v1/rules", as_user=user)).status_code == 403
        assert (await system.call("routing", "GET", "/api/v1/rules/changes", as_user=user)).status_code == 403

    reason = "测试：临时停用属地分派规则"
    try:
        changed = await put_rule(system, "ordinary_county", disabled | {"reason": reason})
        assert changed.status_code == 200, changed.text
        assert changed.json()["enabled"] is False
        assert changed.json()["updated_by"] == "supervisor1"
        assert (await rule_named(system, "ordinary_county"))["enabled"] is False

        changes = await system.call("routing", "GET", "/api/v1/rules/changes", as_user="supervisor1")
        assert changes.status_code == 200, changes.text
        change = next(
            c for c in changes.json() if c["rule_name"] == "ordinary_county" and c["reason"] == reason
        )
        assert change["changed_by"] == "supervisor1"
        assert change["before"]["enabled"] is True
        assert change["after"]["enabled"] is False
        assert change["before"]["assign"] == change["after"]["assign"] == "county"
        assert change["changed_at"]

        # With the catch-all rule off, an ordinary complaint still goes to its county, saying no rule applied.
        created = await create_complaint(system)
        assignment = await current_assignment(system, created["id"])
        assert assignment["team_code"] == "411681"
        assert assignment["rule"] == "no_rule_matched"
    finally:
        restored = await put_rule(
            system, "ordinary_county", rule_body(original) | {"reason": "测试结束，恢复规则"}
        )
        assert restored.status_code == 200, restored.text
    assert (await rule_named(system, "ordinary_county"))["enabled"] is True


async def test_rule_edit_rejects_unknown_facts_and_kinds(system: System) -> None:
    original = await rule_named(system, "ordinary_county")
    bad_fact = await put_rule(
        system, "ordinary_county", rule_body(original, when=["no_such_fact"]) | {"reason": "测试"}
    )
    assert bad_fact.status_code == 422
    assert any(e["field"].startswith("when") for e in bad_fact.json()["detail"])
    bad_assign = await put_rule(
        system, "ordinary_county", rule_body(original, assign="anywhere") | {"reason": "测试"}
    )
    assert bad_assign.status_code == 422
    assert "assign" in {e["field"] for e in bad_assign.json()["detail"]}
    assert await rule_named(system, "ordinary_county") == original


async def test_recusal_cannot_be_switched_off_by_editing_a_rule(system: System) -> None:
    original = await rule_named(system, "key_clue_leadership_or_team")
    hostile = rule_body(original, assign="county", priority=1) | {"reason": "测试：试图把领导投诉交回属地"}
    try:
        changed = await put_rule(system, "key_clue_leadership_or_team", hostile)
        assert changed.status_code == 200, changed.text
        leadership = await create_complaint(
            system,
            accused={
                "unit": "周口市公安局淮阳分局",
                "county_code": "411603",
                "officer_name": "分局副局长",
                "badge_no": None,
            },
            category="乱作为/滥用职权",
        )
        team = await create_complaint(
            system,
            accused={
                "unit": "扶沟县公安局督察大队",
                "county_code": "411621",
                "officer_name": None,
                "badge_no": None,
            },
            category="不作为",
        )
        first = await current_assignment(system, leadership["id"])
        second = await current_assignment(system, team["id"])
        assert first["rule"] == second["rule"] == "key_clue_leadership_or_team"
        assert first["team_code"] != "411603"
        assert second["team_code"] != "411621"
        assert any("回避" in reason for reason in first["reasons"])
    finally:
        restored = await put_rule(
            system, "key_clue_leadership_or_team", rule_body(original) | {"reason": "测试结束，恢复规则"}
        )
        assert restored.status_code == 200, restored.text
    assert rule_body(await rule_named(system, "key_clue_leadership_or_team")) == rule_body(original)


# --- reassignment and returns ---------------------------------------------------------------------


async def test_supervisor_reassigns_and_verification_follows(system: System) -> None:
    created = await create_complaint(system)
    first = await current_assignment(system, created["id"])
    old_task = await task_for(system, created["id"], "inspector-411681")

    body = {"team_code": "411624", "reason": "项城市公安局督察大队近期人手不足"}
    forbidden = await system.call(
        "routing", "POST", f"/api/v1/assignments/{created['id']}/reassign", as_user="operator1", json=body
    )
    assert forbidden.status_code == 403
    moved = await system.call(
        "routing", "POST", f"/api/v1/assignments/{created['id']}/reassign", as_user="supervisor1", json=body
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["team_code"] == "411624"
    assert moved.json()["rule"] == "supervisor_reassignment"
    assert any(body["reason"] in reason for reason in moved.json()["reasons"])
    assert (await current_assignment(system, created["id"]))["id"] not in (first["id"], None)

    new_task = await task_for(system, created["id"], "inspector-411624")
    assert new_task["status"] == "open" and new_task["team_code"] == "411624"

    async def superseded() -> bool:
        tasks = {t["id"]: t for t in await tasks_of(system, created["id"])}
        return tasks.get(old_task["id"], {}).get("status") == "superseded"

    await eventually(superseded, what="old task superseded")
    history = await system.call(
        "routing",
        "GET",
        "/api/v1/assignments/history",
        as_user="supervisor1",
        params={"case_id": created["id"]},
    )
    assert [a["team_code"] for a in history.json()] == ["411681", "411624"]
    assert [a["current"] for a in history.json()] == [False, True]


async def test_reassigning_to_a_conflicted_or_unknown_team_is_refused(system: System) -> None:
    created = await create_complaint(
        system,
        accused={
            "unit": "周口市公安局淮阳分局",
            "county_code": "411603",
            "officer_name": "分局长",
            "badge_no": None,
        },
        category="不作为",
    )
    before = await current_assignment(system, created["id"])
    conflicted = await system.call(
        "routing",
        "POST",
        f"/api/v1/assignments/{created['id']}/reassign",
        as_user="supervisor1",
        json={"team_code": "411603", "reason": "试图交回属地"},
    )
    assert conflicted.status_code == 422, conflicted.text
    assert [e["field"] for e in conflicted.json()["detail"]] == ["team_code"]
    assert "回避" in conflicted.json()["detail"][0]["message"]

    unknown = await system.call(
        "routing",
        "POST",
        f"/api/v1/assignments/{created['id']}/reassign",
        as_user="supervisor1",
        json={"team_code": "419999", "reason": "不存在的队"},
    )
    assert unknown.status_code == 422
    assert [e["field"] for e in unknown.json()["detail"]] == ["team_code"]
    assert (await current_assignment(system, created["id"]))["id"] == before["id"]


async def return_task(system: System, case_id: str, team_code: str, reason: str) -> None:
    inspector = f"inspector-{team_code}"
    task = await task_for(system, case_id, inspector)
    assert task["team_code"] == team_code
    returned = await system.call(
        "verification",
        "POST",
        f"/api/v1/tasks/{task['id']}/return",
        as_user=inspector,
        json={"reason": reason},
    )
    assert returned.status_code == 200, returned.text
    assert returned.json()["status"] == "returned"


async def test_a_returned_matter_goes_to_another_team(system: System) -> None:
    created = await create_complaint(system)
    first = await current_assignment(system, created["id"])
    assert first["team_code"] == "411681"
    await return_task(system, created["id"], "411681", "被投诉民警系本队队长的亲属，申请回避")
    second = await next_assignment(system, created["id"], {first["id"]})
    assert second["team_code"] != "411681"
    assert second["rule"] != "returned_twice"


async def test_after_two_returns_the_city_team_decides(system: System) -> None:
    created = await create_complaint(system)
    first = await current_assignment(system, created["id"])
    await return_task(system, created["id"], first["team_code"], "不属本队管辖")
    second = await next_assignment(system, created["id"], {first["id"]})
    assert second["team_code"] != first["team_code"]
    await return_task(system, created["id"], second["team_code"], "材料不全，无法核查")
    third = await next_assignment(system, created["id"], {first["id"], second["id"]})
    assert third["rule"] == "returned_twice"
    assert third["team_code"] == "411600"


# --- suggestions ----------------------------------------------------------------------------------


async def test_deputy_suggestion_goes_to_the_lead_unit_with_co_units_and_clocks(system: System) -> None:
    body = fixtures.suggestion(lead_unit="周口市公安局", co_units=["郸城县公安局"])
    response = await system.call("intake", "POST", "/api/v1/suggestions", as_user="operator1", json=body)
    assert response.status_code == 201, response.text
    assignment = await current_assignment(system, response.json()["id"])
    assert assignment["team_code"] == "411600"
    assert assignment["participants"] == ["411625"]
    assert assignment["case_kind"] == "suggestion"
    assert assignment["rule"] == "suggestion_lead_unit"
    clocks = clocks_by_name(assignment)
    assert {"deputy_reply", "co_handling_view"} <= set(clocks)
    assert "verification" not in clocks and "acceptance_notice" not in clocks
    now = datetime.now(UTC)
    reply_due = datetime.fromisoformat(clocks["deputy_reply"]["due_at"])
    assert now + timedelta(days=85) <= reply_due <= now + timedelta(days=95)
    view_due = datetime.fromisoformat(clocks["co_handling_view"]["due_at"])
    assert now + timedelta(days=26) <= view_due <= now + timedelta(days=35)
    assert view_due < reply_due


# --- organisation data ----------------------------------------------------------------------------


async def test_unit_search_for_any_staff(system: System) -> None:
    for user in ("operator1", "supervisor1", "inspector-411625"):
        found = await system.call("routing", "GET", "/api/v1/units", as_user=user, params={"q": "郸城"})
        assert found.status_code == 200, (user, found.text)
        names = {u["name"] for u in found.json()}
        assert {"郸城县公安局", "郸城县公安局督察大队"} <= names
        assert all("郸城" in name for name in names)
    nothing = await system.call(
        "routing", "GET", "/api/v1/units", as_user="operator1", params={"q": "不存在的单位名"}
    )
    assert nothing.status_code == 200 and nothing.json() == []
    assert (await system.call("routing", "GET", "/api/v1/units", params={"q": "郸城"})).status_code == 401


async def test_supervisor_maintains_units_and_teams(system: System) -> None:
    unit = {"name": "项城市公安局花园派出所", "area_code": "411681", "kind": "station", "active": True}
    assert (
        await system.call("routing", "PUT", "/api/v1/units/411681-HY", as_user="operator1", json=unit)
    ).status_code == 403
    assert (
        await system.call("routing", "PUT", "/api/v1/units/411681-HY", as_user="inspector-411681", json=unit)
    ).status_code == 403
    saved = await system.call("routing", "PUT", "/api/v1/units/411681-HY", as_user="supervisor1", json=unit)
    assert saved.status_code == 200, saved.text
    assert saved.json()["code"] == "411681-HY"
    found = await system.call("routing", "GET", "/api/v1/units", as_user="operator1", params={"q": "花园"})
    assert found.status_code == 200
    assert [(u["code"], u["name"]) for u in found.json()] == [("411681-HY", "项城市公安局花园派出所")]

    teams = await system.call("routing", "GET", "/api/v1/teams", as_user="operator1")
    assert teams.status_code == 200
    original = next(t for t in teams.json() if t["code"] == "411628")
    team_body = {k: original[k] for k in ("name", "level", "area_code", "bureau", "active")}
    renamed = team_body | {"name": "鹿邑县公安局督察大队（测试更名）"}
    assert (
        await system.call("routing", "PUT", "/api/v1/teams/411628", as_user="operator1", json=renamed)
    ).status_code == 403
    try:
        changed = await system.call(
            "routing", "PUT", "/api/v1/teams/411628", as_user="supervisor1", json=renamed
        )
        assert changed.status_code == 200, changed.text
        listed = await system.call("routing", "GET", "/api/v1/teams", as_user="supervisor1")
        assert next(t for t in listed.json() if t["code"] == "411628")["name"] == renamed["name"]
        bad_level = await system.call(
            "routing",
            "PUT",
            "/api/v1/teams/411628",
            as_user="supervisor1",
            json=renamed | {"level": "province"},
        )
        assert bad_level.status_code == 422
        assert "level" in {e["field"] for e in bad_level.json()["detail"]}
    finally:
        restored = await system.call(
            "routing", "PUT", "/api/v1/teams/411628", as_user="supervisor1", json=team_body
        )
        assert restored.status_code == 200, restored.text
