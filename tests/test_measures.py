"""The 12345 measures (响应率, 办结率, 按期办结率, 解决率, 满意率, 属实率, 重复投诉率) on a small known data set,
built through the running services: each measure's numerator and denominator against the matters
made, for the city, per team, for one county and for a leader (their county only).
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Connection, select

from services.verification import measure_days, measure_facts
from services.verification.measure_rules import MeasureSettings, load_settings
from services.verification.measures import measures as measures_of
from tests import fixtures
from tests.databases import one_snapshot
from tests.support import System, eventually
from tests.test_feedback_support import RestartableSystem, gateway_system_fixtures
from tests.test_ledger_closeoff import sign_in_leader
from tests.test_pipeline import (
    approve_answer,
    conclude,
    create_complaint,
    current_assignment,
    task_for,
    wait_status,
)
from tests.test_repeats import unique_id_number
from tests.test_statistics import rate

# Counts the whole database's figures: a system of its own, on empty databases, with an SMS gateway
# so that the complainants are told of the acceptance (告知受理) without a person.
gateway, system = gateway_system_fixtures("measures")

SHANGHAI = ZoneInfo("Asia/Shanghai")
TODAY = datetime.now(SHANGHAI).date()
START, END = TODAY - timedelta(days=60), TODAY
MEASURES = {
    "response_rate": ("responded_on_time", "received"),
    "completion_rate": ("concluded", "received"),
    "on_time_rate": ("concluded_on_time", "concluded"),
    "resolution_rate": ("resolved", "concluded"),
    "satisfaction_rate": ("pleased", "rated"),
    "substantiation_rate": ("substantiated", "with_outcome"),
    "repeat_rate": ("repeats", "complaints"),
}


def days_ago(days: int, **overrides: Any) -> dict[str, Any]:
    day = TODAY - timedelta(days=days)
    return {
        "received_at": f"{day}T09:00:00+08:00",
        "incident_at": f"{day - timedelta(days=1)}T20:30:00+08:00",
        **overrides,
    }


def with_id(id_number: str) -> dict[str, Any]:
    return {"complainant": {"name": "赵立新", "phone": fixtures.unique_mobile(), "id_number": id_number}}


async def measures(system: System, user: str = "supervisor1", **params: Any) -> dict[str, Any]:
    response = await system.call(
        "verification",
        "GET",
        "/api/v1/measures",
        as_user=user,
        params={"start": str(START), "end": str(END), **params},
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def acceptance_told(system: System, case_id: str) -> None:
    """Wait until feedback told the complainant and verification stopped the acceptance clock."""

    async def stopped() -> bool:
        tasks = await system.call(
            "verification", "GET", "/api/v1/tasks", as_user="supervisor1", params={"case_id": case_id}
        )
        for task in tasks.json():
            clocks = await system.call(
                "verification", "GET", f"/api/v1/tasks/{task['id']}/clocks", as_user="supervisor1"
            )
            if any(c["name"] == "acceptance_notice" and c["status"] == "stopped" for c in clocks.json()):
                return True
        return False

    await eventually(stopped, what="the acceptance notice delivered")


async def answered_and_rated(system: System, created: dict[str, Any], rating: str) -> None:
    await wait_status(system, created, "concluded")
    await approve_answer(system, created["id"])
    await wait_status(system, created, "answered")
    await rate(system, created, rating)


@pytest.fixture(scope="module")
async def data_set(system: System) -> dict[str, Any]:
    """Against 项城市 (411681), all received in the period:
    a1 named, concluded substantiated on time, rated 满意;
    a2 named, concluded unsubstantiated on time, not rated;
    a3 named, received 40 days ago: told and concluded (partly substantiated) after both deadlines;
    a4 anonymous, open;
    a5 named, open, and a repeat call linked to it (重复件);
    r  named, concluded unsubstantiated, rated 不满意 and reopened at 411600 (open there).
    Against 沈丘县 (411624): b1 named, concluded substantiated on time."""
    a1 = await create_complaint(system, **days_ago(5))
    a2 = await create_complaint(system, **days_ago(6))
    a3 = await create_complaint(system, **days_ago(40))
    a4 = await create_complaint(system, **days_ago(7, complainant={"anonymous": True}))
    id_number = unique_id_number()
    a5 = await create_complaint(system, **days_ago(8), **with_id(id_number))
    r = await create_complaint(system, **days_ago(9))
    b1 = await create_complaint(
        system,
        **days_ago(4),
        accused={"unit": "沈丘县公安局刑警大队", "county_code": "411624", "badge_no": "L00104"},
    )
    await conclude(system, a1["id"], "inspector-411681", outcome="substantiated")
    await conclude(system, a2["id"], "inspector-411681", outcome="unsubstantiated")
    await conclude(system, a3["id"], "inspector-411681", outcome="partly_substantiated")
    await conclude(system, b1["id"], "inspector-411624", outcome="substantiated")
    await task_for(system, a4["id"], "inspector-411681")
    a5_task = await task_for(system, a5["id"], "inspector-411681")
    claimed = await system.call(
        "verification", "POST", f"/api/v1/tasks/{a5_task['id']}/claim", as_user="inspector-411681"
    )
    assert claimed.status_code == 200, claimed.text
    repeat = await create_complaint(
        system,
        **days_ago(1),
        **with_id(id_number),
        channel="web",
        account="上次反映的事情还没有结果，再反映一次。",
    )
    assert repeat["linked_repeat"] is True and repeat["repeat_of"] == a5["id"]
    await conclude(system, r["id"], "inspector-411681", outcome="unsubstantiated")
    for matter in (a1, a2, a3, a5, r, b1):
        await acceptance_told(system, matter["id"])
    await answered_and_rated(system, a1, "satisfied")
    await answered_and_rated(system, r, "unsatisfied")

    async def reopened() -> bool:
        current = await current_assignment(system, r["id"])
        return bool(current["round"] == 2)

    await eventually(reopened, what="r reopened")
    await task_for(system, r["id"], "inspector-411600")

    async def settled() -> bool:
        city = await measures(system)
        counts = city["total"]["counts"]
        return bool(counts["rated"] == 2 and counts["repeats"] == 1)

    await eventually(settled, what="the ratings and the repeat call counted")
    return {"a1": a1, "a2": a2, "a3": a3, "a4": a4, "a5": a5, "r": r, "b1": b1}


def check_rates(group: dict[str, Any]) -> None:
    for key, (numerator, denominator) in MEASURES.items():
        counts = group["counts"]
        if counts[denominator]:
            assert group["rates"][key] == pytest.approx(counts[numerator] / counts[denominator])
        else:
            assert group["rates"][key] is None


XIANGCHENG = {
    "received": 6,
    "responded_on_time": 5,  # a1, a2, a5, r told in time; a4 anonymous; a3 told late
    "concluded": 3,  # a1, a2, a3 (r's second round is open)
    "concluded_on_time": 2,
    "resolved": 3,  # a1 satisfied; a2 and a3 not reopened
    "with_outcome": 3,  # not r: its latest task (the second round) is open
    "substantiated": 2,
    "rated": 2,
    "satisfied": 1,
    "pleased": 1,
    "dissatisfied": 1,
    "complaints": 7,  # six matters and the repeat call
    "repeats": 1,
}


async def test_city_measures_per_county(system: System, data_set: dict[str, Any]) -> None:
    report = await measures(system)
    assert report["by"] == "county" and report["county"] is None
    assert [d["key"] for d in report["definitions"]] == list(MEASURES)
    assert {d["name"] for d in report["definitions"]} >= {"响应率", "办结率", "按期办结率", "重复投诉率"}
    groups = {g["code"]: g for g in report["groups"]}
    assert set(groups) == {"411681", "411624"}
    xiangcheng = groups["411681"]
    assert xiangcheng["name"] == "项城市"
    assert {k: xiangcheng["counts"][k] for k in XIANGCHENG} == XIANGCHENG
    shenqiu = groups["411624"]["counts"]
    assert (shenqiu["received"], shenqiu["concluded"], shenqiu["substantiated"], shenqiu["repeats"]) == (
        1,
        1,
        1,
        0,
    )
    total = report["total"]
    assert total["code"] == "total" and total["name"] == "全市"
    assert total["counts"]["received"] == 7 and total["counts"]["concluded"] == 4
    for group in (*report["groups"], total):
        check_rates(group)
    assert xiangcheng["rates"]["response_rate"] == pytest.approx(5 / 6)
    assert xiangcheng["rates"]["repeat_rate"] == pytest.approx(1 / 7)


async def test_per_team_the_reopened_matter_sits_with_the_city_team(
    system: System, data_set: dict[str, Any]
) -> None:
    report = await measures(system, by="team")
    groups = {g["code"]: g["counts"] for g in report["groups"]}
    assert groups["411600"]["received"] == 1 and groups["411600"]["concluded"] == 0
    assert groups["411600"]["rated"] == 1 and groups["411600"]["dissatisfied"] == 1
    assert groups["411681"]["received"] == 5 and groups["411681"]["concluded"] == 3


async def test_one_county_and_a_period_that_holds_nothing(system: System, data_set: dict[str, Any]) -> None:
    county = await measures(system, county="411681")
    assert [g["code"] for g in county["groups"]] == ["411681"]
    assert county["total"]["name"] == "项城市"
    assert county["total"]["counts"]["received"] == 6
    empty = await measures(
        system, start=str(START - timedelta(days=400)), end=str(START - timedelta(days=300))
    )
    assert empty["groups"] == [] and empty["total"]["counts"]["received"] == 0
    assert all(rate is None for rate in empty["total"]["rates"].values())


async def test_a_leader_reads_their_county_only(system: System, data_set: dict[str, Any]) -> None:
    leader = await sign_in_leader(system, "411624")
    report = await measures(system, user=leader, county="411681")
    assert report["county"] == "411624"
    assert [g["code"] for g in report["groups"]] == ["411624"]
    assert report["total"]["counts"]["received"] == 1


async def test_the_period_is_checked(system: System) -> None:
    backwards = await system.call(
        "verification",
        "GET",
        "/api/v1/measures",
        as_user="supervisor1",
        params={"start": str(TODAY), "end": str(TODAY - timedelta(days=1))},
    )
    assert backwards.status_code == 422
    assert (
        await system.call(
            "verification", "GET", "/api/v1/measures", as_user="operator1", params={"start": str(TODAY)}
        )
    ).status_code in (403, 422)


# A period that holds every matter but ends before any was concluded, and one of a few days.
PERIODS = (
    (START, END),
    (START, TODAY - timedelta(days=5)),
    (TODAY - timedelta(days=8), TODAY - timedelta(days=6)),
)


def days_of(facts: list[dict[str, Any]]) -> dict[tuple[Any, ...], list[int]]:
    """The days' sums the kept rows make, without the keys at nought."""
    sums: dict[tuple[Any, ...], list[int]] = {}
    for fact in facts:
        key = (
            fact["received_at"].astimezone(SHANGHAI).date(),
            fact["county_code"] or "",
            fact["team_code"] or "",
        )
        counts = sums.setdefault(key, [0] * len(measure_days.DAY_COUNTERS))
        counts[:] = [a + b for a, b in zip(counts, measure_days.counts_of(fact), strict=True)]
    return {key: counts for key, counts in sums.items() if any(counts)}


