"""The scale data generator (bench/scale_data.py): a tiny run on SQLite tells the same story in the
four databases, with the services' own schema, chains that verify, and the planned shares."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlmodel import SQLModel

from services.feedback import inbox
from services.feedback.notification_summary import DAY
from shared.audit import AuditEntry, first_break
from shared.auth import query_secret_hash
from shared.db import create_engine, create_session_factory, table_of, utcnow
from shared.migrations import alembic_config, owned_tables
from shared.workcalendar import SHANGHAI
from tests.support import import_every_service_module

# Every table of the four services in the metadata the schemas are compared against.
import_every_service_module()

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("intake", "routing", "verification", "feedback")
COMPLAINTS, SUGGESTIONS = 300, 20


@pytest.fixture(scope="module")
def data_set(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("scale")
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "scale_data.py"),
            "--backend=sqlite",
            f"--complaints={COMPLAINTS}",
            f"--suggestions={SUGGESTIONS}",
            "--years=5",
            f"--out={out}",
            "--seed=3",
            # A quarter open, so that a small run still has open clocks at every rung.
            "--open-share=0.25",
        ],
        check=True,
        timeout=600,
        cwd=ROOT,
    )
    manifest: dict[str, Any] = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    manifest["out"] = out
    return manifest


def _db(manifest: dict[str, Any], service: str) -> sqlite3.Connection:
    return sqlite3.connect(manifest["out"] / f"{service}.db")


def _one(connection: sqlite3.Connection, sql: str) -> Any:
    return connection.execute(sql).fetchone()[0]


def test_every_database_holds_the_planned_matters(data_set: dict[str, Any]) -> None:
    intake, routing = _db(data_set, "intake"), _db(data_set, "routing")
    verification, feedback = _db(data_set, "verification"), _db(data_set, "feedback")
    assert _one(intake, "SELECT count(*) FROM intake_complaint") == COMPLAINTS
    assert _one(intake, "SELECT count(*) FROM intake_suggestion") == SUGGESTIONS
    linked = _one(intake, "SELECT count(*) FROM intake_complaint WHERE linked_repeat")
    # A linked repeat call (重复件) is never routed on its own; every other matter is, once a round.
    matters = COMPLAINTS + SUGGESTIONS
    assert _one(routing, "SELECT count(*) FROM routing_case") == matters - linked
    assert _one(verification, "SELECT count(*) FROM verification_repeat_call") == linked
    assert _one(feedback, "SELECT count(*) FROM feedback_case") == matters
    assert _one(routing, "SELECT count(*) FROM routing_assignment") == _one(
        verification, "SELECT count(*) FROM verification_task"
    )
    assert data_set["rows"]["intake"]["intake_complaint"] == COMPLAINTS
    # The accounts the benchmark signs in with.
    users = {row[0] for row in intake.execute("SELECT username FROM intake_user")}
    assert {"operator1", "supervisor1", "deputy1", f"inspector-{data_set['busiest_team']}"} <= users
    assert data_set["accounts"]["leader"] in users


def test_shares_are_near_the_plan(data_set: dict[str, Any]) -> None:
    intake, verification = _db(data_set, "intake"), _db(data_set, "verification")
    open_tasks = _one(
        verification,
        "SELECT count(*) FROM verification_task WHERE status IN ('open', 'claimed', 'in_review')",
    )
    assert 0.15 * COMPLAINTS <= open_tasks <= 0.40 * COMPLAINTS
    counties = Counter(row[0] for row in intake.execute("SELECT county_code FROM intake_complaint"))
    # Ten counties and the city's own units, none with more than a quarter.
    assert len(counties) >= 9 and max(counties.values()) < 0.25 * COMPLAINTS
    outcomes = Counter(row[0] for row in verification.execute("SELECT outcome FROM verification_finding"))
    assert outcomes.most_common(1)[0][0] == "unsubstantiated"
    assert {"substantiated", "partly_substantiated", "unverifiable"} <= set(outcomes)
    ratings = Counter(row[0] for row in verification.execute("SELECT rating FROM verification_rating"))
    assert ratings.most_common(1)[0][0] == "satisfied" and ratings["unsatisfied"] < ratings["satisfied"] / 3
    anonymous = _one(intake, "SELECT count(*) FROM intake_complaint WHERE anonymous")
    assert 0.03 * COMPLAINTS <= anonymous <= 0.25 * COMPLAINTS


def test_clocks_stand_where_the_ladder_left_them(data_set: dict[str, Any]) -> None:
    """Every step whose time has passed was taken: a started scheduler finds nothing due."""
    now = datetime.fromisoformat(data_set["now"]).astimezone(UTC).replace(tzinfo=None).isoformat(" ")
    # The two clock tables' names, nothing from outside.
    for service, table in (("verification", "verification_clock"), ("feedback", "feedback_clock")):
        connection = _db(data_set, service)
        running = f"SELECT count(*) FROM {table} WHERE status = 'running'"  # noqa: S608
        due = connection.execute(running + " AND next_step_at <= ?", (now,)).fetchone()[0]
        assert due == 0, service
        assert _one(connection, running) > 0
    steps = {
        row[0]
        for row in _db(data_set, "verification").execute("SELECT DISTINCT step FROM verification_ladder_step")
    }
    assert {"reminder", "chase", "escalation", "rebuke"} <= steps


def test_the_public_query_secrets_match(data_set: dict[str, Any]) -> None:
    feedback = _db(data_set, "feedback")
    sample = data_set["sample_queries"] or []
    for query in sample[:5]:
        stored = feedback.execute(
            "SELECT query_secret_hash FROM feedback_case WHERE tracking_code = ?", (query["tracking_code"],)
        ).fetchone()[0]
        expected = query_secret_hash(
            signing_key=data_set["keys"]["SECRET_KEY"],
            tracking_code=query["tracking_code"],
            query_secret=query["query_secret"],
        )
        assert stored == expected


async def _chain_and_schema(url: str, service: str) -> tuple[str | None, int, list[Any], set[str]]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            table = table_of(AuditEntry)
            rows = (await connection.execute(table.select().order_by(table.c.seq))).all()
            entries = [AuditEntry(**row._mapping) for row in rows]

            def compare(sync: Any) -> tuple[list[Any], set[str]]:
                context = MigrationContext.configure(
                    sync, opts={"include_object": owned_tables(f"{service}_"), "compare_type": True}
                )
                return compare_metadata(context, SQLModel.metadata), set(context.get_current_heads())

            differences, heads = await connection.run_sync(compare)
        return first_break(entries), len(entries), differences, heads
    finally:
        await engine.dispose()


@pytest.mark.parametrize("service", SERVICES)
def test_each_database_has_its_services_schema_and_an_intact_chain(
    data_set: dict[str, Any], service: str
) -> None:
    url = data_set["databases"][service]
    broken, entries, differences, heads = asyncio.run(_chain_and_schema(url, service))
    assert broken is None
    assert entries > COMPLAINTS
    assert differences == []
    assert heads == set(ScriptDirectory.from_config(alembic_config(service, url)).get_heads())


def test_repeats_are_about_seven_per_cent_and_follow_intakes_rule(data_set: dict[str, Any]) -> None:
    """A repeat is the same caller about the same unit again within the 180-day window; about 7 %
    of complaints (5 to 10 % is a bureau's real share), not whatever the phone pool collides into."""
    intake = _db(data_set, "intake")
    rows = intake.execute(
        "SELECT c.id, c.repeat_of, c.accused_unit, c.county_code, c.received_at, k.match_key"
        " FROM intake_complaint c LEFT JOIN intake_complainant_key k ON k.complaint_id = c.id"
    ).fetchall()
    by_id = {row[0]: row for row in rows}
    repeats = [row for row in rows if row[1] is not None]
    share = len(repeats) / COMPLAINTS
    assert 0.035 <= share <= 0.12, share
    assert data_set["repeat_share"] == pytest.approx(share, abs=0.001)
    for _, earlier_id, unit, county, received_at, key in repeats:
        earlier = by_id[earlier_id]
        assert key is not None and earlier[5] == key
        assert (earlier[2], earlier[3]) == (unit, county)
        gap = datetime.fromisoformat(received_at) - datetime.fromisoformat(earlier[4])
        assert gap.total_seconds() > 0 and gap.days <= 180
    # A caller's other matters within the window are about other units: intake would not call
    # them repeats either.
    last: dict[str, tuple[str, str, datetime]] = {}
    for _, earlier_id, unit, county, received_at, key in sorted(rows, key=lambda row: row[4]):
        if key is None:
            continue
        at = datetime.fromisoformat(received_at)
        before = last.get(key)
        if earlier_id is None and before is not None and (at - before[2]).days < 180:
            assert (before[0], before[1]) != (unit, county)
        last[key] = (unit, county, at)


def test_working_records_are_there_in_their_shares(data_set: dict[str, Any]) -> None:
    """Evidence, extensions (延期) and rectification items (整改), as a year of real work has them."""
    verification = _db(data_set, "verification")
    tasks = _one(verification, "SELECT count(*) FROM verification_task WHERE case_kind = 'complaint'")
    evidence = _one(verification, "SELECT count(*) FROM verification_evidence")
    assert tasks <= evidence <= 3 * tasks
    statuses = Counter(row[0] for row in verification.execute("SELECT status FROM verification_extension"))
    assert statuses["approved"] > statuses["refused"] >= 0 and statuses["approved"] >= 3
    assert sum(statuses.values()) <= 0.15 * tasks
    # An approved extension moved its clock, and the task's due date, by its days; the request came
    # before the old deadline.
    moved = verification.execute(
        "SELECT e.days, e.requested_at, e.new_due_at, c.due_at, c.original_due_at, c.extended, t.due_at"
        " FROM verification_extension e JOIN verification_clock c ON c.task_id = e.task_id AND c.name = e.clock"
        " JOIN verification_task t ON t.id = e.task_id WHERE e.status = 'approved'"
    ).fetchall()
    for days, requested_at, new_due, due, original, extended, task_due in moved:
        assert extended and due == new_due == task_due
        assert requested_at < original
        assert days <= (datetime.fromisoformat(due) - datetime.fromisoformat(original)).days <= days + 4
    substantiated = _one(
        verification,
        "SELECT count(DISTINCT f.task_id) FROM verification_finding f JOIN verification_task t ON t.id = f.task_id"
        " WHERE t.case_kind = 'complaint' AND t.concluded_at IS NOT NULL AND NOT f.follow_up"
        " AND f.outcome IN ('substantiated', 'mostly_substantiated', 'partly_substantiated')",
    )
    items = verification.execute("SELECT id, status, task_id FROM verification_rectification").fetchall()
    with_items = {task for _, _, task in items}
    assert 0.3 * substantiated <= len(with_items) <= 0.9 * substantiated
    # Each item has its clock, running while the item is open.
    clocks = dict(
        verification.execute(
            "SELECT name, status FROM verification_clock WHERE name LIKE 'rectification:%'"
        ).fetchall()
    )
    for item_id, status, _ in items:
        assert clocks[f"rectification:{item_id}"] == ("running" if status == "open" else "stopped")


async def _notification_figures(url: str) -> tuple[int, list[tuple[Any, Any]]]:
    engine = create_engine(url)
    try:
        sessions = create_session_factory(engine)
        now = utcnow()
        async with sessions() as session:
            connection = await session.connection()
            summarised = int(
                (await connection.execute(sa.select(sa.func.count()).select_from(DAY))).scalar_one()
            )
            pairs = []
            for since in (now - timedelta(days=90), now - timedelta(days=5 * 366)):
                pairs.append(
                    (
                        await inbox.statistics(
                            session=session, county=None, since=since, now=now, tz=SHANGHAI
                        ),
                        await inbox.raw_statistics(session=session, county=None, since=since, now=now),
                    )
                )
        return summarised, pairs
    finally:
        await engine.dispose()


def test_the_notification_figures_summary_is_made_as_the_service_keeps_it(data_set: dict[str, Any]) -> None:
    """The finish step summarised feedback's settled days (``notification_summary``), as migration
    0011 and the service's worker do: the figures read with it equal the notifications' own."""
    summarised, pairs = asyncio.run(_notification_figures(data_set["databases"]["feedback"]))
    assert summarised > 4 * 365
    for with_summary, raw in pairs:
        assert raw and with_summary == raw
