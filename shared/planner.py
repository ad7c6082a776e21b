"""Per-transaction planner settings for the reads whose cost estimates mislead PostgreSQL.

PostgreSQL compiles a statement to machine code (JIT) once its estimated cost passes
``jit_above_cost``.  An aggregate or a count over tens of thousands of rows passes it whenever the
rows' pages are scattered or not all-visible, and compiling then costs more than it saves: at a
million complaints EXPLAIN ANALYZE's "JIT" timing was 125-260 ms for intake's figures, 45-65 ms
for the busiest team's task board and 4-13 ms for a supervisor's 待办 total.  The setting holds for
the transaction only; SQLite has no such thing.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection


async def without_jit(connection: AsyncConnection) -> None:
    """No JIT compilation for the rest of ``connection``'s transaction, on PostgreSQL."""
    if connection.dialect.name == "postgresql":
        await connection.exec_driver_sql("SET LOCAL jit = off")
