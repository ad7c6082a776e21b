"""Verification's clocks: the overdue ladder on working days and after downtime, extensions, refusals.

Findings and what follows them (review, evidence, rectification, the ledger, suggestions) are in
tests/test_verification_findings.py.  The helpers stay here because that module, the evidence
store's and the ledger close-off's tests take them from here.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import nats
import pytest

from services.verification.context import VerificationContext
from shared.clock import ControlledClock
from tests.support import System, eventually
from tests.test_pipeline import create_complaint, task_for

# The tests set verification's clock and tick its ladder over every clock: a system of their own.
pytestmark = pytest.mark.private_system

SHANGHAI = ZoneInfo("Asia/Shanghai")
LADDER = ["reminder", "due_today", "chase", "escalation", "rebuke"]


def local(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)


def controlled_clock(system: System, start: datetime) -> ControlledClock:
    ctx: VerificationContext = system.apps["verification"].state.verification
    clock = ControlledClock(start)
    ctx.clock = clock
    return clock


async def tick(system: System) -> int:
    return int(await system.apps["verification"].state.scheduler.tick())


async def clocks_of(system: System, task_id: str, user: str = "supervisor1") -> dict[str, dict[str, Any]]:
    response = await system.call("verification", "GET", f"/api/v1/tasks/{task_id}/clocks", as_user=user)
    assert response.status_code == 200, response.text
    return {c["name"]: c for c in response.json()}


async def claim(system: System, task_id: str, inspector: str) -> None:
    response = await system.call("verification", "POST", f"/api/v1/tasks/{task_id}/claim", as_user=inspector)
    assert response.status_code == 200, response.text


async def b_class_reply(system: System, task_id: str, summary: str) -> Any:
    """The lead team's reply to a suggestion, classified B (being solved): it waits for a follow-up."""
    return await system.call(
        "verification",
        "POST",
        f"/api/v1/tasks/{task_id}/finding",
        as_user="inspector-411600",
        json={
            "outcome": "no_finding",
            "no_finding_reason": "建议答复",
            "classification": "B",
            "summary": summary,
        },
    )


async def follow_up_reply(system: System, task_id: str, summary: str) -> Any:
    """The follow-up reply that closes a B-class suggestion, classified A (solved)."""
    return await system.call(
        "verification",
        "POST",
        f"/api/v1/tasks/{task_id}/follow-up",
        as_user="inspector-411600",
        json={"summary": summary, "classification": "A"},
    )


