"""A suggestion is its deputy's by account, not by name (issue 14).

Two deputies of one name in one delegation are two people: each sees, downloads and rates only
their own suggestions.  A suggestion recorded before accounts were linked (``SuggestionReceived``
v1, no account) is matched by name only for a deputy whose name is theirs alone in the delegation.
"""

from __future__ import annotations

import uuid
from typing import Any

from services.feedback.models import CaseView
from services.intake.accounts import DEMO_PASSWORD, create_user
from shared.db import utcnow
from shared.events import SuggestionReceived
from tests import fixtures
from tests.support import System, eventually
from tests.test_feedback_support import publish_event

NAME, DELEGATION = "王芳", "项城市代表团"
FIRST, SECOND = "deputy-wangfang-1", "deputy-wangfang-2"


async def _create_deputies(system: System) -> None:
    factory = system.apps["intake"].state.runtime.session_factory
    async with factory() as session, session.begin():
        for username in (FIRST, SECOND):
            await create_user(
                session=session,
                username=username,
                password=DEMO_PASSWORD,
                role="deputy",
                display_name=f"{NAME}代表",
                deputy_name=NAME,
                deputy_delegation=DELEGATION,
            )


async def _suggestion(system: System, **deputy: Any) -> Any:
    body = fixtures.suggestion(deputy={"name": NAME, "delegation": DELEGATION} | deputy)
    return await system.call("intake", "POST", "/api/v1/suggestions", as_user="operator1", json=body)


async def _own_ids(system: System, user: str) -> set[str]:
    response = await system.call("feedback", "GET", "/api/v1/deputy/suggestions", as_user=user)
    assert response.status_code == 200, response.text
    return {row["case_id"] for row in response.json()}


async def test_two_deputies_of_one_name_in_one_delegation_each_see_only_their_own(system: System) -> None:
    await _create_deputies(system)
    listed = await system.call("intake", "GET", "/api/v1/deputies", as_user="operator1")
    assert {(d["username"], d["name"], d["delegation"]) for d in listed.json()} >= {
        (FIRST, NAME, DELEGATION),
        (SECOND, NAME, DELEGATION),
    }

    # By name alone the operator cannot say whose it is: the form must pick the account.
    ambiguous = await _suggestion(system)
    assert ambiguous.status_code == 422, ambiguous.text
    assert [e["field"] for e in ambiguous.json()["detail"]] == ["deputy.account"]
    assert "请选择代表账号" in ambiguous.json()["detail"][0]["message"]
    wrong = await _suggestion(system, account="deputy1")
    assert wrong.status_code == 422, wrong.text

    first = await _suggestion(system, account=FIRST)
    second = await _suggestion(system, account=SECOND)
    assert first.status_code == second.status_code == 201, (first.text, second.text)
    first_id, second_id = first.json()["id"], second.json()["id"]
    stored = await system.call(
        "intake",
        "GET",
        "/api/v1/suggestions",
        as_user="operator1",
        params={"tracking_code": first.json()["tracking_code"]},
    )
    assert stored.json()[0]["deputy_account"] == FIRST

    async def both_projected() -> bool:
        return first_id in await _own_ids(system, FIRST) and second_id in await _own_ids(system, SECOND)

    await eventually(both_projected, what="each deputy's suggestion in feedback")
    assert second_id not in await _own_ids(system, FIRST)
    assert first_id not in await _own_ids(system, SECOND)
    for user, theirs in ((FIRST, second_id), (SECOND, first_id)):
        rating = await system.call(
            "feedback",
            "POST",
            f"/api/v1/deputy/suggestions/{theirs}/rating",
            as_user=user,
            json={"rating": "satisfied"},
        )
        letter = await system.call(
            "feedback", "GET", f"/api/v1/deputy/suggestions/{theirs}/letter", as_user=user
        )
        assert rating.status_code == letter.status_code == 404, (rating.text, letter.text)


async def test_a_suggestion_recorded_without_an_account_is_matched_by_name_only_when_it_is_unique(
    system: System,
) -> None:
    await _ensure_deputies(system)
    shared_name = _old_suggestion(NAME, DELEGATION)
    unique_name = _old_suggestion("马刚", "川汇区代表团")  # deputy1's, the only 马刚 there
    for event in (shared_name, unique_name):
        await publish_event(system, event)

    async def both_projected() -> bool:
        factory = system.apps["feedback"].state.runtime.session_factory
        async with factory() as session:
            found = [await session.get(CaseView, e.case_id) for e in (shared_name, unique_name)]
        return all(case is not None and case.deputy_account is None for case in found)

    await eventually(both_projected, what="the two old suggestions in feedback")
    assert unique_name.case_id in await _own_ids(system, "deputy1")
    # The one of a name two deputies share is nobody's: whose it is cannot be told.
    for user in (FIRST, SECOND):
        assert shared_name.case_id not in await _own_ids(system, user)
        rating = await system.call(
            "feedback",
            "POST",
            f"/api/v1/deputy/suggestions/{shared_name.case_id}/rating",
            as_user=user,
            json={"rating": "satisfied"},
        )
        assert rating.status_code == 404, rating.text


async def _ensure_deputies(system: System) -> None:
    listed = await system.call("intake", "GET", "/api/v1/deputies", as_user="operator1")
    if FIRST not in {d["username"] for d in listed.json()}:
        await _create_deputies(system)


def _old_suggestion(name: str, delegation: str) -> SuggestionReceived:
    """A v1 event, as intake published before suggestions carried the deputy's account."""
    return SuggestionReceived(
        case_id=str(uuid.uuid4()),
        tracking_code=f"S260220{uuid.uuid4().hex[:6].upper()}",
        kind="npc_suggestion",
        session="周口市第五届人民代表大会第二次会议",
        number=f"9{uuid.uuid4().int % 1000:03d}",
        title="关于加强农村道路交通安全管理的建议",
        text="建议增设农村道路交通安全劝导站。",
        deputy_name=name,
        deputy_delegation=delegation,
        lead_unit="周口市公安局",
        received_at=utcnow(),
    )
