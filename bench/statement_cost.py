"""Benchmark: the client's CPU for one small statement, through each layer the services use.

    python bench/statement_cost.py [--postgres-url URL] [--statements 2000] [--repeats 3]

On PostgreSQL (default ``BENCH_POSTGRES_URL``, else the server on 127.0.0.1) a complaint makes a
few dozen statements across the four services, each from SQLAlchemy on asyncpg.  This times the
same trivial statement (``SELECT`` of a bound integer), ``--statements`` times in one
transaction, through asyncpg itself, a SQLAlchemy Core connection and an ORM session, and reports
the process's CPU per statement (what the services pay on their side; the server's share is not
counted) and the wall time.  The layers are run in turn, ``--repeats`` times.  Prints the figures
and writes ``bench/results/statement-cost-<time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import RESULTS
from shared.db import create_engine, create_session_factory

_SQL = "SELECT CAST(:k AS BIGINT)"


async def _timed(run: Callable[[int], Awaitable[Any]], count: int) -> tuple[float, float]:
    """CPU and wall microseconds per call of ``run`` over ``count`` calls, after a warm-up."""
    for index in range(100):
        await run(index)
    cpu, wall = time.process_time(), time.perf_counter()
    for index in range(count):
        await run(index)
    return (time.process_time() - cpu) * 1e6 / count, (time.perf_counter() - wall) * 1e6 / count


async def measure(url: str, count: int) -> dict[str, tuple[float, float]]:
    engine = create_engine(url)
    sessions = create_session_factory(engine)
    statement = text(_SQL)
    figures: dict[str, tuple[float, float]] = {}
    try:
        async with engine.begin() as connection:
            raw = (await connection.get_raw_connection()).driver_connection
            assert raw is not None
            figures["asyncpg"] = await _timed(lambda k: raw.fetchval("SELECT $1::bigint", k), count)
            figures["sqlalchemy core"] = await _timed(
                lambda k: connection.execute(statement, {"k": k}), count
            )
        async with sessions() as session, session.begin():
            figures["orm session"] = await _timed(lambda k: session.exec(statement, params={"k": k}), count)
    finally:
        await engine.dispose()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument("--statements", type=int, default=2000, help="statements per layer and run")
    parser.add_argument("--repeats", type=int, default=3, help="runs of every layer, in turn")
    args = parser.parse_args()
    runs = [asyncio.run(measure(args.postgres_url, args.statements)) for _ in range(args.repeats)]
    result: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "statements": args.statements,
        "repeats": args.repeats,
        "load_average": os.getloadavg(),
        "layers": {},
    }
    for layer in runs[0]:
        cpu = statistics.median(run[layer][0] for run in runs)
        wall = statistics.median(run[layer][1] for run in runs)
        result["layers"][layer] = {"cpu_us": round(cpu, 1), "wall_us": round(wall, 1)}
        print(
            f"{layer:16} client CPU {cpu:7.1f} us per statement, wall {wall:7.1f} us (median of {args.repeats})"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"statement-cost-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"written to {out.relative_to(RESULTS.parent.parent)}")


if __name__ == "__main__":
    main()
