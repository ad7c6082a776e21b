"""Benchmark: the ledger's Excel export (督办台账, ``write_ledger_workbook``) in-process, on a data set.

    python bench/ledger_export.py --data DIR [--period year|all] [--copies K]
        [--repeats 3] [--versus OTHER/ledger_export.py [--same-content]] [--profile FILE.prof]

1. Reads the data set made by ``bench/scale_data.py`` (``<data>/manifest.json``: the databases,
   and ``now``, the moment it was made for; the export is timed as of then, so its rows, ages
   and clocks are the same from one run to the next).
2. Writes the ledger's workbook to a scratch file as ``GET /api/v1/ledger.xlsx`` does, with the
   filters ``bench/scale.py`` asks for: the matters received in the last 365 days (``--period
   year``, the default; 19,272 matters at a million complaints) or every one on the ledger
   (``--period all``), ``min_age_days`` 0.  No services, no HTTP: the time is the query, the rows
   and openpyxl.  Target: 5 s for a year at a million complaints.
   ``--copies K`` (SQLite) measures instead a scratch database holding each matter on the data
   set's ledger K times, under new ids (its tasks, clocks, ladder steps, marks and entries): a
   ledger of a year at a million complaints, 19,272 rows, without the million, is ``--copies 4
   --period all`` on a data set of 100,000 (5,130 rows on the ledger).
3. ``--versus FILE`` times another version of ``services/verification/ledger_export.py`` (for
   instance ``git show HEAD:services/verification/ledger_export.py > before.py``) run for
   run alternately with the working tree's, since on a shared machine two runs minutes apart say
   little; ``--same-content`` then reads both workbooks back and compares every cell's value.
4. ``--profile FILE`` runs one more export of the working tree's version under cProfile, writes
   the statistics to FILE and prints the functions with the most time of their own.
5. Prints the figures and writes ``bench/results/ledger-export-<backend>-<time>.json``, with the
   machine's load average, since the figures mean little on a busy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib.util
import io
import json
import os
import pstats
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from datetime import time as day_time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, bench_token_keys, percentile  # noqa: E402 - after the sys.path line above
from bench.scale_input import load_data_set  # noqa: E402 - after the sys.path line above

EXPORT_MS = 5000.0


def _load_version(path: Path) -> ModuleType:
    """Another ``ledger_export.py``, imported under a name of its own."""
    spec = importlib.util.spec_from_file_location("ledger_export_versus", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _context(manifest: dict[str, Any], keys: dict[str, str]) -> Any:
    """Verification's context as the service makes it from its settings, at the data set's moment."""
    # The settings refuse to load without keys, which the export does not use.
    for name, value in {**bench_token_keys(), **keys}.items():
        os.environ.setdefault(name, value)
    from services.verification.context import VerificationContext
    from services.verification.settings import VerificationSettings
    from shared.clock import ControlledClock

    made_for = manifest.get("now")
    clock = ControlledClock(datetime.fromisoformat(made_for) if made_for else datetime.now(UTC))
    return VerificationContext.from_settings(VerificationSettings(), clock=clock)


def _filters(ctx: Any, period: str) -> Any:
    """What ``ledger_router.ledger_filters`` makes of ``min_age_days=0`` and, for a year, ``start``/``end``."""
    from services.verification.ledger import LedgerQuery

    if period == "all":
        return LedgerQuery(min_age_days=0)
    tz = ctx.calendar.tz
    last = ctx.clock.now().astimezone(tz).date()
    first = last - timedelta(days=364)
    return LedgerQuery(
        min_age_days=0,
        received_from=datetime.combine(first, day_time(), tz),
        received_before=datetime.combine(last + timedelta(days=1), day_time(), tz),
    )


# What the export reads of a matter on the ledger; ``--copies`` copies these rows.
COPIED_TABLES = (
    "verification_matter",
    "verification_task",
    "verification_clock",
    "verification_ladder_step",
    "verification_ledger_mark",
    "verification_ledger_entry",
)
# Renamed in each copy but the first: the keys, and what would give the copy away in the workbook.
SUFFIXED = ("case_id", "task_id", "assignment_id", "tracking_code")


def _copied_database(source_url: str, folder: Path, copies: int) -> str:
    """A new database (the service's migrations) with each matter on ``source_url``'s ledger
    ``copies`` times: the ids of the copies carry a suffix (text) or an offset (numbers)."""
    import sqlite3

    from shared.migrations import upgrade

    if not source_url.startswith("sqlite"):
        raise SystemExit("--copies needs a SQLite data set")
    source = Path(source_url.split(":///", 1)[1])
    target = folder / "verification.db"
    url = f"sqlite:///{target}"
    upgrade("verification", url)
    # URIs on: the source is attached read-only.
    database = sqlite3.connect(f"file:{target}", uri=True)
    try:
        database.execute("ATTACH DATABASE ? AS source", (f"file:{source}?mode=ro",))
        for copy in range(copies):
            for table in COPIED_TABLES:
                types = {
                    row[1]: str(row[2]).upper()
                    for row in database.execute(f"PRAGMA main.table_info({table})")
                }
                columns = list(types)
                numbered = types.get("id", "").startswith("INT")
                chosen = []
                for name in columns:
                    if name in SUFFIXED or (name == "id" and not numbered):
                        chosen.append(f"{name} || :suffix")
                    elif name in ("id", "clock_id"):
                        # Past every id of the source: the copies' rows never meet its own.
                        chosen.append(f"{name} + :copy * 1000000000")
                    else:
                        chosen.append(name)
                database.execute(
                    f"INSERT INTO main.{table} ({', '.join(columns)}) "  # noqa: S608 - the schema's own names
                    f"SELECT {', '.join(chosen)} FROM source.{table} "
                    "WHERE case_id IN (SELECT case_id FROM source.verification_ledger_entry)",
                    {"suffix": f"~{copy}" if copy else "", "copy": copy},
                )
        database.commit()
        database.execute("DETACH DATABASE source")
        database.execute("ANALYZE")
        database.commit()
    finally:
        database.close()
    return url


async def _export_once(
    module: ModuleType, factory: Any, ctx: Any, filters: Any, path: str
) -> tuple[int, float, float]:
    """One export: the rows, the wall-clock seconds, and the CPU seconds of this process (its
    threads included), which a busy machine moves less than the wall clock."""
    started, cpu = time.perf_counter(), time.process_time()
    async with factory() as session:
        rows = await module.write_ledger_workbook(session=session, ctx=ctx, filters=filters, path=path)
    return int(rows), time.perf_counter() - started, time.process_time() - cpu


def _sizes(paths: dict[str, str]) -> dict[str, int]:
    return {name: os.path.getsize(path) for name, path in paths.items()}


def _remove(scratch: Path) -> None:
    shutil.rmtree(scratch)


def _cell_values(path: str) -> list[tuple[Any, ...]]:
    from openpyxl import load_workbook

    workbook = load_workbook(path, read_only=True)
    try:
        # Row 2 holds the moment of the export, which two runs never share.
        return [
            row for number, row in enumerate(workbook.active.iter_rows(values_only=True), 1) if number != 2
        ]
    finally:
        workbook.close()


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    from services.verification import ledger_export
    from shared.db import create_engine, create_session_factory
    from shared.logging import configure_logging

    configure_logging(service="ledger-export-bench", level="WARNING")
    folder = Path(args.data)
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    data = load_data_set(folder)
    url = data.db_urls["verification"]
    scratch = Path(tempfile.mkdtemp(prefix="ledger-export-bench-"))
    if args.copies:
        url = await asyncio.to_thread(_copied_database, url, scratch, args.copies)
    ctx = _context(manifest, data.env)
    filters = _filters(ctx, args.period)
    versions: dict[str, ModuleType] = {"working tree": ledger_export}
    if args.versus:
        versions = {f"versus ({Path(args.versus).name})": _load_version(Path(args.versus)), **versions}
    engine = create_engine(url)
    factory = create_session_factory(engine)
    paths = {name: str(scratch / f"{index}.xlsx") for index, name in enumerate(versions)}
    timings: dict[str, list[float]] = {name: [] for name in versions}
    cpu: dict[str, list[float]] = {name: [] for name in versions}
    counted: dict[str, int] = {}
    sizes: dict[str, int] = {}
    load_before = list(os.getloadavg())
    try:
        # One run of each unmeasured: the database's pages into the cache, the modules' imports.
        for name, module in versions.items():
            counted[name], _, _ = await _export_once(module, factory, ctx, filters, paths[name])
        for repeat in range(args.repeats):
            # Alternately, and each round in the other order: neither always runs after the other.
            order = list(versions.items()) if repeat % 2 == 0 else list(reversed(versions.items()))
            for name, module in order:
                rows, seconds, cpu_seconds = await _export_once(module, factory, ctx, filters, paths[name])
                counted[name] = rows
                timings[name].append(seconds)
                cpu[name].append(cpu_seconds)
                print(f"  {name}: {rows} rows in {seconds:.2f} s ({cpu_seconds:.2f} s CPU)", flush=True)
        sizes = _sizes(paths)
        same = None
        if args.same_content and len(versions) == 2:
            first, second = (_cell_values(path) for path in paths.values())
            same = first == second
            if not same:
                differing = [
                    (number, a, b)
                    for number, (a, b) in enumerate(zip(first, second, strict=False), 1)
                    if a != b
                ]
                print(f"  content differs: {len(first)} and {len(second)} rows; first: {differing[:3]}")
        profile = None
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            await _export_once(ledger_export, factory, ctx, filters, paths["working tree"])
            profiler.disable()
            profiler.dump_stats(args.profile)
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(args.profile_top)
            profile = out.getvalue()
            print(profile)
    finally:
        await engine.dispose()
        _remove(scratch)
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "database": data.backend,
        # The folder's name, not its path: results are committed, paths are this machine's.
        "data_set": folder.name,
        "counts": data.counts,
        "as_of": ctx.clock.now().isoformat(),
        "period": args.period,
        "copies": args.copies or None,
        "repeats": args.repeats,
        "versions": [
            {
                "version": name,
                "rows": counted[name],
                "seconds": [round(s, 3) for s in timings[name]],
                "p50_s": round(percentile(timings[name], 0.5), 3),
                "best_s": round(min(timings[name]), 3),
                "rows_per_second": round(counted[name] / min(timings[name])),
                "cpu_seconds": [round(s, 3) for s in cpu[name]],
                "cpu_p50_s": round(percentile(cpu[name], 0.5), 3),
                "bytes": sizes.get(name),
                "target_s": EXPORT_MS / 1000,
            }
            for name in versions
        ],
        "same_content": same,
        "profile": args.profile or None,
        "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "machine": {"cpus": os.cpu_count(), "load_before": load_before, "load_after": list(os.getloadavg())},
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="var/bench-data", help="folder of the data set (its manifest.json)")
    parser.add_argument("--period", choices=("year", "all"), default="year", help="the last 365 days, or all")
    parser.add_argument(
        "--copies", type=int, default=0, help="a scratch database with each matter on the ledger K times"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed exports of each version")
    parser.add_argument("--versus", default="", help="another ledger_export.py to time alternately")
    parser.add_argument("--same-content", action="store_true", help="with --versus: compare the cells")
    parser.add_argument("--profile", default="", help="one more export under cProfile, its statistics here")
    parser.add_argument("--profile-top", type=int, default=30, help="functions printed from the profile")
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args))
    for row in result["versions"]:
        verdict = "pass" if row["p50_s"] * 1000 <= EXPORT_MS else "over"
        print(
            f"{row['version']}: {row['rows']} rows, p50 {row['p50_s']} s, best {row['best_s']} s, "
            f"CPU p50 {row['cpu_p50_s']} s "
            f"({row['rows_per_second']} rows/s, {row['bytes']} bytes; target {row['target_s']:g} s at p50: {verdict})"
        )
    if result["same_content"] is not None:
        print(f"same content: {result['same_content']}")
    print(
        f"load average {result['machine']['load_before'][0]:.1f} before, {result['machine']['load_after'][0]:.1f} after"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"ledger-export-{result['database']}-{stamp}.json"
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"written: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
