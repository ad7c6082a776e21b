"""Deputies' suggestions and CPPCC members' proposals: the reply letter (.docx), the deputy's own
view and rating, B-class replies that wait for a follow-up, and nobody else's suggestions.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import docx
import pytest

from services.feedback.letters import DOCX_MEDIA_TYPE
from shared.auth import Principal, Role, issue_token
from shared.db import utcnow
from shared.events import CaseConcluded
from shared.workcalendar import SHANGHAI
from tests import fixtures
from tests.support import NatsServer, System, eventually, token_signer_for_tests
from tests.test_feedback_support import (
    approve,
    conclude_as,
    docx_paragraphs,
    feedback_system,
    outside_world_env,
    pending_answer,
    publish_event,
)
from tests.test_pipeline import current_assignment

REPLY = "一是厘清执法权责边界，制定执法权力清单。\n二是推进执法记录仪全程使用，纳入日常督察。"
LIU_MING = Principal(
    username="cppcc-liuming",
    role=Role.DEPUTY,
    deputy_name="刘明",
    deputy_delegation="市政协社会法制界",
    # As intake signs it for the only member of that name in the sector: the proposals, recorded
    # while the member had no account, are matched by name.
    deputy_name_unique=True,
)


@pytest.fixture(scope="module")
async def system(
    backend: str, nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[System]:
    async with feedback_system(
        backend=backend,
        root=tmp_path_factory.mktemp(f"feedback-deputy-{backend}"),
        nats_url=nats_server.url,
        env=outside_world_env(gateway=None, mailbox=None),
    ) as running:
        yield running


def as_liu_ming() -> dict[str, str]:
    token = issue_token(principal=LIU_MING, signer=token_signer_for_tests(), ttl=timedelta(minutes=30))
    return {"Authorization": f"Bearer {token}"}


async def create_suggestion(system: System, **overrides: Any) -> dict[str, Any]:
    response = await system.call(
        "intake", "POST", "/api/v1/suggestions", as_user="operator1", json=fixtures.suggestion(**overrides)
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def replied(
    system: System, classification: str, **overrides: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A suggestion handled by its team and the reply letter approved."""
    created = await create_suggestion(system, **overrides)
    assignment = await current_assignment(system, created["id"])
    task = await conclude_as(
        system,
        created["id"],
        f"inspector-{assignment['team_code']}",
        outcome="substantiated",
        summary=REPLY,
        classification=classification,
    )
    created["task"] = task
    answer = await pending_answer(system, created["id"])
    return created, await approve(system, answer["id"])


async def my_row(
    system: System, case_id: str, headers: dict[str, str] | None = None
) -> dict[str, Any] | None:
    response = await system.call(
        "feedback",
        "GET",
        "/api/v1/deputy/suggestions",
        as_user=None if headers else "deputy1",
        headers=headers,
    )
    assert response.status_code == 200, response.text
    return next((row for row in response.json() if row["case_id"] == case_id), None)


