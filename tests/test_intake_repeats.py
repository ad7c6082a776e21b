"""Intake finds the earlier matters of the same person and links the repeats among them.

Through its HTTP API with all four services running: the repeat window, matching by phone or ID
number, complaints recorded at the same moment, another unit of the same county, and a repeat after
an answer rated 不满意, crossed to another county.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from tests import fixtures
from tests.support import System, eventually
from tests.test_intake_api import iso, now, post_complaint, with_phone
from tests.test_pipeline import approve_answer, conclude, create_complaint, current_assignment, wait_status

# --- repeats --------------------------------------------------------------------------------------


async def test_earlier_complaint_outside_the_repeat_window_is_listed_but_not_linked(system: System) -> None:
    phone = fixtures.unique_mobile()
    old = await create_complaint(
        system,
        complainant={"phone": phone},
        received_at=iso(now() - timedelta(days=200)),
        incident_at=iso(now() - timedelta(days=201)),
    )
    new = await create_complaint(
        system,
        complainant={"phone": phone},
        received_at=iso(now()),
        incident_at=iso(now() - timedelta(days=1)),
    )
    assert new["repeat_of"] is None
    assert [m["id"] for m in new["earlier_matters"]] == [old["id"]]


async def test_earlier_complaint_found_by_id_number_as_well_as_phone(system: System) -> None:
    id_number = "411624198001010030"
    first = await create_complaint(system, complainant={"id_number": id_number})
    second = await create_complaint(system, complainant={"id_number": id_number})
    assert second["repeat_of"] == first["id"]


async def test_complaints_recorded_at_the_same_moment_still_find_each_other(system: System) -> None:
    # Concurrent creates may share one transaction (group commit): the later ones must still
    # see the earlier ones, as they would one after another.
    phone = fixtures.unique_mobile()
    answers = await asyncio.gather(*(post_complaint(system, with_phone(phone)) for _ in range(5)))
    assert [a.status_code for a in answers] == [201] * 5, [a.text for a in answers]
    created = [a.json() for a in answers]
    ids = {c["id"] for c in created}
    firsts = [c for c in created if c["repeat_of"] is None]
    assert len(firsts) == 1
    assert all(c["repeat_of"] in ids - {c["id"]} for c in created if c is not firsts[0])
    # Each sees every complaint recorded before it.
    assert sorted(len(c["earlier_matters"]) for c in created) == [0, 1, 2, 3, 4]


async def test_complaint_about_another_unit_of_the_same_county_is_not_a_repeat(system: System) -> None:
    phone = fixtures.unique_mobile()
    first = await create_complaint(system, complainant={"phone": phone})
    other_unit = await create_complaint(
        system,
        complainant={"phone": phone},
        accused={"unit": "项城市公安局交警大队", "county_code": "411681"},
        account="项城市交警大队民警在处理我的交通事故时拖延不办。",
    )
    # Listed for the operator to see, but not a repeat: it is about another unit.
    assert [m["id"] for m in other_unit["earlier_matters"]] == [first["id"]]
    assert other_unit["repeat_of"] is None
    assert not any("重复件" in hint for hint in other_unit["key_clue_hints"])


# --- repeat after an unsatisfied rating -----------------------------------------------------------


async def test_repeat_after_rejection_is_a_key_clue_crossed_to_another_county(system: System) -> None:
    phone = fixtures.unique_mobile()
    first = await create_complaint(system, complainant={"phone": phone})
    assignment = await current_assignment(system, first["id"])
    await conclude(system, first["id"], f"inspector-{assignment['team_code']}")
    await wait_status(system, first, "concluded")
    await approve_answer(system, first["id"])
    await wait_status(system, first, "answered")
    rating = await system.call(
        "feedback",
        "POST",
        "/api/v1/public/rating",
        json={
            "tracking_code": first["tracking_code"],
            "query_secret": first["query_secret"],
            "rating": "unsatisfied",
            "reason": "民警的问题没有得到处理",
        },
    )
    assert rating.status_code == 200, rating.text

    async def rating_known() -> bool:
        response = await system.call(
            "intake", "GET", f"/api/v1/complaints/{first['id']}", as_user="operator1"
        )
        return bool(response.json()["last_rating"] == "unsatisfied")

    await eventually(rating_known, what="intake to record the rating")

    again = await create_complaint(
        system, complainant={"phone": phone}, account="上次投诉后民警仍然对我态度恶劣，我对答复不满意。"
    )
    assert again["repeat_after_rejection"] is True
    assert again["repeat_of"] == first["id"]
    assert first["id"] in [m["id"] for m in again["earlier_matters"]]
    assert any("不满意" in hint for hint in again["key_clue_hints"])
    second = await current_assignment(system, again["id"])
    assert second["key_clue"] is True
    assert (second["rule"], second["kind"]) == ("key_clue_repeat_or_flag", "cross")
    assert second["team_code"] not in ("411681", "411600")
    assert second["review_required"] is True
