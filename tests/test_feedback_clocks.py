"""Feedback's clocks through the running services: the acceptance notice (告知受理), the answer-approval
ladder, and the follow-up call (回访) with its outcomes, as the operator records them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from shared.clock import ControlledClock
from shared.db import utcnow
from shared.events import LadderStepReached
from tests import fixtures
from tests.support import System, eventually
from tests.test_feedback_support import (
    ACCEPTANCE_KEY,
    RestartableSystem,
    SmsGateway,
    answered_complaint,
    approve,
    concluded_complaint,
    create,
    deliveries,
    gateway_system_fixtures,
    intake_status,
    publish_event,
)
from tests.test_pipeline import current_assignment, public_status, task_for, wait_status

gateway, system = gateway_system_fixtures("feedback-clocks")


def feedback_app(system: RestartableSystem) -> Any:
    assert system.services is not None
    return system.services.servers["feedback"].config.app


def feedback_clock(system: RestartableSystem, start: datetime) -> ControlledClock:
    clock = ControlledClock(start)
    feedback_app(system).state.clock = clock
    return clock


async def tick(system: RestartableSystem) -> int:
    return int(await feedback_app(system).state.clock_scheduler.tick())


async def task_clocks(system: System, task_id: str) -> dict[str, dict[str, Any]]:
    response = await system.call(
        "verification", "GET", f"/api/v1/tasks/{task_id}/clocks", as_user="supervisor1"
    )
    assert response.status_code == 200, response.text
    return {c["name"]: c for c in response.json()}


async def clocks_of(system: System, case_id: str, user: str = "supervisor1") -> dict[str, dict[str, Any]]:
    response = await system.call("feedback", "GET", "/api/v1/clocks", as_user=user, params={"open": "true"})
    assert response.status_code == 200, response.text
    return {c["clock"]: c for c in response.json() if c["case_id"] == case_id}


async def notifications_of(system: System, user: str, case_id: str, kind: str) -> list[dict[str, Any]]:
    response = await system.call(
        "feedback", "GET", "/api/v1/notifications", as_user=user, params={"limit": 200}
    )
    assert response.status_code == 200, response.text
    return [n for n in response.json() if n["case_id"] == case_id and n["kind"] == kind]


async def claim_first_task(system: System, case_id: str) -> dict[str, Any]:
    assignment = await current_assignment(system, case_id)
    inspector = f"inspector-{assignment['team_code']}"
    task = await task_for(system, case_id, inspector)
    claimed = await system.call(
        "verification", "POST", f"/api/v1/tasks/{task['id']}/claim", as_user=inspector
    )
    assert claimed.status_code == 200, claimed.text
    return dict(task)


async def acceptance_clock_stopped(system: System, task_id: str) -> None:
    async def stopped() -> bool:
        return bool((await task_clocks(system, task_id))["acceptance_notice"]["status"] == "stopped")

    await eventually(stopped, what="acceptance clock stopped")


async def follow_ups(system: System, user: str = "operator1") -> dict[str, dict[str, Any]]:
    response = await system.call("feedback", "GET", "/api/v1/follow-ups", as_user=user)
    assert response.status_code == 200, response.text
    return {c["case_id"]: c for c in response.json()}


async def follow_up_due(system: System, case_id: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        return (await follow_ups(system)).get(case_id)

    return dict(await eventually(probe, what="follow-up call due"))


async def outcome(system: System, case_id: str, user: str = "operator1", **body: Any) -> Any:
    return await system.call(
        "feedback", "POST", f"/api/v1/follow-ups/{case_id}/outcome", as_user=user, json=body
    )


# --- The acceptance notice ------------------------------------------------------------------------


async def test_named_complaint_gets_its_acceptance_sms_when_claimed_and_the_clock_stops(
    system: System, gateway: SmsGateway
) -> None:
    phone = fixtures.unique_mobile()
    created = await create(system, complainant={"name": "王建国", "phone": phone, "anonymous": False})
    task = await claim_first_task(system, created["id"])

    async def sent() -> list[dict[str, Any]] | None:
        return gateway.sent_to(phone, notices=True) or None

    [message] = await eventually(sent, what="acceptance SMS")
    assert created["tracking_code"] in message["text"] and "已受理" in message["text"]
    assert "王建国" not in message["text"] and phone not in message["text"]
    assert [p["key"] for p in gateway.posts_to(phone, notices=True)] == [f"{ACCEPTANCE_KEY}{created['id']}"]
    await acceptance_clock_stopped(system, task["id"])
    assert (await task_clocks(system, task["id"]))["verification"]["status"] == "running"

    # The clock's ladder step arriving as well (or again) sends nothing more.
    await publish_event(
        system,
        LadderStepReached(
            case_id=created["id"],
            actor="scheduler",
            task_id=task["id"],
            clock="acceptance_notice",
            step="reminder",
            team_code=task["team_code"],
            due_at=utcnow(),
        ),
    )
    [notice] = await deliveries(system, created["id"], notices=True, kind="notice")
    assert notice["status"] == "sent" and notice["channel"] == "sms"
    assert len(gateway.sent_to(phone, notices=True)) == 1


async def test_without_a_phone_the_operators_record_the_notice_and_the_clock_stops(system: System) -> None:
    created = await create(
        system,
        complainant={"name": "李秀英", "phone": None, "address": "周口市川汇区七一路1号", "anonymous": False},
    )
    task = await claim_first_task(system, created["id"])

    async def failed() -> dict[str, Any] | None:
        found = await deliveries(system, created["id"], notices=True, kind="notice")
        return found[0] if found and found[0]["status"] == "failed" else None

    notice = await eventually(failed, what="acceptance notice handed to a person")
    assert "请" in (notice["last_error"] or "")
    items = await eventually(
        lambda: notifications_of(system, "operator1", created["id"], "acceptance_notice"),
        what="operator item",
    )
    assert len(items) == 1
    assert (await task_clocks(system, task["id"]))["acceptance_notice"]["status"] == "running"

    resolved = await system.call(
        "feedback",
        "POST",
        f"/api/v1/deliveries/{notice['id']}/resolve",
        as_user="operator1",
        json={"channel": "letter", "note": "已寄送受理告知书"},
    )
    assert resolved.status_code == 200, resolved.text
    await acceptance_clock_stopped(system, task["id"])


async def test_anonymous_complaint_gets_no_notice(system: System) -> None:
    created = await create(system, complainant={"anonymous": True})
    task = await claim_first_task(system, created["id"])

    async def verifying() -> bool:
        return bool((await public_status(system, created))["status"] == "verifying")

    await eventually(verifying, what="claim seen by feedback")
    assert await deliveries(system, created["id"], notices=True, kind="notice") == []
    assert "acceptance_notice" not in await task_clocks(system, task["id"])


# --- Answer approval --------------------------------------------------------------------------------


async def test_an_answer_waiting_for_approval_walks_its_ladder_once(system: RestartableSystem) -> None:
    created, answer = await concluded_complaint(system)

    async def started() -> dict[str, Any] | None:
        return (await clocks_of(system, created["id"])).get("answer_approval")

    clock_row = await eventually(started, what="approval clock")
    assert clock_row["label"] == "答复审批" and "2个工作日" in clock_row["rule"] and clock_row["source"]
    due_at = datetime.fromisoformat(clock_row["due_at"])
    clock = feedback_clock(system, utcnow())

    # Its first step is due at once: the supervisors are told an answer waits for them.
    # (The scheduler's own worker may take it first: either way it is taken once.)
    await tick(system)
    assert (await clocks_of(system, created["id"]))["answer_approval"]["last_step"] == "reminder"
    clock.set(due_at)
    await tick(system)
    assert (await clocks_of(system, created["id"]))["answer_approval"]["last_step"] == "due_today"
    clock.set(due_at + timedelta(days=7))
    await tick(system)
    state = (await clocks_of(system, created["id"]))["answer_approval"]
    assert state["last_step"] == "escalation" and state["next_step"] is None
    assert await tick(system) == 0  # a second pass takes nothing more

    items = await notifications_of(system, "supervisor1", created["id"], "approval_due")
    assert len(items) == 4  # one per step: reminder, due today, chase, escalation
    assert all(created["tracking_code"] in item["title"] for item in items)

    # Approval stops the clock; a leader, an operator or an inspector may not list the clocks.
    await approve(system, answer["id"])
    assert "answer_approval" not in await clocks_of(system, created["id"])
    for user in ("operator1", "inspector-411681"):
        refused = await system.call("feedback", "GET", "/api/v1/clocks", as_user=user)
        assert refused.status_code == 403


# --- The follow-up call (回访) ------------------------------------------------------------------------


async def test_follow_up_recorded_unsatisfied_reopens_as_a_public_unsatisfied_does(system: System) -> None:
    created, _ = await answered_complaint(system)
    first = await current_assignment(system, created["id"])
    call = await follow_up_due(system, created["id"])
    assert call["tracking_code"] == created["tracking_code"] and call["attempts"] == 0
    assert "phone" not in str(call) and "王建国" not in str(call)
    clocks = await clocks_of(system, created["id"])
    assert clocks["follow_up"]["label"] == "回访" and clocks["follow_up"]["rule"]

    missed = await outcome(system, created["id"], outcome="unreachable")
    assert missed.status_code == 200, missed.text
    assert missed.json()["attempts"] == 1 and not missed.json()["closed"]

    rated = await outcome(system, created["id"], outcome="unsatisfied", reason="回访时投诉人表示处理结果不公")
    assert rated.status_code == 200, rated.text
    assert rated.json()["status"] == "reopened"

    # The same as a public 不满意: another team handles it in round 2, intake learns the rating.
    async def second_round() -> dict[str, Any] | None:
        current = await current_assignment(system, created["id"])
        return current if current["round"] == 2 else None

    second = await eventually(second_round, what="round 2")
    assert second["team_code"] != first["team_code"]
    result = await public_status(system, created)
    assert "不满意，已提级重新办理" in [e["label"] for e in result["timeline"]]
    assert "回访时" not in str(result)
    complaint = await intake_status(system, created["id"], "routed")
    assert complaint["last_rating"] == "unsatisfied"
    assert created["id"] not in await follow_ups(system)
    assert "follow_up" not in await clocks_of(system, created["id"])


async def test_unreachable_three_times_ends_the_follow_up_with_a_note(system: System) -> None:
    created, _ = await answered_complaint(system)
    await follow_up_due(system, created["id"])
    for attempt in (1, 2):
        response = await outcome(system, created["id"], outcome="unreachable")
        assert response.json()["attempts"] == attempt and not response.json()["closed"]
    last = await outcome(system, created["id"], outcome="unreachable")
    assert last.status_code == 200 and last.json()["closed"] and "3次未接通" in last.json()["message"]
    assert created["id"] not in await follow_ups(system)
    again = await outcome(system, created["id"], outcome="unreachable")
    assert again.status_code == 409 and again.json()["detail"][0]["field"] == "case_id"


async def test_follow_up_review_request_and_satisfied_close_the_call(system: System) -> None:
    reviewed, _ = await answered_complaint(system)
    await follow_up_due(system, reviewed["id"])
    response = await outcome(system, reviewed["id"], outcome="review", reason="投诉人对结论有异议，申请复查")
    assert response.status_code == 200, response.text and response.json()["status"] == "reopened"
    assert reviewed["id"] not in await follow_ups(system)

    satisfied, _ = await answered_complaint(system)
    await follow_up_due(system, satisfied["id"])
    response = await outcome(system, satisfied["id"], outcome="basically_satisfied")
    assert response.status_code == 200 and response.json()["status"] == "closed"
    await intake_status(system, satisfied["id"], "closed")
    assert (await public_status(system, satisfied))["rating"] == "basically_satisfied"


async def test_bad_follow_up_input_names_the_field_and_changes_nothing(system: System) -> None:
    created, _ = await answered_complaint(system)
    await follow_up_due(system, created["id"])
    not_answered = await create(system)
    # Feedback must know the matter before its refusal can be about the answer, not a 404.
    await wait_status(system, not_answered, "routed")

    no_reason = await outcome(system, created["id"], outcome="unsatisfied")
    assert no_reason.status_code == 422 and no_reason.json()["detail"][0]["field"] == "reason"
    short = await outcome(system, created["id"], outcome="review", reason=" ")
    assert short.status_code == 422 and short.json()["detail"][0]["field"] == "reason"
    unknown = await outcome(system, created["id"], outcome="maybe")
    assert unknown.status_code == 422 and unknown.json()["detail"][0]["field"] == "outcome"
    early = await outcome(system, not_answered["id"], outcome="satisfied")
    assert early.status_code == 409 and early.json()["detail"][0]["field"] == "case_id"
    assert "尚未答复" in early.json()["detail"][0]["message"]
    missing = await outcome(system, "no-such-case", outcome="satisfied")
    assert missing.status_code == 404
    supervisor = await outcome(system, created["id"], user="supervisor1", outcome="satisfied")
    assert supervisor.status_code == 403

    # Nothing changed: the call is still due, unrated, with no attempt counted.
    call = (await follow_ups(system))[created["id"]]
    assert call["attempts"] == 0
    assert (await public_status(system, created))["status"] == "answered"