async def rate(
    system: System, case_id: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> Any:
    return await system.call(
        "feedback",
        "POST",
        f"/api/v1/deputy/suggestions/{case_id}/rating",
        as_user=None if headers else "deputy1",
        headers=headers,
        json=body,
    )


async def test_b_class_reply_letter_downloads_and_unsatisfied_sends_it_back(system: System) -> None:
    created, approved = await replied(system, "B")
    assert approved["status"] == "delivered" and approved["classification"] == "B"

    row = await my_row(system, created["id"])
    assert row is not None
    assert row["status"] == "answered" and row["classification"] == "B" and row["can_rate"]
    assert row["classification_label"].startswith("B类")
    assert row["lead_unit"] == "周口市公安局" and row["team_code"] == "411600" and row["team_name"]
    assert row["due_at"] and any(c["name"] == "deputy_reply" for c in row["clocks"])
    assert row["letter_url"] == f"/api/v1/deputy/suggestions/{created['id']}/letter"

    letter = await system.call("feedback", "GET", row["letter_url"], as_user="deputy1")
    assert letter.status_code == 200, letter.text
    assert letter.headers["content-type"] == DOCX_MEDIA_TYPE
    assert letter.headers["content-disposition"].startswith("attachment;")
    paragraphs = docx_paragraphs(letter.content)
    number = await suggestion_number(system, created["tracking_code"])
    assert paragraphs[0] == f"关于周口市第五届人民代表大会第三次会议第{number}号建议的答复"
    assert paragraphs[1] == "马刚代表："
    assert "一是厘清执法权责边界，制定执法权力清单。" in paragraphs
    assert any(p.startswith("办理类别：B类") for p in paragraphs)
    assert "感谢您对公安工作的关心和支持！" in paragraphs
    today = utcnow().astimezone(SHANGHAI).date()
    assert paragraphs[-4:] == [
        "周口市公安局督察支队",
        f"{today.year}年{today.month}月{today.day}日",
        "联系人：督察支队综合科",
        "联系电话：0394-8000000",
    ]
    # Word opens it: a real package with the core properties set.
    assert docx.Document(io.BytesIO(letter.content)).core_properties.title == paragraphs[0]

    rated = await rate(system, created["id"], {"rating": "unsatisfied", "reason": "未提出具体时间表"})
    assert rated.status_code == 200, rated.text
    assert rated.json()["status"] == "reopened"
    row = await my_row(system, created["id"])
    assert row is not None and row["status"] == "reopened" and not row["can_rate"]
    again = await rate(system, created["id"], {"rating": "satisfied"})
    assert again.status_code == 409


async def test_unsatisfied_deputy_gets_the_same_team_again_on_a_one_month_clock(system: System) -> None:
    created, _ = await replied(system, "C")
    first = await current_assignment(system, created["id"])
    rated = await rate(system, created["id"], {"rating": "unsatisfied", "reason": "答复过于笼统"})
    assert rated.status_code == 200, rated.text

    async def rehandling() -> dict[str, Any] | None:
        current = await current_assignment(system, created["id"])
        return current if current["round"] == 2 else None

    second = await eventually(rehandling, timeout=10, what="re-handling assignment")
    assert second["team_code"] == first["team_code"] == "411600"

    async def new_task() -> list[dict[str, Any]] | None:
        response = await system.call(
            "verification",
            "GET",
            "/api/v1/tasks",
            as_user="inspector-411600",
            params={"case_id": created["id"]},
        )
        found = [t for t in response.json() if t["round"] == 2 and t["status"] == "open"]
        return found or None

    [task] = await eventually(new_task, timeout=10, what="re-handling task for 411600")
    [clock] = second["clocks"]
    assert clock["name"] == "rehandle" and task["due_at"]

    async def view_shows_the_new_clock() -> dict[str, Any] | None:
        row = await my_row(system, created["id"])
        return row if row and any(c["name"] == "rehandle" for c in row["clocks"]) else None

    row = await eventually(view_shows_the_new_clock, what="deputy view with the re-handling clock")
    assert datetime.fromisoformat(row["due_at"]) == datetime.fromisoformat(clock["due_at"])
    assert row["status"] == "reopened"


async def test_another_members_suggestion_is_invisible_and_a_proposal_is_answered_to_a_member(
    system: System,
) -> None:
    proposal, _ = await replied(
        system,
        "A",
        kind="cppcc_proposal",
        session="政协周口市第五届委员会第三次会议",
        deputy={"name": "刘明", "delegation": "市政协社会法制界"},
    )
    case_id = proposal["id"]
    assert await my_row(system, case_id) is None
    for method, path, body in (
        ("GET", f"/api/v1/deputy/suggestions/{case_id}/letter", None),
        ("POST", f"/api/v1/deputy/suggestions/{case_id}/rating", {"rating": "satisfied"}),
    ):
        theirs = await system.call("feedback", method, path, as_user="deputy1", json=body)
        missing = await system.call(
            "feedback", method, path.replace(case_id, "no-such-case"), as_user="deputy1", json=body
        )
        assert theirs.status_code == missing.status_code == 404
        assert theirs.json() == missing.json()

    row = await my_row(system, case_id, headers=as_liu_ming())
    assert row is not None and row["kind"] == "cppcc_proposal" and row["can_rate"]
    letter = await system.call("feedback", "GET", row["letter_url"], headers=as_liu_ming())
    assert letter.status_code == 200
    paragraphs = docx_paragraphs(letter.content)
    assert paragraphs[0].startswith("关于政协周口市第五届委员会第三次会议第") and paragraphs[0].endswith(
        "号提案的答复"
    )
    assert paragraphs[1] == "刘明委员："
    rated = await rate(system, case_id, {"rating": "satisfied"}, headers=as_liu_ming())
    assert rated.status_code == 200 and rated.json()["status"] == "closed"


async def suggestion_number(system: System, tracking_code: str) -> str:
    response = await system.call(
        "intake", "GET", "/api/v1/suggestions", as_user="supervisor1", params={"tracking_code": tracking_code}
    )
    return str(response.json()[0]["number"])


async def intake_suggestion_status(system: System, tracking_code: str) -> str:
    response = await system.call(
        "intake", "GET", "/api/v1/suggestions", as_user="supervisor1", params={"tracking_code": tracking_code}
    )
    assert response.status_code == 200, response.text
    return str(response.json()[0]["status"])


async def test_accepted_b_class_reply_stays_open_until_the_follow_up_is_rated(system: System) -> None:
    created, approved = await replied(system, "B")
    rated = await rate(system, created["id"], {"rating": "basically_satisfied"})
    assert rated.status_code == 200, rated.text
    assert rated.json()["status"] == "answered" and "B类" in rated.json()["message"]
    row = await my_row(system, created["id"])
    assert row is not None and row["awaiting_follow_up"] and not row["can_rate"]
    assert row["rating"] == "basically_satisfied" and "B类" in row["status_label"]
    assert await eventually(
        lambda: _status_is(system, created["tracking_code"], "answered"), what="intake keeps it open"
    )

    # The team's follow-up reply, as verification publishes it once the planned measures are done.
    await publish_event(
        system,
        CaseConcluded(
            case_id=created["id"],
            actor="inspector-411600",
            case_kind="suggestion",
            task_id=created["task"]["id"],
            team_code="411600",
            outcome="substantiated",
            summary="建议所提执法记录仪全程使用事项已于本年度全部落实，并纳入日常督察。",
            classification="A",
            follow_up=True,
        ),
    )
    follow_up = await pending_answer(system, created["id"])
    assert follow_up["follow_up"] and follow_up["id"] != approved["id"]
    preview = await system.call(
        "feedback", "GET", f"/api/v1/answers/{follow_up['id']}/letter", as_user="supervisor1"
    )
    assert preview.status_code == 200 and docx_paragraphs(preview.content)[0].endswith(
        "号建议办理落实情况的答复"
    )
    await approve(system, follow_up["id"])

    row = await my_row(system, created["id"])
    assert row is not None and row["can_rate"] and row["reply"].startswith("建议所提执法记录仪")
    letter = await system.call("feedback", "GET", row["letter_url"], as_user="deputy1")
    assert "办理落实情况的答复" in docx_paragraphs(letter.content)[0]
    closed = await rate(system, created["id"], {"rating": "satisfied"})
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    row = await my_row(system, created["id"])
    assert row is not None and row["status"] == "closed" and not row["awaiting_follow_up"]
    assert await eventually(
        lambda: _status_is(system, created["tracking_code"], "closed"), what="intake closed"
    )


async def _status_is(system: System, tracking_code: str, status: str) -> bool:
    return await intake_suggestion_status(system, tracking_code) == status


async def test_bad_input_on_deputy_endpoints_names_the_field_and_changes_nothing(system: System) -> None:
    created = await create_suggestion(system)
    await current_assignment(system, created["id"])
    early = await rate(system, created["id"], {"rating": "satisfied"})
    assert early.status_code == 409 and early.json()["detail"][0]["field"] == "rating"
    no_letter = await system.call(
        "feedback", "GET", f"/api/v1/deputy/suggestions/{created['id']}/letter", as_user="deputy1"
    )
    assert no_letter.status_code == 404 and no_letter.json()["detail"] == "答复函尚未发出"

    for body, field in (
        ({"rating": "great"}, "rating"),
        ({"rating": "unsatisfied"}, "reason"),
        ({"rating": "satisfied", "comment": "好"}, "comment"),
        ({}, "rating"),
    ):
        response = await rate(system, created["id"], body)
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["field"] == field
    as_operator = await system.call(
        "feedback",
        "POST",
        f"/api/v1/deputy/suggestions/{created['id']}/rating",
        as_user="operator1",
        json={"rating": "satisfied"},
    )
    assert as_operator.status_code == 403
    review = await system.call(
        "feedback",
        "POST",
        f"/api/v1/cases/{created['id']}/review-request",
        as_user="operator1",
        json={"reason": "要求复查"},
    )
    assert review.status_code == 409 and review.json()["detail"][0]["field"] == "case_id"

    row = await my_row(system, created["id"])
    assert row is not None and row["status"] in ("routed", "received") and row["rating"] is None
