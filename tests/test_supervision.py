"""A supervisor's levers: flagging a key clue, and reading a matter's tamper-evident audit trail."""

from __future__ import annotations

from typing import Any

from tests.support import System, eventually
from tests.test_pipeline import create_complaint, current_assignment, task_for


async def test_supervisor_flag_turns_an_ordinary_complaint_into_a_cross_check(system: System) -> None:
    created = await create_complaint(system)
    first = await current_assignment(system, created["id"])
    assert first["team_code"] == "411681" and not first["key_clue"]
    denied = await system.call(
        "routing",
        "POST",
        f"/api/v1/assignments/{created['id']}/flag",
        as_user="operator1",
        json={"reason": "多次反映"},
    )
    assert denied.status_code == 403
    flagged = await system.call(
        "routing",
        "POST",
        f"/api/v1/assignments/{created['id']}/flag",
        as_user="supervisor1",
        json={"reason": "同一民警近期被多次投诉，列为重点线索"},
    )
    assert flagged.status_code == 200, flagged.text
    second = flagged.json()
    assert second["key_clue"] and second["review_required"]
    assert second["kind"] == "cross" and second["team_code"] not in ("411681", "411600")
    assert any("重点" in reason or "交叉" in reason for reason in second["reasons"])
    again = await system.call(
        "routing",
        "POST",
        f"/api/v1/assignments/{created['id']}/flag",
        as_user="supervisor1",
        json={"reason": "再次"},
    )
    assert again.status_code == 409

    new_task = await task_for(system, created["id"], f"inspector-{second['team_code']}")
    assert new_task["review_required"]

    async def old_task_superseded() -> bool:
        tasks = await system.call(
            "verification", "GET", "/api/v1/tasks", as_user="supervisor1", params={"case_id": created["id"]}
        )
        return sorted(t["status"] for t in tasks.json()) == ["open", "superseded"]

    await eventually(old_task_superseded, what="the first team's task superseded")


async def test_audit_trail_is_readable_by_supervisors_and_chained(system: System) -> None:
    created = await create_complaint(system)
    await current_assignment(system, created["id"])

    async def trail(service: str) -> dict[str, Any]:
        response = await system.call(service, "GET", f"/api/v1/audit/{created['id']}", as_user="supervisor1")
        assert response.status_code == 200, response.text
        return dict(response.json())

    intake_trail = await trail("intake")
    assert intake_trail["chain_intact"] and intake_trail["entries"][0]["action"] == "complaint_received"
    routing_trail = await trail("routing")
    assert routing_trail["chain_intact"] and routing_trail["entries"][0]["action"] == "assigned"
    assert "王建国" not in str(intake_trail)
    forbidden = await system.call("intake", "GET", f"/api/v1/audit/{created['id']}", as_user="operator1")
    assert forbidden.status_code == 403
