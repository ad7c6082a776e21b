"""``python -m tests.chaos`` (``make chaos``): the full fault test, on SQLite and, when asked, PostgreSQL.

Parameters come from the command line or from ``CHAOS_*`` variables (``CHAOS_POSTGRES=1``
adds the PostgreSQL run; ``CHAOS_COUNT``, ``CHAOS_RATE``, ``CHAOS_CLIENTS``,
``CHAOS_NATS_RESTARTS``, ``CHAOS_SETTLE_TIMEOUT``).  Each run's summary is written to
``bench/results/chaos-<backend>-<timestamp>.json``; the exit code is 1 when any run failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.chaos.run import ChaosConfig, describe, run_chaos

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


def _env(name: str, default: str) -> str:
    return os.environ.get(f"CHAOS_{name}") or default


def parse(argv: list[str]) -> argparse.Namespace:
    full = ChaosConfig()
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--postgres", action="store_true", default=_env("POSTGRES", "") not in ("", "0"))
    parser.add_argument("--only-postgres", action="store_true", help="skip the SQLite run")
    parser.add_argument("--short", action="store_true", help="the CI version's parameters")
    parser.add_argument("--count", type=int, default=int(_env("COUNT", str(full.count))))
    parser.add_argument("--rate", type=float, default=float(_env("RATE", str(full.rate))))
    parser.add_argument("--clients", type=int, default=int(_env("CLIENTS", str(full.clients))))
    parser.add_argument(
        "--nats-restarts", type=int, default=int(_env("NATS_RESTARTS", str(full.nats_restarts)))
    )
    parser.add_argument(
        "--settle-timeout", type=float, default=float(_env("SETTLE_TIMEOUT", str(full.settle_timeout)))
    )
    parser.add_argument("--pause-seconds", type=float, default=full.pause_seconds)
    parser.add_argument("--outage-seconds", type=float, default=full.outage_seconds)
    parser.add_argument("--postgres-url", default=os.environ.get("TEST_POSTGRES_URL"))
    parser.add_argument(
        "--keep", action="store_true", help="keep the work folder (logs, databases) on success"
    )
    parser.add_argument("--results", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def config_for(args: argparse.Namespace, backend: str) -> ChaosConfig:
    if args.short:
        return replace(ChaosConfig.short(backend, postgres_url=args.postgres_url), keep_workdir=args.keep)
    return ChaosConfig(
        backend=backend,
        count=args.count,
        rate=args.rate,
        clients=args.clients,
        nats_restarts=args.nats_restarts,
        settle_timeout=args.settle_timeout,
        pause_seconds=args.pause_seconds,
        outage_seconds=args.outage_seconds,
        postgres_url=args.postgres_url,
        keep_workdir=args.keep,
    )


async def run_until_stopped(config: ChaosConfig) -> dict[str, Any] | None:
    """The run, or None when SIGINT or SIGTERM stopped it (after every child was stopped)."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await run_chaos(config)
    except asyncio.CancelledError:
        return None


def main(argv: list[str]) -> int:
    args = parse(argv)
    backends = (["sqlite"] if not args.only_postgres else []) + (
        ["postgres"] if args.postgres or args.only_postgres else []
    )
    passed = True
    args.results.mkdir(parents=True, exist_ok=True)
    for backend in backends:
        try:
            summary = asyncio.run(run_until_stopped(config_for(args, backend)))
        except KeyboardInterrupt:  # asyncio.run says so after its task was cancelled by Ctrl-C
            summary = None
        if summary is None:
            print(f"chaos {backend}: interrupted; every process it started is stopped", flush=True)
            return 130
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        out = args.results / f"chaos-{backend}-{stamp}.json"
        out.write_text(json.dumps(summary, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
        print(describe(summary), flush=True)
        print(f"  summary written to {out}", flush=True)
        passed = passed and bool(summary["passed"])
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
