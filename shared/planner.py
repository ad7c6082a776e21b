"""Per-transaction planner settings for the reads whose cost estimates mislead PostgreSQL.

PostgreSQL compiles a statement to machine code (JIT) once its estimated cost passes
``jit_above_cost``.  An aggregate or a sort over tens of thousands of rows passes it whenever the
rows' pages are scattered, and compiling then costs more than running: 100-170 ms of EXPLAIN
ANALYZE's "JIT" timing for reads that run in 30-100 ms at a million complaints.  The setting holds
for the transaction only; SQLite has no such thing.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection


async def without_jit(connection: AsyncConnection) -> None:
    """No JIT compilation for the rest of ``connection``'s transaction, on PostgreSQL."""
    if connection.dialect.name == "postgresql":
        await connection.exec_driver_sql("SET LOCAL jit = off")