def kept_and_made(connection: Connection, settings: MeasureSettings) -> tuple[Any, Any]:
    """The kept rows and days' sums, and what the tables make now, each as sorted lists."""
    case_ids = list(connection.scalars(select(measure_facts.FACT.c.case_id)))
    made = measure_facts.facts_of(connection, settings, case_ids)
    kept_facts = sorted(
        tuple(row._mapping.values()) for row in connection.execute(select(measure_facts.FACT))
    )
    kept_ratings = sorted(
        tuple(row._mapping.values()) for row in connection.execute(select(measure_facts.RATING_FACT))
    )
    made_facts = sorted(tuple(fact.values()) for fact in made)
    made_ratings = sorted(
        tuple(rating.values()) for rating in measure_facts.rating_facts_of(connection, made)
    )
    kept_days = {
        (row.day, row.county_code, row.team_code): [row._mapping[name] for name in measure_days.DAY_COUNTERS]
        for row in connection.execute(select(measure_days.DAY))
    }
    kept_days = {key: counts for key, counts in kept_days.items() if any(counts)}
    kept_repeats = sorted(tuple(row) for row in connection.execute(select(measure_facts.REPEAT_FACT)))
    made_repeats = sorted(
        tuple(repeat.values()) for repeat in measure_facts.repeat_facts_of(connection, made)
    )
    kept = (kept_facts, kept_ratings, kept_days, kept_repeats)
    return kept, (made_facts, made_ratings, days_of(made), made_repeats)


