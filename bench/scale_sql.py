"""The benchmark's database side: the services' SQL traced and explained, the ladders timed in-process.

``bench/scale.py`` starts each service through ``python bench/scale_sql.py NAME`` when asked to
explain: the service as ``python -m services serve NAME``, with every statement, its parameters
and its time appended to ``$SCALE_SQL_TRACE_DIR/NAME.jsonl`` (the scratch folder of the run; the
data set is synthetic).  The plans of the heaviest statements come from the data set's databases.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import percentile  # noqa: E402 - after the sys.path line above

TRACE_DIR_ENV = "SCALE_SQL_TRACE_DIR"
SCRIPT = Path(__file__).resolve()
# Statements of the services' background workers (outbox relay, delivery, ladders), not of a request.
BACKGROUND_MARKS = ("FROM outbox", "SKIP LOCKED", "FROM feedback_delivery", "dead_letter")


# --- SQL trace (--explain) ---------------------------------------------------------------------


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"__dt__": value.isoformat()}
    if isinstance(value, bytes | memoryview):
        return {"__b__": bytes(value).hex()}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _from_json(value: Any) -> Any:
    if isinstance(value, dict) and "__dt__" in value:
        return datetime.fromisoformat(value["__dt__"])
    if isinstance(value, dict) and "__b__" in value:
        return bytes.fromhex(value["__b__"])
    return value


def serve_traced(name: str) -> int:
    """``python -m services serve NAME`` with every statement and its time appended to a file."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from services.cli import main as cli_main

    out = (Path(os.environ[TRACE_DIR_ENV]) / f"{name}.jsonl").open("a", encoding="utf-8")

    @event.listens_for(Engine, "before_cursor_execute")
    def _before(conn: Any, _cursor: Any, _sql: str, _params: Any, _context: Any, _many: bool) -> None:
        conn.info["scale_started"] = time.perf_counter()

    @event.listens_for(Engine, "after_cursor_execute")
    def _after(conn: Any, _cursor: Any, sql: str, params: Any, _context: Any, many: bool) -> None:
        elapsed = (time.perf_counter() - conn.info.pop("scale_started", time.perf_counter())) * 1000
        values = [] if many or not isinstance(params, list | tuple) else [_json_value(p) for p in params]
        out.write(json.dumps({"t": time.time(), "ms": elapsed, "sql": sql, "params": values}) + "\n")
        out.flush()

    return cli_main(["serve", name])


def traced_statements(trace_dir: Path, service: str, start: float, end: float) -> list[dict[str, Any]]:
    path = trace_dir / f"{service}.jsonl"
    if not path.exists():
        return []
    found = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            if start <= row["t"] <= end:
                found.append(row)
    return found


async def explain(url: str, sql: str, params: list[Any]) -> str:
    values = [_from_json(p) for p in params]
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1]
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            rows = conn.execute("EXPLAIN QUERY PLAN " + sql, values).fetchall()
        return "\n".join(f"{'  ' * (r[1] > 0)}{r[3]}" for r in rows)
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        async with conn.transaction():
            rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *values)
            # EXPLAIN ANALYZE runs the statement: whatever it would change is rolled back.
            raise _RollBack("\n".join(r[0] for r in rows))
    except _RollBack as plan:
        return str(plan)
    finally:
        await conn.close()


class _RollBack(Exception):
    pass


# --- The ladders, in-process -------------------------------------------------------------------


async def time_ladders(db_urls: dict[str, str], env: dict[str, str], *, repeats: int) -> list[dict[str, Any]]:
    """Each ladder's scan, and one round of its steps in a transaction rolled back: nothing is sent."""
    os.environ.update(env)
    from shared.logging import configure_logging

    # A step logs a line; printed here they would be timed with the round.
    configure_logging(service="scale-bench", level="WARNING")
    from services.feedback.clock_ladder import feedback_ladder
    from services.feedback.context import FeedbackContext
    from services.feedback.settings import FeedbackSettings
    from services.verification.context import VerificationContext
    from services.verification.ladder import task_ladder
    from services.verification.settings import VerificationSettings
    from shared.db import create_engine
    from shared.settings import load_settings

    ladders: dict[str, Any] = {
        "verification": task_ladder(
            VerificationContext.from_settings(load_settings(VerificationSettings)).policy
        ),
        "feedback": feedback_ladder(FeedbackContext.from_settings(load_settings(FeedbackSettings))),
    }
    results = []
    for service, ladder in ladders.items():
        engine = create_engine(db_urls[service])
        try:
            results.append({"ladder": service, **await _time_ladder(engine, ladder, repeats=repeats)})
        finally:
            await engine.dispose()
    return results


