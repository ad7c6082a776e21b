"""How long a 5,000-row transfer list (.xlsx) takes to import, intake on its own as in production.

Issue 15 asks for under a minute.  Intake runs alone, in this process, against a NATS server it
starts (or ``--nats-url``), on SQLite or on ``--postgres URL``; the figure is printed and written to
bench/results/import-<database>-<time>.json.  Measured here, not by a timed test: these machines'
speed moves.

    python bench/import_xlsx.py [--rows 5000] [--postgres postgresql://…/test]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import (  # noqa: E402 - after the path is set
    SERVICE_NAMES,
    Databases,
    InProcessServices,
    System,
    allocate,
    base_environment,
    reset_stream,
    start_nats,
)
from tests.test_imports import finished, good_row, upload, workbook  # noqa: E402

RESULTS = ROOT / "bench" / "results"


async def measure(*, rows: int, backend: str, nats_url: str, folder: Path) -> dict[str, object]:
    await reset_stream(nats_url, "SUPERVISION")
    databases = Databases(backend, folder)
    ports, urls = allocate()
    db_urls = {name: await databases.url_for(name) for name in SERVICE_NAMES}
    env = base_environment(nats_url=nats_url, urls=urls, db_urls=db_urls, ports=ports)
    services = InProcessServices()
    intake = System(urls=urls, env=env, nats_url=nats_url)
    try:
        await services.start("intake", env)
        content = workbook([good_row() for _ in range(rows)])
        started = time.monotonic()
        response = await upload(intake, content)
        assert response.status_code == 202, response.text
        report = await finished(intake, response.json()["id"], timeout=600.0)
        took = time.monotonic() - started
    finally:
        await intake.close()
        await services.stop_all()
        await databases.drop_all()
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "database": "postgresql" if backend == "postgres" else "sqlite",
        "rows": rows,
        "accepted": report["accepted"],
        "refused": report["refused"],
        "seconds": round(took, 1),
        "rows_per_second": round(rows / took, 1),
        "cpus": os.cpu_count(),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--postgres", help="a PostgreSQL URL whose role may CREATE DATABASE")
    parser.add_argument("--nats-url", help="a NATS server with JetStream (default: one started here)")
    args = parser.parse_args()
    backend = "postgres" if args.postgres else "sqlite"
    if args.postgres:
        os.environ["TEST_POSTGRES_URL"] = args.postgres
    with TemporaryDirectory() as scratch:
        server = None if args.nats_url else start_nats(Path(scratch) / "nats")
        try:
            figures = await measure(
                rows=args.rows,
                backend=backend,
                nats_url=args.nats_url or server.url,  # type: ignore[union-attr]
                folder=Path(scratch),
            )
        finally:
            if server is not None:
                server.stop()
    print(
        f"{figures['rows']} rows on {figures['database']}: {figures['seconds']} s "
        f"({figures['rows_per_second']} rows/s), {figures['accepted']} accepted, {figures['refused']} refused"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"import-{figures['database']}-{stamp}.json").write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