async def test_the_kept_rows_agree_with_the_tables(
    system: RestartableSystem, data_set: dict[str, Any]
) -> None:
    app = system.services.servers["verification"].config.app if system.services else None
    assert app is not None
    ctx, factory = app.state.verification, app.state.runtime.session_factory
    settings = load_settings()
    async with one_snapshot(factory) as session:
        assert await measure_facts.ready(session, settings)
        connection = await session.connection()
        kept, made = await connection.run_sync(kept_and_made, settings)
        assert kept == made and len(kept[0]) == 7 and len(kept[1]) == 2 and len(kept[3]) == 1
        for (start, end), by, county in itertools.product(
            PERIODS, ("county", "team"), (None, "411681", "411624")
        ):
            args = {"session": session, "ctx": ctx, "start": start, "end": end, "by": by, "county": county}
            assert asdict(await measures_of(**args)) == asdict(await measures_of(**args, from_tables=True))


async def test_changed_settings_make_the_rows_again_a_batch_at_a_time(
    system: RestartableSystem, data_set: dict[str, Any]
) -> None:
    app = system.services.servers["verification"].config.app if system.services else None
    assert app is not None
    factory, settings = app.state.runtime.session_factory, load_settings()
    # A bureau that counts only 满意 as pleasing: a1's rating still pleases, nothing else changes it.
    changed = replace(settings, pleased_ratings=("satisfied",), acceptance_clock="acceptance_notice_changed")
    for wanted in (changed, settings):
        async with factory() as session, session.begin():
            assert not await measure_facts.ready(session, wanted)
        steps = 0
        while True:
            steps += 1
            async with factory() as session, session.begin():
                connection = await session.connection()
                if not await connection.run_sync(
                    lambda c, w=wanted: measure_facts.build_step(c, w, SHANGHAI, batch=3)
                ):
                    break
        # Seven matters, three at a time: the third step finds the last one.
        assert steps == 3
        async with factory() as session, session.begin():
            assert await measure_facts.ready(session, wanted)
            kept, made = await (await session.connection()).run_sync(kept_and_made, wanted)
            assert kept == made
            responded = sum(fact[5] for fact in kept[0])
            # Told within a clock nobody has: only the anonymous complaint counts as responded.
            assert responded == (1 if wanted is changed else 5 + 1)