async def _time_ladder(engine: Any, ladder: Any, *, repeats: int) -> dict[str, Any]:
    from sqlalchemy import func, select
    from sqlalchemy.ext.asyncio import async_sessionmaker
    from sqlmodel.ext.asyncio.session import AsyncSession

    from shared.db import is_sqlite
    from shared.ladder import RUNNING, fire_due_steps

    now = datetime.now(UTC)
    table: Any = ladder.clock_table
    running = table.status == RUNNING
    due = select(table.id).where(running, table.next_step_at <= now).order_by(table.next_step_at).limit(100)
    async with engine.connect() as conn:
        counted = await conn.execute(select(func.count()).where(running))
        running_clocks = counted.scalar_one()
        due_now = (
            await conn.execute(select(func.count()).where(running, table.next_step_at <= now))
        ).scalar_one()
        scans = []
        for _ in range(repeats):
            started = time.perf_counter()
            (await conn.execute(due)).all()
            scans.append((time.perf_counter() - started) * 1000)
        # With less than a batch due now, the round is timed at the moment a full batch is due.
        hundredth = (
            await conn.execute(
                select(table.next_step_at)
                .where(running, table.next_step_at.is_not(None))
                .order_by(table.next_step_at)
                .offset(99)
                .limit(1)
            )
        ).scalar_one_or_none()
        round_at = max(now, hundredth) if hundredth is not None and due_now < 100 else now
        await conn.rollback()
        transaction = await conn.begin()
        factory = async_sessionmaker(
            bind=conn, class_=AsyncSession, expire_on_commit=False, join_transaction_mode="create_savepoint"
        )
        started = time.perf_counter()
        taken = await fire_due_steps(
            session_factory=factory, ladder=ladder, now=round_at, lock_rows=not is_sqlite(str(engine.url))
        )
        round_ms = (time.perf_counter() - started) * 1000
        await transaction.rollback()
    return {
        "running_clocks": running_clocks,
        "due_now": due_now,
        "scan_p50_ms": round(percentile(scans, 0.5), 1),
        "scan_max_ms": round(max(scans), 1),
        "round_steps": taken,
        "round_at": round_at.isoformat(timespec="seconds"),
        "round_ms": round(round_ms, 1),
    }


def attribute_statements(results: list[dict[str, Any]], trace_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Each endpoint's statements (by the time its requests ran), background work left out.

    Also writes on each result the SQL time and statement count per request: an endpoint slow
    with little SQL time is slow in Python, one with many statements is asking row by row.
    """
    by_service: dict[str, list[dict[str, Any]]] = {}
    for row in results:
        if row["service"] not in by_service:
            by_service[row["service"]] = traced_statements(trace_dir, row["service"], 0, float("inf"))
    found = {}
    for row in results:
        start, end = row["window"]
        statements = [
            s
            for s in by_service[row["service"]]
            if start <= s["t"] <= end and not any(mark in s["sql"] for mark in BACKGROUND_MARKS)
        ]
        asked = row["asked"]  # the window holds the warm-up requests too
        row["sql_ms_per_request"] = round(sum(s["ms"] for s in statements) / asked, 1)
        row["statements_per_request"] = round(len(statements) / asked, 1)
        found[row["endpoint"]] = statements
    return found


async def explain_slowest(
    results: list[dict[str, Any]], db_urls: dict[str, str], trace_dir: Path, *, top: int
) -> list[dict[str, Any]]:
    """The heaviest statements of the slowest endpoints (relative to their targets), with their plans."""
    statements = attribute_statements(results, trace_dir)
    plans = []
    for row in sorted(results, key=lambda r: r["p95_ms"] / r["target_ms"], reverse=True)[:top]:
        totals: dict[str, list[Any]] = {}
        for s in statements[row["endpoint"]]:
            entry = totals.setdefault(s["sql"], [0.0, 0, s["params"]])
            entry[0] += s["ms"]
            entry[1] += 1
        heaviest = sorted(totals.items(), key=lambda item: item[1][0], reverse=True)[:3]
        for sql, (total_ms, count, params) in heaviest:
            if not sql.lstrip().upper().startswith(("SELECT", "WITH")):
                continue
            try:
                plan = await explain(db_urls[row["service"]], sql, params)
            except Exception as exc:  # a plan we cannot take is reported, not fatal
                plan = f"(no plan: {exc})"
            plans.append(
                {
                    "endpoint": row["endpoint"],
                    "ms_per_request": round(total_ms / row["asked"], 1),
                    "runs_per_request": round(count / row["asked"], 1),
                    "sql": sql,
                    "plan": plan,
                }
            )
    return plans


if __name__ == "__main__":
    sys.exit(serve_traced(sys.argv[1]))
