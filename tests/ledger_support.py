"""The ledger's kept entries (``services/verification/ledger_entries.py``) checked against the
tables: under every filter the data offers, the rows read from the entries must be the rows the
tables give at read time (``ledger.ledger_query``), and rebuilding the entries must give the rows
the running service kept."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from services.verification import ledger_entries
from services.verification.context import VerificationContext
from services.verification.ledger import LedgerQuery, entries_query, ledger_query
from services.verification.models import LadderStep, LedgerMark, MatterSnapshot, TaskClock
from tests.databases import one_snapshot
from tests.support import System


def _filters(rows: dict[str, set[Any]], now: datetime) -> list[LedgerQuery]:
    """The unfiltered ledger, and each filter with each value the data holds (and one it does not)."""
    found = [
        LedgerQuery(min_age_days=0),
        LedgerQuery(min_age_days=30),
        LedgerQuery(
            min_age_days=0, received_from=now - timedelta(days=400), received_before=now - timedelta(days=5)
        ),
        LedgerQuery(min_age_days=0, received_from=now - timedelta(days=1)),
    ]
    for name, values in rows.items():
        for value in sorted(values | {"none-such"}, key=str):
            found.append(LedgerQuery(min_age_days=0, **{name: value}))
    found.append(
        LedgerQuery(
            min_age_days=0,
            team_code=min(rows["team_code"], default=None),
            county=min(rows["county"], default=None),
        )
    )
    return found


async def check_ledger_entries(system: System) -> int:
    """Assert the entries agree with the tables; the number of entries kept."""
    factory = system.apps["verification"].state.runtime.session_factory
    ctx: VerificationContext = system.apps["verification"].state.verification
    now = ctx.clock.now()
    async with one_snapshot(factory) as session:
        connection = await session.connection()
        kept = {tuple(row) for row in await connection.execute(select(ledger_entries.ENTRY))}
        allegations = (await connection.execute(select(MatterSnapshot.allegations))).scalars()
        values: dict[str, set[Any]] = {
            "county": {row[3] for row in kept if row[3]},
            "team_code": {row[4] for row in kept},
            # A rectification item's clock by its own name and by the filter's prefix.
            "clock": {
                part
                for name in (await connection.execute(select(TaskClock.name))).scalars()
                for part in (name, name.split(":")[0])
            },
            "step": set((await connection.execute(select(LadderStep.step))).scalars()),
            "marked": set((await connection.execute(select(LedgerMark.mark))).scalars()),
            "category": {str(a.get("category")) for listed in allegations for a in listed},
        }
        for filters in _filters(values, now):
            from_entries = sorted(
                (task_id, case_id)
                for task_id, _, case_id in await session.exec(entries_query(filters, now=now))
            )
            live = sorted(
                (task.id, task.case_id) for task, _ in await session.exec(ledger_query(filters, now=now))
            )
            assert from_entries == live, filters
        # What a rebuild would write, made in the same snapshot (a rebuild's writes could collide
        # with a consumer's on PostgreSQL).
        made = await connection.run_sync(ledger_entries.entries_of, None)
        rebuilt = {tuple(row[column.name] for column in ledger_entries.ENTRY.columns) for row in made}
    assert kept == rebuilt
    return len(kept)
