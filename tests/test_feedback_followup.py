"""Follow-up (回访): ratings by the complainant or an operator, review requests (复查) within the
period, reopening at a higher level up to the limit, and extended deadlines told to the complainant.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from services.feedback.context import FeedbackContext
from services.feedback.settings import FeedbackSettings
from shared.db import utcnow
from shared.events import DeadlineExtended
from tests import fixtures
from tests.support import TEST_SECRET_KEY, NatsServer, System, eventually
from tests.test_feedback_support import (
    RestartableSystem,
    SmsGateway,
    answered_complaint,
    approve,
    conclude_as,
    create,
    deliveries,
    feedback_system,
    intake_status,
    outside_world_env,
    pending_answer,
    publish_event,
    running_gateway,
    set_answer_served_at,
)
from tests.test_pipeline import current_assignment, public_status, task_for, wait_status


@pytest.fixture(scope="module")
async def gateway() -> AsyncIterator[SmsGateway]:
    async with running_gateway() as running:
        yield running


@pytest.fixture(scope="module")
async def system(
    backend: str, nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory, gateway: SmsGateway
) -> AsyncIterator[RestartableSystem]:
    # One reopening allowed, so the limit is reached within a test; retries slow enough that
    # feedback can be stopped between two attempts.
    env = outside_world_env(gateway=gateway, mailbox=None) | {
        "MAX_REOPENS": "1",
        "DELIVERY_RETRY_BASE_SECONDS": "3",
        "DELIVERY_RETRY_MAX_SECONDS": "3",
    }
    async with feedback_system(
        backend=backend,
        root=tmp_path_factory.mktemp(f"feedback-followup-{backend}"),
        nats_url=nats_server.url,
        env=env,
    ) as running:
        yield running


def secrets(created: dict[str, Any]) -> dict[str, str]:
    return {"tracking_code": created["tracking_code"], "query_secret": created["query_secret"]}


async def public(system: System, path: str, body: dict[str, Any]) -> Any:
    return await system.call("feedback", "POST", f"/api/v1/public/{path}", json=body)


async def assignment_in_round(system: System, case_id: str, round_: int) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        current = await current_assignment(system, case_id)
        return current if current["round"] == round_ else None

    return dict(await eventually(probe, what=f"assignment of round {round_}"))


async def test_operator_records_unsatisfied_rating_and_another_team_handles_it(system: System) -> None:
    created, _ = await answered_complaint(system, complainant={"phone": fixtures.unique_mobile()})
    first = await current_assignment(system, created["id"])

    rated = await system.call(
        "feedback",
        "POST",
        f"/api/v1/cases/{created['id']}/rating",
        as_user="operator1",
        json={"rating": "unsatisfied", "reason": "回访时投诉人表示没有人联系其核实情况"},
    )
    assert rated.status_code == 200, rated.text
    assert rated.json()["status"] == "reopened"
    second = await assignment_in_round(system, created["id"], 2)
    assert second["team_code"] != first["team_code"]

    result = await public_status(system, created)
    assert result["status"] in ("reopened", "routed") and not result["can_rate"]
    assert "不满意，已提级重新办理" in [e["label"] for e in result["timeline"]]
    assert "回访时" not in str(result)  # the reason is not for the public page
    complaint = await intake_status(system, created["id"], "routed")
    assert complaint["last_rating"] == "unsatisfied"


async def test_satisfied_rating_closes_the_matter_once(system: System) -> None:
    created, _ = await answered_complaint(system, complainant={"phone": fixtures.unique_mobile()})
    rated = await public(system, "rating", {**secrets(created), "rating": "satisfied"})
    assert rated.status_code == 200, rated.text
    assert rated.json()["status"] == "closed"
    again = await public(
        system, "rating", {**secrets(created), "rating": "unsatisfied", "reason": "改变主意"}
    )
    assert again.status_code == 409 and again.json()["detail"][0]["field"] == "rating"
    by_operator = await system.call(
        "feedback",
        "POST",
        f"/api/v1/cases/{created['id']}/rating",
        as_user="operator1",
        json={"rating": "basically_satisfied"},
    )
    assert by_operator.status_code == 409
    await intake_status(system, created["id"], "closed")
    assert (await public_status(system, created))["rating"] == "satisfied"


async def test_review_request_within_the_period_reopens_at_a_higher_level(system: System) -> None:
    created, _ = await answered_complaint(system, complainant={"phone": fixtures.unique_mobile()})
    first = await current_assignment(system, created["id"])
    answers = await system.call(
        "feedback", "GET", "/api/v1/answers", as_user="supervisor1", params={"case_id": created["id"]}
    )
    served_at = datetime.fromisoformat(answers.json()[0]["served_at"])

    before = await public_status(system, created)
    assert before["can_request_review"]
    ctx = FeedbackContext.from_settings(FeedbackSettings(secret_key=TEST_SECRET_KEY))
    expected = ctx.deadlines.later_clock("review_request", calendar=ctx.calendar, start=served_at).due_at
    assert datetime.fromisoformat(before["review_until"]) == expected
    assert {"name": "review_request", "label": "申请复查期限"}.items() <= next(
        c for c in before["clocks"] if c["name"] == "review_request"
    ).items()

    requested = await public(
        system, "review-request", {**secrets(created), "reason": "核查结论与事实不符，要求复查"}
    )
    assert requested.status_code == 200, requested.text
    assert requested.json()["status"] == "reopened"
    second = await assignment_in_round(system, created["id"], 2)
    assert second["team_code"] != first["team_code"]
    labels = [e["label"] for e in (await public_status(system, created))["timeline"]]
    assert "已申请复查" in labels and "申请复查，已提级重新办理" in labels


async def test_review_request_after_the_period_is_refused(system: System) -> None:
    created, approved = await answered_complaint(system, complainant={"phone": fixtures.unique_mobile()})
    await set_answer_served_at(system, approved["id"], utcnow() - timedelta(days=40))

    late = await public(
        system, "review-request", {**secrets(created), "reason": "核查结论与事实不符，要求复查"}
    )
    assert late.status_code == 409, late.text
    problem = late.json()["detail"][0]
    assert problem["field"] == "review_until"
    assert "30日内" in problem["message"] and "届满" in problem["message"]
    by_operator = await system.call(
        "feedback",
        "POST",
        f"/api/v1/cases/{created['id']}/review-request",
        as_user="operator1",
        json={"reason": "投诉人来电要求复查"},
    )
    assert by_operator.status_code == 409 and by_operator.json()["detail"][0]["field"] == "review_until"
    after = await public_status(system, created)
    assert after["status"] == "answered" and not after["can_request_review"]
    assert (await current_assignment(system, created["id"]))["round"] == 1

    # Twenty days on, the period is still running: the operator's request is taken.
    await set_answer_served_at(system, approved["id"], utcnow() - timedelta(days=20))
    in_time = await system.call(
        "feedback",
        "POST",
        f"/api/v1/cases/{created['id']}/review-request",
        as_user="operator1",
        json={"reason": "投诉人来电要求复查"},
    )
    assert in_time.status_code == 200, in_time.text
    assert in_time.json()["status"] == "reopened"
    await assignment_in_round(system, created["id"], 2)


async def test_reopening_is_limited_then_the_matter_is_closed_with_a_note(system: System) -> None:
    created, _ = await answered_complaint(system, complainant={"phone": fixtures.unique_mobile()})
    unsatisfied = {**secrets(created), "rating": "unsatisfied", "reason": "处理太轻"}
    assert (await public(system, "rating", unsatisfied)).json()["status"] == "reopened"
    second = await assignment_in_round(system, created["id"], 2)

    await conclude_as(system, created["id"], f"inspector-{second['team_code']}")
    await wait_status(system, created, "concluded")
    await approve(system, (await pending_answer(system, created["id"]))["id"])
    await wait_status(system, created, "answered")

    final = await public(system, "rating", unsatisfied)
    assert final.status_code == 200, final.text
    assert final.json()["status"] == "closed" and "重新办理1次" in final.json()["message"]
    result = await public_status(system, created)
    assert result["status"] == "closed"
    assert any(e["stage"] == "closed" and "依规办结" in e["label"] for e in result["timeline"])
    await intake_status(system, created["id"], "closed")
    refused = await public(system, "review-request", {**secrets(created), "reason": "仍然不服"})
    assert refused.status_code == 409 and "不再受理复查申请" in refused.json()["detail"][0]["message"]
    assert (await current_assignment(system, created["id"]))["round"] == 2


async def test_extended_deadline_shows_on_the_public_query_and_is_sent_to_the_complainant(
    system: System, gateway: SmsGateway
) -> None:
    phone = fixtures.unique_mobile()
    created = await create(system, complainant={"phone": phone})
    assignment = await current_assignment(system, created["id"])
    task = await task_for(system, created["id"], f"inspector-{assignment['team_code']}")
    await wait_status(system, created, "routed")
    new_due = datetime.fromisoformat("2026-12-04T17:30:00+08:00")
    await publish_event(
        system,
        DeadlineExtended(
            case_id=created["id"],
            actor="supervisor1",
            task_id=task["id"],
            clock="verification",
            new_due_at=new_due,
            reason="需调取异地监控，经支队领导批准",
        ),
    )

    async def extended() -> dict[str, Any] | None:
        result = await public_status(system, created)
        clock = next(c for c in result["clocks"] if c["name"] == "verification")
        return result if datetime.fromisoformat(clock["due_at"]) == new_due and clock["extended"] else None

    result = await eventually(extended, what="extended clock")
    assert "办理期限已延长至2026年12月04日" in [e["label"] for e in result["timeline"]]
    assert "异地监控" not in str(result)

    async def notice_sent() -> list[dict[str, Any]] | None:
        found = await deliveries(system, created["id"], kind="notice")
        return found if found and found[0]["status"] == "sent" else None

    [notice] = await eventually(notice_sent, what="extension notice")
    assert notice["channel"] == "sms"
    [message] = gateway.sent_to(phone)
    assert "2026年12月04日" in message["text"] and created["tracking_code"] in message["text"]
    assert "异地监控" not in message["text"]


async def test_a_pending_delivery_survives_a_restart_of_feedback(
    system: RestartableSystem, gateway: SmsGateway
) -> None:
    phone = fixtures.unique_mobile()
    gateway.fail_always = True
    try:
        created, approved = await answered_complaint(system, complainant={"phone": phone})
        [pending] = approved["deliveries"]
        assert pending["status"] == "pending" and pending["attempts"] == 1
        await system.stop("feedback")
    finally:
        gateway.fail_always = False
    await system.start("feedback")

    async def sent() -> list[dict[str, Any]] | None:
        found = await deliveries(system, created["id"])
        return found if found and found[0]["status"] == "sent" else None

    [delivery] = await eventually(sent, what="the delivery resumed after the restart")
    assert delivery["id"] == pending["id"]
    assert len(gateway.sent_to(phone)) == 1
    assert {p["key"] for p in gateway.posts_to(phone)} == {f"sv-delivery-{pending['id']}"}
    await intake_status(system, created["id"], "answered")


async def test_bad_input_on_follow_up_endpoints_names_the_field_and_changes_nothing(system: System) -> None:
    created = await create(system, complainant={"phone": fixtures.unique_mobile()})
    await wait_status(system, created, "routed")
    early_rating = await public(system, "rating", {**secrets(created), "rating": "satisfied"})
    assert early_rating.status_code == 409 and early_rating.json()["detail"][0]["field"] == "rating"
    early_review = await public(system, "review-request", {**secrets(created), "reason": "要求复查"})
    assert early_review.status_code == 409 and early_review.json()["detail"][0]["field"] == "status"

    cases: list[tuple[str, dict[str, Any], str]] = [
        ("rating", {**secrets(created), "rating": "great"}, "rating"),
        ("rating", {**secrets(created), "rating": "unsatisfied"}, "reason"),
        ("rating", {**secrets(created), "rating": "unsatisfied", "reason": "   "}, "reason"),
        ("rating", {**secrets(created), "rating": "satisfied", "stars": 5}, "stars"),
        ("review-request", {**secrets(created)}, "reason"),
        ("review-request", {**secrets(created), "reason": " "}, "reason"),
        ("review-request", {"tracking_code": created["tracking_code"], "reason": "要求复查"}, "query_secret"),
    ]
    for path, body, field in cases:
        response = await public(system, path, body)
        assert response.status_code == 422, (path, body, response.text)
        assert response.json()["detail"][0]["field"] == field, (path, body, response.json())
        assert response.headers["cache-control"] == "no-store"

    wrong = await public(
        system, "review-request", {**secrets(created), "query_secret": "AAAAA-BBBBB", "reason": "要求复查"}
    )
    lookup = await public(system, "lookup", {**secrets(created), "query_secret": "AAAAA-BBBBB"})
    assert wrong.status_code == lookup.status_code == 404 and wrong.json() == lookup.json()

    operator_cases: list[tuple[str, str, dict[str, Any], int]] = [
        ("operator1", f"/api/v1/cases/{created['id']}/rating", {"rating": "meh"}, 422),
        ("operator1", f"/api/v1/cases/{created['id']}/rating", {"rating": "satisfied"}, 409),
        ("operator1", f"/api/v1/cases/{created['id']}/review-request", {"reason": ""}, 422),
        ("operator1", "/api/v1/cases/no-such-case/rating", {"rating": "satisfied"}, 404),
        ("supervisor1", f"/api/v1/cases/{created['id']}/rating", {"rating": "satisfied"}, 403),
        ("deputy1", f"/api/v1/cases/{created['id']}/review-request", {"reason": "要求复查"}, 403),
    ]
    for user, path, body, status in operator_cases:
        response = await system.call("feedback", "POST", path, as_user=user, json=body)
        assert response.status_code == status, (path, body, response.text)
        if status in (409, 422):
            assert response.json()["detail"][0]["field"] in ("rating", "reason")

    result = await public_status(system, created)
    assert result["status"] == "routed" and result["rating"] is None
    assert not [e for e in result["timeline"] if e["stage"] in ("rated", "review", "reopened")]
