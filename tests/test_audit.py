"""The audit trail proves it was not edited afterwards: any change breaks the hash chain."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import delete, update
from sqlmodel import col

from shared.audit import AuditEntry, audit, trail, verify_chain
from shared.db import create_engine, create_session_factory
from shared.migrations import upgrade
from tests.audit_support import bypassing_the_triggers


async def test_editing_or_deleting_an_entry_breaks_the_chain(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}"
    await asyncio.to_thread(upgrade, "routing", url)
    engine = create_engine(url)
    factory = create_session_factory(engine)
    try:
        async with factory() as session, session.begin():
            for action in ("assigned", "returned", "assigned"):
                await audit(
                    session, case_id="case-1", action=action, actor="routing", reason=f"理由 {action}"
                )
            await audit(session, case_id="case-2", action="assigned", actor="routing")
        async with factory() as session:
            entries = await trail(session, "case-1")
            assert len(entries) == 3 and verify_chain(entries)
            assert entries[1].prev_hash == entries[0].entry_hash

        async with factory() as session, session.begin():
            await bypassing_the_triggers(
                session,
                update(AuditEntry).where(col(AuditEntry.id) == entries[1].id).values(reason="改过的理由"),
            )
        async with factory() as session:
            assert not verify_chain(await trail(session, "case-1"))
            assert verify_chain(await trail(session, "case-2"))

        async with factory() as session, session.begin():
            await bypassing_the_triggers(
                session,
                update(AuditEntry)
                .where(col(AuditEntry.id) == entries[1].id)
                .values(reason=entries[1].reason),
            )
        async with factory() as session:
            assert verify_chain(await trail(session, "case-1"))
        async with factory() as session, session.begin():
            await bypassing_the_triggers(
                session, delete(AuditEntry).where(col(AuditEntry.id) == entries[1].id)
            )
        async with factory() as session:
            assert not verify_chain(await trail(session, "case-1"))
    finally:
        await engine.dispose()