async def ladder_events(system: System, case_id: str) -> list[str]:
    nc = await nats.connect(system.nats_url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe("sv.LadderStepReached.*", stream="SUPERVISION")
        steps: list[str] = []
        while True:
            try:
                messages = await sub.fetch(200, timeout=0.5)
            except TimeoutError:
                break
            for msg in messages:
                data = json.loads(msg.data)
                if data["case_id"] == case_id:
                    steps.append(f"{data['clock']}:{data['step']}")
                await msg.ack()
        await sub.unsubscribe()
        return steps
    finally:
        await nc.drain()


async def test_overdue_ladder_fires_each_step_once_on_working_days(system: System) -> None:
    clock = controlled_clock(system, local("2026-11-02T10:00:00"))
    created = await create_complaint(system, received_at="2026-11-02T09:14:00+08:00")
    task = await task_for(system, created["id"], "inspector-411681")
    await claim(system, task["id"], "inspector-411681")
    await tick(system)
    states = await clocks_of(system, task["id"])
    verification = states["verification"]
    # 13 working days after Monday 2 November 2026: Thursday 19 November, end of the working day.
    assert datetime.fromisoformat(verification["due_at"]).astimezone(SHANGHAI) == local("2026-11-19T17:30:00")
    assert verification["steps_taken"] == [] and verification["next_step"] == "reminder"
    # The acceptance clock stops when feedback has told the complainant, not on claiming
    # (tests/test_feedback_clocks.py); here no SMS gateway is set, so it runs on.
    assert states["acceptance_notice"]["status"] == "running"

    expected = [
        ("2026-11-13T18:00:00", []),
        ("2026-11-16T09:30:00", ["reminder"]),  # three working days before the 19th
        ("2026-11-19T09:30:00", ["reminder", "due_today"]),
        ("2026-11-20T09:30:00", ["reminder", "due_today", "chase", "escalation"]),
        ("2026-11-26T18:00:00", ["reminder", "due_today", "chase", "escalation"]),
        ("2026-11-27T09:30:00", LADDER),  # more than five working days overdue
    ]
    for moment, steps in expected:
        clock.set(local(moment))
        await tick(system)
        await tick(system)  # a second pass at the same moment takes nothing more
        assert (await clocks_of(system, task["id"]))["verification"]["steps_taken"] == steps, moment

    async def published() -> list[str] | None:
        found = await ladder_events(system, created["id"])
        return found if len([e for e in found if e.startswith("verification:")]) >= len(LADDER) else None

    events = await eventually(published, what="ladder events")
    assert [e for e in events if e.startswith("verification:")] == [f"verification:{step}" for step in LADDER]
    # Inspectors of the team see the same clocks on their board.
    mine = await clocks_of(system, task["id"], user="inspector-411681")
    assert mine["verification"]["working_days_left"] < 0


async def test_after_downtime_the_scheduler_fires_what_fell_due_in_order(system: System) -> None:
    clock = controlled_clock(system, local("2026-11-03T10:00:00"))
    created = await create_complaint(system, received_at="2026-11-03T09:00:00+08:00")
    task = await task_for(system, created["id"], "inspector-411681")
    await claim(system, task["id"], "inspector-411681")
    await tick(system)
    clock.set(local("2026-12-15T10:00:00"))  # weeks without a scheduler running
    taken = await tick(system)
    assert taken >= len(LADDER)
    assert (await clocks_of(system, task["id"]))["verification"]["steps_taken"] == LADDER
    assert await tick(system) == 0


async def test_extension_moves_the_clock_once(system: System) -> None:
    clock = controlled_clock(system, local("2026-11-04T10:00:00"))
    created = await create_complaint(system, received_at="2026-11-04T09:00:00+08:00")
    task = await task_for(system, created["id"], "inspector-411681")
    await claim(system, task["id"], "inspector-411681")
    before = (await clocks_of(system, task["id"]))["verification"]

    too_long = await system.call(
        "verification",
        "POST",
        f"/api/v1/tasks/{task['id']}/extensions",
        as_user="inspector-411681",
        json={"clock": "verification", "days": 45, "reason": "需调取外地监控录像"},
    )
    assert too_long.status_code == 422 and too_long.json()["detail"][0]["field"] == "days"
    other_team = await system.call(
        "verification",
        "POST",
        f"/api/v1/tasks/{task['id']}/extensions",
        as_user="inspector-411623",
        json={"clock": "verification", "days": 10, "reason": "需调取外地监控录像"},
    )
    assert other_team.status_code == 404
    asked = await system.call(
        "verification",
        "POST",
        f"/api/v1/tasks/{task['id']}/extensions",
        as_user="inspector-411681",
        json={"clock": "verification", "days": 10, "reason": "需调取外地监控录像"},
    )
    assert asked.status_code == 201, asked.text
    again = await system.call(
        "verification",
        "POST",
        f"/api/v1/tasks/{task['id']}/extensions",
        as_user="inspector-411681",
        json={"clock": "verification", "days": 5, "reason": "再次申请"},
    )
    assert again.status_code == 409

    pending = await system.call(
        "verification", "GET", "/api/v1/extensions", as_user="supervisor1", params={"status": "pending"}
    )
    assert asked.json()["id"] in {e["id"] for e in pending.json()}
    not_by_inspector = await system.call(
        "verification",
        "POST",
        f"/api/v1/extensions/{asked.json()['id']}/decision",
        as_user="inspector-411681",
        json={"approve": True},
    )
    assert not_by_inspector.status_code == 403
    approved = await system.call(
        "verification",
        "POST",
        f"/api/v1/extensions/{asked.json()['id']}/decision",
        as_user="supervisor1",
        json={"approve": True, "note": "同意"},
    )
    assert approved.status_code == 200, approved.text
    after = (await clocks_of(system, task["id"]))["verification"]
    assert after["extended"] and after["original_due_at"] == before["due_at"]
    new_due = datetime.fromisoformat(after["due_at"]).astimezone(SHANGHAI)
    old_due = datetime.fromisoformat(before["due_at"]).astimezone(SHANGHAI)
    assert (new_due.date() - old_due.date()).days >= 10 and new_due.time().hour == 17
    tasks = await system.call(
        "verification", "GET", "/api/v1/tasks", as_user="supervisor1", params={"case_id": created["id"]}
    )
    assert tasks.json()[0]["due_at"] == after["due_at"]

    second = await system.call(
        "verification",
        "POST",
        f"/api/v1/tasks/{task['id']}/extensions",
        as_user="inspector-411681",
        json={"clock": "verification", "days": 5, "reason": "还需补充材料"},
    )
    assert second.status_code == 409  # one extension per clock

    clock.set(new_due + timedelta(days=1))
    late = await system.call(
        "verification",
        "POST",
        f"/api/v1/tasks/{task['id']}/extensions",
        as_user="inspector-411681",
        json={"clock": "acceptance_notice", "days": 5, "reason": "超期后申请"},
    )
    assert late.status_code == 422


async def test_refusal_needs_a_reason_and_changes_nothing(system: System) -> None:
    controlled_clock(system, local("2026-11-05T10:00:00"))
    created = await create_complaint(system, received_at="2026-11-05T09:00:00+08:00")
    task = await task_for(system, created["id"], "inspector-411681")
    await claim(system, task["id"], "inspector-411681")
    before = (await clocks_of(system, task["id"]))["verification"]
    asked = await system.call(
        "verification",
        "POST",
        f"/api/v1/tasks/{task['id']}/extensions",
        as_user="inspector-411681",
        json={"days": 7, "reason": "当事人外出务工，无法询问"},
    )
    bare = await system.call(
        "verification",
        "POST",
        f"/api/v1/extensions/{asked.json()['id']}/decision",
        as_user="supervisor1",
        json={"approve": False},
    )
    assert bare.status_code == 422 and bare.json()["detail"][0]["field"] == "note"
    refused = await system.call(
        "verification",
        "POST",
        f"/api/v1/extensions/{asked.json()['id']}/decision",
        as_user="supervisor1",
        json={"approve": False, "note": "理由不充分，可电话询问"},
    )
    assert refused.status_code == 200 and refused.json()["status"] == "refused"
    assert (await clocks_of(system, task["id"]))["verification"]["due_at"] == before["due_at"]


@pytest.mark.parametrize("path", ["/api/v1/tasks", "/api/v1/ledger", "/api/v1/extensions"])
async def test_no_token_no_access(system: System, path: str) -> None:
    response = await system.client("verification").get(path)
    assert response.status_code == 401
