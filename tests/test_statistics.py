"""The dashboard's figures on a small known data set, built through the running services.

Each matter counts for the team that did the work: substantiation and on-time for the team that
concluded it, satisfaction for the team whose answer was rated (the round's concluding team), not
the team the matter sits with today.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest

from tests.support import System, eventually
from tests.test_ledger_closeoff import sign_in_leader
from tests.test_pipeline import (
    approve_answer,
    conclude,
    create_complaint,
    current_assignment,
    task_for,
    wait_status,
)

# Counts the whole database's figures: a system of its own, on empty databases.
pytestmark = pytest.mark.private_system


def received(day: str) -> dict[str, Any]:
    start = date.fromisoformat(day)
    return {
        "received_at": f"{start}T09:00:00+08:00",
        "incident_at": f"{start - timedelta(days=1)}T20:30:00+08:00",
        "accused": {"badge_no": None, "officer_name": None},
    }


async def rate(system: System, created: dict[str, Any], rating: str) -> None:
    body = {
        "tracking_code": created["tracking_code"],
        "query_secret": created["query_secret"],
        "rating": rating,
    }
    if rating == "unsatisfied":
        body["reason"] = "处理结果不公正"
    response = await system.call("feedback", "POST", "/api/v1/public/rating", json=body)
    assert response.status_code == 200, response.text


async def figures(system: System, by: str, user: str = "supervisor1") -> dict[str, Any]:
    response = await system.call(
        "verification", "GET", "/api/v1/stats", as_user=user, params={"by": by, "weeks": 12}
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.fixture(scope="module")
async def data_set(system: System) -> dict[str, Any]:
    """Five complaints against 项城市 (411681), all received in the last twelve weeks:
    a1 substantiated, a2 unsubstantiated, a3 partly substantiated after its deadline, a4 open,
    and r: partly substantiated by 411681, rated 不满意, reopened at 411600, substantiated there
    (confirmed by the cross-checking team) and rated 满意."""
    a1 = await create_complaint(system, **received("2026-11-23"))
    a2 = await create_complaint(system, **received("2026-11-24"))
    a3 = await create_complaint(system, **received("2026-10-19"))
    a4 = await create_complaint(system, **received("2026-11-25"))
    r = await create_complaint(system, **received("2026-11-20"))
    await conclude(system, a1["id"], "inspector-411681", outcome="substantiated")
    await conclude(system, a2["id"], "inspector-411681", outcome="unsubstantiated")
    await conclude(system, a3["id"], "inspector-411681", outcome="partly_substantiated")
    await task_for(system, a4["id"], "inspector-411681")

    await conclude(system, r["id"], "inspector-411681", outcome="partly_substantiated")
    await wait_status(system, r, "concluded")
    await approve_answer(system, r["id"])
    await wait_status(system, r, "answered")
    await rate(system, r, "unsatisfied")

    async def second_round() -> dict[str, Any] | None:
        current = await current_assignment(system, r["id"])
        return current if current["round"] == 2 else None

    second = await eventually(second_round, what="the second round")
    assert second["team_code"] == "411600"
    await conclude(system, r["id"], "inspector-411600", outcome="substantiated")
    # A matter reopened after 不满意 is a key clue: a second team cross-checks before it concludes.
    tasks = await system.call(
        "verification", "GET", "/api/v1/tasks", as_user="supervisor1", params={"case_id": r["id"]}
    )
    [reviewed] = [t for t in tasks.json() if t["status"] == "in_review"]
    confirmed = await system.call(
        "verification",
        "POST",
        f"/api/v1/tasks/{reviewed['id']}/review",
        as_user=f"inspector-{reviewed['review_team_code']}",
        json={"decision": "confirm"},
    )
    assert confirmed.status_code == 200, confirmed.text

    async def answered_again() -> list[dict[str, Any]] | None:
        response = await system.call(
            "feedback", "GET", "/api/v1/answers", as_user="supervisor1", params={"case_id": r["id"]}
        )
        answers = list(response.json())
        return answers if any(a["status"] == "pending_approval" for a in answers) else None

    await eventually(answered_again, what="the second answer")
    await approve_answer(system, r["id"])

    async def rated_twice() -> bool:
        stats = await figures(system, "county")
        return bool(stats["totals"]["rated"] == 2)

    async def rate_second() -> bool:
        response = await system.call(
            "feedback",
            "POST",
            "/api/v1/public/rating",
            json={
                "tracking_code": r["tracking_code"],
                "query_secret": r["query_secret"],
                "rating": "satisfied",
            },
        )
        return response.status_code == 200

    await eventually(rate_second, what="the second answer delivered and rated")
    await eventually(rated_twice, what="both ratings counted")
    return {"a1": a1, "a2": a2, "a3": a3, "a4": a4, "r": r}


async def test_figures_per_team_count_the_team_that_did_the_work(
    system: System, data_set: dict[str, Any]
) -> None:
    stats = await figures(system, "team")
    groups = {g["code"]: g for g in stats["groups"]}
    xiangcheng, city = groups["411681"], groups["411600"]
    # Received: where each matter sits now (r moved to the city team).
    assert (xiangcheng["received_total"], city["received_total"]) == (4, 1)
    # Concluded, on time, substantiated: the team that concluded each round.
    assert xiangcheng["concluded_total"] == 4  # a1, a2, a3, r (round 1)
    assert xiangcheng["on_time"] == 3  # a3 concluded after its 13 working days
    assert xiangcheng["on_time_rate"] == pytest.approx(0.75)
    assert (xiangcheng["substantiated"], xiangcheng["with_outcome"]) == (3, 4)  # a1, a3, r round 1
    assert xiangcheng["substantiation_rate"] == pytest.approx(0.75)
    assert xiangcheng["open"] == 1  # a4
    assert (city["concluded_total"], city["substantiated"], city["with_outcome"], city["open"]) == (
        1,
        1,
        1,
        0,
    )
    # Satisfaction: the 不满意 counts for 411681 whose answer it rated, the 满意 for 411600.
    assert (xiangcheng["rated"], xiangcheng["unsatisfied"], xiangcheng["satisfied"]) == (1, 1, 0)
    assert xiangcheng["satisfaction_rate"] == 0
    assert (city["rated"], city["satisfied"], city["unsatisfied"]) == (1, 1, 0)
    assert city["satisfaction_rate"] == 1


async def test_figures_per_county_and_totals(system: System, data_set: dict[str, Any]) -> None:
    stats = await figures(system, "county")
    [county] = stats["groups"]
    assert county["code"] == "411681"
    assert (county["received_total"], county["concluded_total"], county["open"]) == (5, 5, 1)
    assert (county["substantiated"], county["with_outcome"]) == (4, 5)
    assert (county["rated"], county["satisfied"], county["unsatisfied"]) == (2, 1, 1)
    assert county["satisfaction_rate"] == pytest.approx(0.5)
    totals = stats["totals"]
    assert (totals["received"], totals["concluded"], totals["substantiated"], totals["rated"]) == (5, 5, 4, 2)
    assert sum(sum(g["received"]) for g in stats["groups"]) == 5


async def test_a_leader_reads_their_county_figures_only(system: System, data_set: dict[str, Any]) -> None:
    own = await figures(system, "county", user=await sign_in_leader(system, "411681"))
    assert own["county"] == "411681" and own["totals"]["received"] == 5
    other = await figures(system, "team", user=await sign_in_leader(system, "411624"))
    assert other["county"] == "411624"
    assert other["groups"] == [] and other["totals"]["received"] == 0 and other["totals"]["rated"] == 0
