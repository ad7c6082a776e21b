"""Who may rate an answer (issue 14, item 3): a deputy's suggestion only by that deputy; a complaint
by the holder of its public query or an operator recording the follow-up call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support import NatsServer, System
from tests.test_feedback_deputy import as_liu_ming, my_row, rate, replied
from tests.test_feedback_support import answered_complaint, feedback_system, outside_world_env


@pytest.fixture(scope="module")
async def system(
    backend: str, nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[System]:
    async with feedback_system(
        backend=backend,
        root=tmp_path_factory.mktemp(f"feedback-rating-rights-{backend}"),
        nats_url=nats_server.url,
        env=outside_world_env(gateway=None, mailbox=None),
    ) as running:
        yield running


async def operator_rating(system: System, case_id: str, body: dict[str, Any], user: str = "operator1") -> Any:
    return await system.call("feedback", "POST", f"/api/v1/cases/{case_id}/rating", as_user=user, json=body)


async def test_an_operator_cannot_rate_a_suggestion_and_the_deputy_still_can(system: System) -> None:
    created, _ = await replied(system, "C")
    by_operator = await operator_rating(
        system, created["id"], {"rating": "unsatisfied", "reason": "代表电话表示不满意"}
    )
    assert by_operator.status_code in (403, 404), by_operator.text
    row = await my_row(system, created["id"])
    assert row is not None and row["status"] == "answered" and row["can_rate"] and row["rating"] is None

    if created.get("query_secret"):
        by_public = await system.call(
            "feedback",
            "POST",
            "/api/v1/public/rating",
            json={
                "tracking_code": created["tracking_code"],
                "query_secret": created["query_secret"],
                "rating": "unsatisfied",
                "reason": "不满意",
            },
        )
        assert by_public.status_code in (403, 404), by_public.text

    by_other_deputy = await rate(system, created["id"], {"rating": "satisfied"}, headers=as_liu_ming())
    assert by_other_deputy.status_code == 404

    by_deputy = await rate(system, created["id"], {"rating": "satisfied"})
    assert by_deputy.status_code == 200, by_deputy.text
    assert by_deputy.json()["status"] == "closed"


async def test_a_complaint_is_still_rated_by_an_operator_recording_the_follow_up_call(system: System) -> None:
    created, _ = await answered_complaint(system)
    by_supervisor = await operator_rating(system, created["id"], {"rating": "satisfied"}, user="supervisor1")
    assert by_supervisor.status_code == 403
    by_operator = await operator_rating(system, created["id"], {"rating": "satisfied"})
    assert by_operator.status_code == 200, by_operator.text
    assert by_operator.json()["status"] == "closed"
