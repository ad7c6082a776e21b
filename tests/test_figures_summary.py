"""The dashboard's summary (``services/verification/figures.py``) kept by the running services.

Matters go through the services as people move them (a reassignment, an extension, conclusions
on time and late, a reopened matter concluded by a second team, ratings, a suggestion without a
county), and the dashboard read from the summary must equal the figures grouped at read time from
the base tables (``stats.reference_counts``), for the city and a county, per county and per team;
and rebuilding the summary from the base tables must give the rows the services kept.
"""

from __future__ import annotations

import contextlib
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlmodel import select as orm_select

from services.verification import figures, open_figures, stats, tasks
from services.verification.context import VerificationContext
from services.verification.models import ACTIVE_TASK_STATUSES as ACTIVE
from services.verification.models import Task
from shared.db import utcnow
from shared.workcalendar import SHANGHAI
from tests import fixtures
from tests.ledger_support import check_ledger_entries
from tests.support import System, eventually
from tests.test_pipeline import (
    approve_answer,
    conclude,
    create_complaint,
    current_assignment,
    task_for,
    wait_status,
)
from tests.test_statistics import rate, received

# Compares the whole database's figures: a system of its own.
pytestmark = pytest.mark.private_system


def days_ago(days: int) -> dict[str, Any]:
    return received(str(datetime.now(SHANGHAI).date() - timedelta(days=days)))


async def extend(system: System, case_id: str) -> None:
    task = await task_for(system, case_id, "inspector-411681")
    claimed = await system.call(
        "verification", "POST", f"/api/v1/tasks/{task['id']}/claim", as_user="inspector-411681"
    )
    assert claimed.status_code == 200, claimed.text
    asked = await system.call(
        "verification",
        "POST",
        f"/api/v1/tasks/{task['id']}/extensions",
        as_user="inspector-411681",
        json={"clock": "verification", "days": 10, "reason": "需调取外地监控录像"},
    )
    assert asked.status_code == 201, asked.text
    approved = await system.call(
        "verification",
        "POST",
        f"/api/v1/extensions/{asked.json()['id']}/decision",
        as_user="supervisor1",
        json={"approve": True, "note": "同意"},
    )
    assert approved.status_code == 200, approved.text


