"""The whole pipeline through the four services' HTTP APIs and real NATS, on each database."""

from __future__ import annotations

from typing import Any

from tests import fixtures
from tests.support import System, eventually


async def create_complaint(system: System, **overrides: Any) -> dict[str, Any]:
    response = await system.call(
        "intake", "POST", "/api/v1/complaints", as_user="operator1", json=fixtures.complaint(**overrides)
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def current_assignment(system: System, case_id: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        response = await system.call(
            "routing", "GET", "/api/v1/assignments", as_user="supervisor1", params={"case_id": case_id}
        )
        return response.json() if response.status_code == 200 else None

    return dict(await eventually(probe, what="assignment"))


async def task_for(system: System, case_id: str, inspector: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        response = await system.call(
            "verification", "GET", "/api/v1/tasks", as_user=inspector, params={"case_id": case_id}
        )
        assert response.status_code == 200, response.text
        open_tasks = [t for t in response.json() if t["status"] in ("open", "claimed")]
        return open_tasks[0] if open_tasks else None

    return dict(await eventually(probe, what="task"))


async def task_history(system: System, task_id: str) -> list[tuple[str, str, str]]:
    """A task's history as a supervisor sees it: what to print when a test finds it moved on."""
    response = await system.call("verification", "GET", f"/api/v1/tasks/{task_id}", as_user="supervisor1")
    assert response.status_code == 200, response.text
    return [(h["action"], h["actor"], h.get("note") or "") for h in response.json()["history"]]


async def public_status(system: System, created: dict[str, Any]) -> dict[str, Any]:
    response = await system.call(
        "feedback",
        "POST",
        "/api/v1/public/lookup",
        json={"tracking_code": created["tracking_code"], "query_secret": created["query_secret"]},
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def wait_status(system: System, created: dict[str, Any], status: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        try:
            found = await public_status(system, created)
        except AssertionError:
            return None
        return found if found["status"] == status else None

    return dict(await eventually(probe, what=f"public status {status}"))


async def conclude(
    system: System, case_id: str, inspector: str, outcome: str = "partly_substantiated"
) -> None:
    task = await task_for(system, case_id, inspector)
    claimed = await system.call(
        "verification", "POST", f"/api/v1/tasks/{task['id']}/claim", as_user=inspector
    )
    assert claimed.status_code == 200, claimed.text
    finding = await system.call(
        "verification",
        "POST",
        f"/api/v1/tasks/{task['id']}/finding",
        as_user=inspector,
        json={
            "outcome": outcome,
            "summary": "经调取执法记录仪视频并询问在场人员，民警言语不文明属实，已对其批评教育。",
        },
    )
    assert finding.status_code == 200, finding.text


async def approve_answer(system: System, case_id: str) -> dict[str, Any]:
    async def probe() -> list[dict[str, Any]] | None:
        response = await system.call(
            "feedback", "GET", "/api/v1/answers", as_user="supervisor1", params={"case_id": case_id}
        )
        pending = [a for a in response.json() if a["status"] == "pending_approval"]
        return pending or None

    answers = await eventually(probe, what="answer draft")
    approved = await system.call(
        "feedback", "POST", f"/api/v1/answers/{answers[0]['id']}/approve", as_user="supervisor1"
    )
    assert approved.status_code == 200, approved.text
    return dict(approved.json())


async def test_complaint_travels_the_whole_way(system: System) -> None:
    created = await create_complaint(system)
    assert set(created) >= {"id", "tracking_code", "query_secret"}

    assignment = await current_assignment(system, created["id"])
    assert assignment["case_id"] == created["id"]
    assert assignment["team_code"] == "411681"
    assert assignment["kind"] == "county"
    assert assignment["rule"] == "ordinary_county"
    assert assignment["reasons"]

    task = await task_for(system, created["id"], "inspector-411681")
    assert task["team_code"] == "411681" and task["status"] == "open" and task["due_at"]

    await conclude(system, created["id"], "inspector-411681")
    await wait_status(system, created, "concluded")
    approved = await approve_answer(system, created["id"])
    assert approved["status"] == "delivered"

    result = await wait_status(system, created, "answered")
    assert "部分属实" in result["answer"]
    assert "30日内" in result["answer"]
    stages = [entry["stage"] for entry in result["timeline"]]
    assert stages[:5] == ["received", "routed", "verifying", "concluded", "answered"]
    # Nothing that names a person reaches the public page.
    for forbidden in ("王建国", "李某", "inspector-411681", "041234"):
        assert forbidden not in str(result)

    # Intake recorded each read of the contact: feedback's, to tell the complainant the complaint
    # was accepted (告知受理), then to deliver the answer.  The notice is sent by feedback's delivery
    # worker, queued when the task was claimed: on a busy machine it may come after the answer.
    async def both_reads() -> list[dict[str, Any]]:
        accesses = await system.call(
            "intake", "GET", f"/api/v1/complaints/{created['id']}/identity-accesses", as_user="supervisor1"
        )
        found: list[dict[str, Any]] = accesses.json()
        return found if len(found) >= 2 else []

    reads = await eventually(both_reads, what="the notice's and the answer's reads of the contact")
    assert [a["accessor"] for a in reads] == ["service:feedback", "service:feedback"]
    assert "发送受理告知" in {a["reason"] for a in reads}


async def test_public_query_reveals_nothing_for_wrong_code_or_secret(system: System) -> None:
    created = await create_complaint(system)
    await current_assignment(system, created["id"])
    wrong_secret = await system.call(
        "feedback",
        "POST",
        "/api/v1/public/lookup",
        json={"tracking_code": created["tracking_code"], "query_secret": "AAAAA-BBBBB"},
    )
    unknown_code = await system.call(
        "feedback",
        "POST",
        "/api/v1/public/lookup",
        json={"tracking_code": "C000000ZZZZZZ", "query_secret": created["query_secret"]},
    )
    assert wrong_secret.status_code == unknown_code.status_code == 404
    assert wrong_secret.json() == unknown_code.json()
    assert wrong_secret.headers["cache-control"] == "no-store"


async def test_unsatisfied_rating_reopens_at_another_team(system: System) -> None:
    created = await create_complaint(system)
    first = await current_assignment(system, created["id"])
    await conclude(system, created["id"], f"inspector-{first['team_code']}")
    await wait_status(system, created, "concluded")
    await approve_answer(system, created["id"])
    await wait_status(system, created, "answered")

    rating = await system.call(
        "feedback",
        "POST",
        "/api/v1/public/rating",
        json={
            "tracking_code": created["tracking_code"],
            "query_secret": created["query_secret"],
            "rating": "unsatisfied",
            "reason": "没有人联系我核实情况",
        },
    )
    assert rating.status_code == 200, rating.text
    assert (await public_status(system, created))["status"] == "reopened"

    async def new_assignment() -> dict[str, Any] | None:
        current = await current_assignment(system, created["id"])
        return current if current["round"] == 2 else None

    second = await eventually(new_assignment, what="second assignment")
    assert second["team_code"] != first["team_code"]
    assert second["team_code"] == "411600"


async def test_suggestion_reaches_its_deputy_only(system: System) -> None:
    response = await system.call(
        "intake", "POST", "/api/v1/suggestions", as_user="operator1", json=fixtures.suggestion()
    )
    assert response.status_code == 201, response.text
    created = response.json()
    other = await system.call(
        "intake",
        "POST",
        "/api/v1/suggestions",
        as_user="operator1",
        json=fixtures.suggestion(
            deputy={"name": "李桂英", "delegation": "郸城县代表团", "phone": "13800000102"}
        ),
    )
    assert other.status_code == 201

    async def probe() -> list[dict[str, Any]] | None:
        mine = await system.call("feedback", "GET", "/api/v1/deputy/suggestions", as_user="deputy1")
        rows = [s for s in mine.json() if s["case_id"] == created["id"] and s["team_code"]]
        return mine.json() if rows else None

    rows = await eventually(probe, what="deputy view")
    assert {r["case_id"] for r in rows} >= {created["id"]}
    assert other.json()["id"] not in {r["case_id"] for r in rows}
    row = next(r for r in rows if r["case_id"] == created["id"])
    assert row["team_code"] == "411600" and row["due_at"] and row["status"] in ("routed", "received")
