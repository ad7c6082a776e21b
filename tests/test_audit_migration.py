"""``platform_0004`` rechains the per-matter entries of an older database into one service chain."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from alembic import command

from shared.audit import GENESIS, AuditEntry
from shared.audit_anchor import scan_chain
from shared.db import UTCDateTime, create_engine, table_of
from shared.migrations import alembic_config, upgrade


def old_digest(values: dict[str, object], prev: str) -> str:
    """The per-matter chain's hash, as ``shared.audit`` computed it before ``platform_0004``."""
    at = values["at"]
    assert isinstance(at, datetime)
    material = [
        *(values[k] for k in ("case_id", "action", "actor", "reason", "detail")),
        at.isoformat(),
        prev,
    ]
    text = json.dumps(material, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def old_rows() -> list[dict[str, object]]:
    """Two matters' per-matter chains, interleaved; case-2's second entry was edited afterwards."""
    start = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
    heads: dict[str, str] = {}
    rows: list[dict[str, object]] = []
    for index, case_id in enumerate(["case-1", "case-2", "case-1", "case-2"]):
        values: dict[str, object] = {
            "case_id": case_id,
            "action": f"step{index}",
            "actor": "routing",
            "reason": "理由",
            "detail": "{}",
            "at": start + timedelta(minutes=index),
        }
        prev = heads.get(case_id, GENESIS)
        digest = heads[case_id] = old_digest(values, prev)
        rows.append(values | {"prev_hash": prev, "entry_hash": digest})
    rows[3]["reason"] = "事后改过"
    return rows


async def insert_old_rows(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            names = ("case_id", "action", "actor", "reason", "detail", "prev_hash", "entry_hash")
            table = sa.table(
                "audit_log", *(sa.column(name, sa.Text()) for name in names), sa.column("at", UTCDateTime())
            )
            await connection.execute(sa.insert(table), old_rows())
    finally:
        await engine.dispose()


async def chain_after_upgrade(url: str) -> tuple[list[sa.Row[tuple[object, ...]]], str | None]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            audit_log = table_of(AuditEntry)
            rows = list((await connection.execute(sa.select(audit_log).order_by(audit_log.c.seq))).all())
            scan = await scan_chain(connection)
        return rows, scan.problem
    finally:
        await engine.dispose()


def test_old_entries_are_rechained_after_their_chains_are_checked(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'routing.db'}"
    upgrade("routing", url)
    command.downgrade(alembic_config("routing", url), "platform_0003")
    asyncio.run(insert_old_rows(url))

    upgrade("routing", url)
    rows, problem = asyncio.run(chain_after_upgrade(url))
    assert problem is None
    assert [row.seq for row in rows] == [1, 2, 3, 4, 5]
    assert [row.action for row in rows] == ["step0", "step1", "step2", "step3", "audit_chain_rebuilt"]
    record = rows[-1]
    assert record.case_id == "audit:chain" and record.actor == "migration"
    assert json.loads(record.detail) == {
        "entries": 4,
        "matters": 2,
        "matters_with_broken_chain": 1,
        "broken_matters": ["case-2"],
    }