async def reopen_at_city(system: System, created: dict[str, Any]) -> None:
    """Concluded by 411681, rated 不满意, reopened at 411600, concluded there after a cross-check."""
    await conclude(system, created["id"], "inspector-411681", outcome="partly_substantiated")
    await wait_status(system, created, "concluded")
    await approve_answer(system, created["id"])
    await wait_status(system, created, "answered")
    await rate(system, created, "unsatisfied")

    async def second_round() -> dict[str, Any] | None:
        current = await current_assignment(system, created["id"])
        return current if current["round"] == 2 else None

    await eventually(second_round, what="the second round")
    await conclude(system, created["id"], "inspector-411600", outcome="substantiated")
    tasks = await system.call(
        "verification", "GET", "/api/v1/tasks", as_user="supervisor1", params={"case_id": created["id"]}
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


async def overdue_and_acceptance_told(system: System, created: dict[str, Any]) -> None:
    """Left open past its deadlines: the ladder takes its steps (open and overdue at the worst of
    them); then its acceptance clock stops, as when feedback has told the complainant, and the
    task's worst step is that of its other clocks."""
    await task_for(system, created["id"], "inspector-411681")
    scheduler = system.apps["verification"].state.scheduler
    while await scheduler.tick():
        pass
    factory = system.apps["verification"].state.runtime.session_factory

    async def at_the_last_step() -> bool:
        async with factory() as session:
            [task] = (await session.exec(orm_select(Task).where(Task.case_id == created["id"]))).all()
            return task.overdue_rank == len(stats.OVERDUE_STEPS)

    # The task's worst step follows the ladder's events.
    await eventually(at_the_last_step, what="the task at the ladder's last step")
    async with factory() as session, session.begin():
        await tasks.stop_acceptance_clocks(session=session, case_id=created["id"], at=utcnow())


@pytest.fixture(scope="module")
async def moved(system: System) -> dict[str, Any]:
    # Concluded on time: this one, and the extended one; late: the others (their deadlines, counted
    # from the day received, passed before today).
    on_time = await create_complaint(system, **days_ago(3))
    late = await create_complaint(system, **days_ago(70))
    extended = await create_complaint(system, **days_ago(4))
    reassigned = await create_complaint(system, **days_ago(5))
    reopened = await create_complaint(system, **days_ago(20))
    overdue = await create_complaint(system, **days_ago(60))
    suggestion = await system.call(
        "intake",
        "POST",
        "/api/v1/suggestions",
        as_user="operator1",
        json=fixtures.suggestion(received_at=days_ago(6)["received_at"]),
    )
    assert suggestion.status_code == 201, suggestion.text

    await conclude(system, on_time["id"], "inspector-411681", outcome="substantiated")
    await conclude(system, late["id"], "inspector-411681", outcome="unsubstantiated")
    await extend(system, extended["id"])
    await conclude(system, extended["id"], "inspector-411681", outcome="unsubstantiated")
    await current_assignment(system, reassigned["id"])
    await task_for(system, reassigned["id"], "inspector-411681")
    moved_on = await system.call(
        "routing",
        "POST",
        f"/api/v1/assignments/{reassigned['id']}/reassign",
        as_user="supervisor1",
        json={"team_code": "411624", "reason": "项城市公安局督察大队人手不足"},
    )
    assert moved_on.status_code == 200, moved_on.text
    await task_for(system, reassigned["id"], "inspector-411624")
    await reopen_at_city(system, reopened)

    await overdue_and_acceptance_told(system, overdue)

    await wait_status(system, on_time, "concluded")
    await approve_answer(system, on_time["id"])
    await wait_status(system, on_time, "answered")
    await rate(system, on_time, "satisfied")
    return {"reassigned": reassigned, "suggestion": suggestion.json()}


async def both(system: System, **query: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The dashboard from the summary and from the base tables, read in one transaction."""
    factory = system.apps["verification"].state.runtime.session_factory
    ctx: VerificationContext = system.apps["verification"].state.verification
    async with factory() as session, session.begin():
        summary = await figures.dashboard(session=session, ctx=ctx, **query)
        reference = await stats.dashboard(session=session, ctx=ctx, **query)
    summary.pop("generated_at")
    reference.pop("generated_at")
    return summary, reference


async def test_the_summary_gives_the_reference_figures(system: System, moved: dict[str, Any]) -> None:
    async def settled() -> dict[str, Any] | None:
        summary, reference = await both(system, weeks=12, by="county")
        done = reference["totals"]["rated"] == 2 and reference["totals"]["concluded"] == 5
        return summary if done and summary == reference else None

    city = await eventually(settled, what="the summary equal to the reference")
    totals = city["totals"]
    assert (totals["received"], totals["on_time"], totals["with_outcome"], totals["substantiated"]) == (
        7,
        2,
        5,
        3,
    )
    assert (totals["satisfied"], totals["unsatisfied"]) == (1, 1)
    # Open: the reassigned matter, the suggestion, and the overdue one at the ladder's last step.
    assert totals["open"] == 3
    assert totals["overdue"] == {"chase": 0, "escalation": 0, "rebuke": 1}
    for query in (
        {"weeks": 12, "by": "team"},
        {"weeks": 52, "by": "county"},
        {"weeks": 52, "by": "team"},
        {"weeks": 1, "by": "team"},
        {"weeks": 12, "by": "county", "county": "411681"},
        {"weeks": 12, "by": "team", "county": "411681"},
    ):
        summary, reference = await both(system, **query)
        assert summary == reference, query

    per_team = {g["code"]: g for g in (await both(system, weeks=12, by="team"))[0]["groups"]}
    # The reassigned matter counts as received where it sits now; the suggestion under its team.
    assert sum(per_team["411624"]["received"]) == 1
    assert per_team["411600"]["concluded_total"] == 1 and per_team["411600"]["substantiated"] == 1
    assert sum(per_team["411600"]["received"]) == 2  # the reopened matter and the suggestion

    answered = await system.call(
        "verification", "GET", "/api/v1/stats", as_user="supervisor1", params={"by": "county", "weeks": 12}
    )
    assert answered.status_code == 200, answered.text
    assert answered.json()["totals"] == city["totals"]


async def test_rebuilding_gives_the_rows_the_services_kept(system: System, moved: dict[str, Any]) -> None:
    factory = system.apps["verification"].state.runtime.session_factory
    ctx: VerificationContext = system.apps["verification"].state.verification

    async def rows(session: Any) -> set[tuple[Any, ...]]:
        found = await stats.rows_of(session, select(figures.FIGURE))
        # A row a move left at zero is no figure: the rebuild does not write it.
        return {tuple(r) for r in found if any(r[len(figures.KEY_COLUMNS) :])}

    async def open_rows(session: Any) -> set[tuple[Any, ...]]:
        found = await stats.rows_of(session, select(open_figures.OPEN))
        ranks = await stats.rows_of(
            session, select(stats.TASK.c.id, stats.TASK.c.overdue_rank).where(stats.TASK.c.status.in_(ACTIVE))
        )
        return {tuple(r) for r in found if r[-1]} | {tuple(r) for r in ranks}

    async with factory() as session, session.begin():
        kept, open_kept = await rows(session), await open_rows(session)
        written = await figures.rebuild_figures(session=session, ctx=ctx)
        open_written = await (await session.connection()).run_sync(open_figures.rebuild)
        rebuilt, open_rebuilt = await rows(session), await open_rows(session)
        await session.rollback()
    assert kept == rebuilt
    assert written == len(rebuilt) >= 3
    assert open_kept == open_rebuilt
    # Open: the reassigned matter, the suggestion and the overdue one, at two teams, one overdue.
    assert open_written >= 3
    assert any(row[3] for row in open_rebuilt if len(row) == 5)
    # The ledger's entries after the same moves: a reassignment, an extension, the ladder's steps.
    assert await check_ledger_entries(system) >= 3


async def test_a_savepoint_rolled_back_forgets_what_it_counted(system: System) -> None:
    """Differences are added at the outermost commit, except those of a savepoint rolled back (a
    slice's event that failed on its own); a second commit adds to the same row."""
    factory = system.apps["verification"].state.runtime.session_factory
    key = (date(1990, 1, 1), "test", "test", "complaint")

    def received(count: int) -> figures.Part:
        part: figures.Part = {}
        figures.add(part, key, "received", count)
        return part

    async def stored() -> Any:
        async with factory() as session:
            found = await stats.rows_of(
                session, select(figures.FIGURE.c.received).where(figures.FIGURE.c.day == key[0])
            )
        return found[0][0] if found else None

    try:
        async with factory() as session, session.begin():
            figures.record(session, received(1))
            with contextlib.suppress(RuntimeError):
                async with session.begin_nested():
                    figures.record(session, received(10))
                    raise RuntimeError("this event fails on its own")
            async with session.begin_nested():
                figures.record(session, received(100))
        assert await stored() == 101
        with contextlib.suppress(RuntimeError):
            async with factory() as session, session.begin():
                figures.record(session, received(1000))
                raise RuntimeError("the whole transaction rolls back")
        async with factory() as session, session.begin():
            figures.record(session, received(2))
        assert await stored() == 103
    finally:
        async with factory() as session, session.begin():
            connection = await session.connection()
            await connection.execute(figures.FIGURE.delete().where(figures.FIGURE.c.day == key[0]))
