"""For tests that must change the append-only audit log: its triggers set aside for one statement."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession


async def bypassing_the_triggers(session: AsyncSession, statement: Any) -> None:
    """Run ``statement`` (an UPDATE or DELETE of ``audit_log``) as if the table allowed it.

    On PostgreSQL the table owner disables the table's own triggers and enables them again; on
    SQLite the triggers are dropped and made again from their stored text.  In the session's
    transaction, so an error leaves the triggers as they were.
    """
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        await connection.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
        await session.exec(statement)
        await connection.execute(text("ALTER TABLE audit_log ENABLE TRIGGER USER"))
        return
    triggers = (
        await connection.execute(
            text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_log'")
        )
    ).all()
    for name, _sql in triggers:
        await connection.execute(text(f'DROP TRIGGER "{name}"'))
    await session.exec(statement)
    for _name, sql in triggers:
        await connection.execute(text(sql))


async def erase_audit_log(session: AsyncSession) -> None:
    """Empty the audit log (a test that counts entries from zero)."""
    await bypassing_the_triggers(session, text("DELETE FROM audit_log"))
