"""Benchmark: the pages and APIs people use, on a large data set, through the running services.

    python bench/scale.py --data var/bench-data [--requests 50] [--budget 60] [--explain]
    make bench-scale BENCH_SCALE_ARGS='--explain'

1. Reads the data set made by ``bench/scale_data.py`` (``<data>/manifest.json``: databases, keys,
   busiest team, sample phones and public queries, accounts).
2. Times the overdue ladders in-process against its databases (``bench/scale_sql.py``): the scan
   for due clocks a scheduler round starts with, ten times, and one whole round of up to a batch
   of steps (at the moment a full batch is due) in a transaction that is rolled back, so nothing
   is sent and the data set stays as it was.  Target: under a second each.
3. Starts nats-server and the four services on those databases, as ``bench/pipeline.py`` does
   (``bench/common.py``), with the data set's keys; the schedulers run as in production.
4. Asks each endpoint in turn, signed in through the sign-in page as the role that uses it
   (the public query signed out): two warm-up requests (one for an endpoint over a second),
   then ``--requests`` timed ones to the last byte, or fewer once ``--budget`` seconds are spent.
   Targets: 100 ms at the 95th percentile for every page and API, 5 s for the ledger's Excel
   export (a year of matters where the export takes a period, else every open matter).
5. Prints the table and writes ``bench/results/scale-<backend>-<time>.json`` and ``.md``, with
   the machine's load average, since the figures mean little on a busy machine.

``--explain`` runs the services with every SQL statement traced to the scratch folder, adds the
SQL time and statement count per request to the table (time of the execute call: rows fetched
afterwards are not in it, so a slow endpoint with little SQL time is slow in Python or in
fetching), and prints the plans of the heaviest statements of the endpoints furthest over their
targets: EXPLAIN QUERY PLAN on SQLite, EXPLAIN (ANALYZE, BUFFERS) on PostgreSQL (rolled back).
``--fill N`` measures instead a SQLite system the benchmark fills itself through intake's API.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import scale_sql  # noqa: E402 - after the sys.path line above
from bench.common import (  # noqa: E402 - after the sys.path line above
    IDENTITY_KEY,
    RESULTS,
    SECRET_KEY,
    Services,
    percentile,
    start_nats,
    wait_for_audit_checkpoints,
    wait_until_drained,
)
from bench.scale_input import DataSet, fill, load_data_set  # noqa: E402 - after the sys.path line above

PAGE_MS = 100.0
EXPORT_MS = 5000.0
SCAN_MS = 1000.0


# --- The endpoints ----------------------------------------------------------------------------


@dataclass
class Probe:
    name: str
    service: str
    role: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    target_ms: float = PAGE_MS
    requests: int | None = None


SV, LEAD, INSP, OP = "supervisor", "leader", "inspector", "operator"
PERIOD_NAMES = (("start", "end"), ("period_start", "period_end"))


def _period(api: dict[str, set[str]], path: str, year: dict[str, str]) -> dict[str, str]:
    return {name: day for name, day in year.items() if name in api.get(path, set())}


def probes(data: DataSet, api: dict[str, set[str]], *, export_requests: int) -> list[Probe]:
    """Every endpoint to ask, with the role that asks it; parameters some versions lack are left out."""
    now = datetime.now(UTC).date()
    first, last = (now - timedelta(days=364)).isoformat(), now.isoformat()
    # The last 365 days, under whichever names the endpoint gives a period.
    year = {name: day for pair in PERIOD_NAMES for name, day in zip(pair, (first, last), strict=True)}
    return [
        *_dashboard_probes(data, api, year),
        *_ledger_probes(data, api, year, export_requests=export_requests),
        *_desk_probes(data),
    ]


def _dashboard_probes(data: DataSet, api: dict[str, set[str]], year: dict[str, str]) -> list[Probe]:
    sv, lead = SV, LEAD
    found = [
        Probe("stats city 12 weeks", "verification", sv, "/api/v1/stats", {"weeks": 12}),
        Probe("stats city 52 weeks", "verification", sv, "/api/v1/stats", {"weeks": 52}),
        Probe(
            "stats city 52 weeks by team", "verification", sv, "/api/v1/stats", {"weeks": 52, "by": "team"}
        ),
        Probe("stats county 12 weeks", "verification", lead, "/api/v1/stats", {"weeks": 12}),
        Probe("stats county 52 weeks", "verification", lead, "/api/v1/stats", {"weeks": 52}),
        Probe("intake stats 12 weeks", "intake", sv, "/api/v1/stats", {"weeks": 12}),
        Probe("warnings", "verification", sv, "/api/v1/warnings"),
        Probe("notification stats", "feedback", sv, "/api/v1/notifications/stats"),
    ]
    period = _period(api, "/api/v1/measures", year)
    if "/api/v1/measures" in api:
        found += [
            Probe("measures city year", "verification", sv, "/api/v1/measures", period),
            Probe(
                "measures county year",
                "verification",
                sv,
                "/api/v1/measures",
                {**period, "county": data.county},
            ),
            Probe("measures county year (leader)", "verification", lead, "/api/v1/measures", period),
        ]
    return found


def _ledger_probes(
    data: DataSet, api: dict[str, set[str]], year: dict[str, str], *, export_requests: int
) -> list[Probe]:
    sv = SV
    page: dict[str, Any] = {"limit": 50} if "limit" in api.get("/api/v1/ledger", set()) else {}
    filters: dict[str, dict[str, Any]] = {
        "first page": {},
        "county": {"county": data.county},
        "team_code": {"team_code": data.busiest_team},
        "category": {"category": "态度粗暴"},
        "clock": {"clock": "verification"},
        "step": {"step": "escalation"},
        "marked": {"marked": "supervised"},
    }
    found = [
        Probe(f"ledger {n}", "verification", sv, "/api/v1/ledger", {**page, **f}) for n, f in filters.items()
    ]
    export: dict[str, Any] = _period(api, "/api/v1/ledger.xlsx", year)
    if not export:
        export = {"min_age_days": 0}  # without a period filter: every open matter, the largest export
    found += [
        Probe(
            "ledger export (year)",
            "verification",
            sv,
            "/api/v1/ledger.xlsx",
            export,
            target_ms=EXPORT_MS,
            requests=export_requests,
        ),
        Probe("feedback clocks (open), on the ledger page", "feedback", sv, "/api/v1/clocks"),
    ]
    return found


def _desk_probes(data: DataSet) -> list[Probe]:
    """The work lists, the searches, the public query and the pages themselves."""
    sv, lead, insp, op = SV, LEAD, INSP, OP
    found = [
        Probe(
            "task board API (busiest team)",
            "verification",
            insp,
            "/api/v1/tasks",
            {"scope": "active", "include": "clocks", "limit": 100},
        ),
        Probe("follow-ups 回访", "feedback", op, "/api/v1/follow-ups"),
        Probe("notifications 待办 (supervisor)", "feedback", sv, "/api/v1/notifications", {"open": "true"}),
        Probe("notifications 待办 (leader)", "feedback", lead, "/api/v1/notifications", {"open": "true"}),
        Probe("deputy suggestions", "feedback", "deputy", "/api/v1/deputy/suggestions"),
    ]
    if data.phones:
        found.append(
            Probe(
                "intake search by phone",
                "intake",
                op,
                "/api/v1/complaints",
                bodies=[{"phone": p} for p in data.phones],
            )
        )
    if data.codes:
        found.append(
            Probe(
                "intake search by tracking code",
                "intake",
                op,
                "/api/v1/complaints",
                bodies=[{"tracking_code": c["tracking_code"]} for c in data.codes],
            )
        )
        found.append(
            Probe(
                "public query 阳光警务查询", "feedback", "public", "/api/v1/public/lookup", bodies=data.codes
            )
        )
    pages = [
        ("intake", op, "/operator/complaint"),
        ("intake", op, "/operator/search"),
        ("verification", insp, "/tasks"),
        ("verification", sv, "/dashboard"),
        ("verification", sv, "/ledger"),
        ("verification", sv, "/approvals"),
        ("feedback", op, "/follow-ups"),
        ("feedback", sv, "/todo"),
        ("feedback", "public", "/query"),
        ("feedback", "deputy", "/deputy"),
    ]
    found += [Probe(f"page {svc}{path}", svc, role, path) for svc, role, path in pages]
    return found


async def sign_in(intake_url: str, username: str) -> httpx.AsyncClient:
    """A client holding the cookies a browser gets from the sign-in page: good on all four services."""
    client = httpx.AsyncClient(timeout=900)
    answer = await client.post(f"{intake_url}/login", data={"username": username, "password": "demo"})
    if answer.status_code != 303:
        raise RuntimeError(f"sign-in of {username} failed: {answer.status_code}")
    return client


async def measure(
    client: httpx.AsyncClient, base: str, probe: Probe, requests: int, *, budget: float
) -> dict[str, Any]:
    """``requests`` timed answers after two warm-up ones, or fewer (at least one) once ``budget``
    seconds are spent: an endpoint that takes seconds is a finding already, not worth an hour."""
    times: list[float] = []
    statuses: dict[int, int] = defaultdict(int)
    size = 0
    asked = 0
    warm_ups = 2
    started_wall = time.time()
    while len(times) < requests and (len(times) < 1 or time.time() - started_wall < budget):
        body = probe.bodies[asked % len(probe.bodies)] if probe.bodies else None
        started = time.perf_counter()
        if probe.path == "/api/v1/public/lookup":
            answer = await client.post(base + probe.path, json=body)
        else:
            answer = await client.get(base + probe.path, params={**probe.params, **(body or {})})
        elapsed = (time.perf_counter() - started) * 1000
        asked += 1
        if asked == 1 and elapsed > 1000:
            warm_ups = 1  # one is enough for an endpoint slower than a second
        if asked > warm_ups:
            times.append(elapsed)
            statuses[answer.status_code] += 1
            size = len(answer.content)
    p95 = percentile(times, 0.95)
    return {
        "endpoint": probe.name,
        "service": probe.service,
        "path": probe.path,
        "params": probe.params,
        "role": probe.role,
        "requests": len(times),
        "asked": asked,
        "p50_ms": round(percentile(times, 0.5), 1),
        "p95_ms": round(p95, 1),
        "max_ms": round(max(times), 1),
        "target_ms": probe.target_ms,
        "bytes": size,
        "statuses": dict(statuses),
        "pass": set(statuses) == {200} and p95 < probe.target_ms,
        "window": [started_wall, time.time()],
        # In the order asked: a slow tail spread out is load, a run of them is something else.
        "times_ms": [round(t, 1) for t in times],
    }


async def api_params(base: str) -> dict[str, set[str]]:
    async with httpx.AsyncClient(timeout=60) as client:
        # Where the services publish it (``shared.app``); at ``/openapi.json`` nothing answered and
        # every optional parameter (the periods, the page size) was left out of the probes unnoticed.
        answer = await client.get(f"{base}/api/openapi.json")
        answer.raise_for_status()
        spec = answer.json()
    return {
        path: {p["name"] for op in ops.values() if isinstance(op, dict) for p in op.get("parameters", [])}
        for path, ops in spec.get("paths", {}).items()
    }


async def run_probes(services: Services, data: DataSet, args: argparse.Namespace) -> list[dict[str, Any]]:
    users = {
        "supervisor": "supervisor1",
        "leader": f"leader-{data.county}",
        "inspector": f"inspector-{data.busiest_team}",
        "operator": "operator1",
        "deputy": data.deputy,
    }
    clients = {role: await sign_in(services.urls["intake"], user) for role, user in users.items()}
    clients["public"] = httpx.AsyncClient(timeout=900)
    api = await api_params(services.urls["verification"])
    results = []
    try:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        for probe in probes(data, api, export_requests=args.export_requests):
            if wanted and not any(w in probe.name for w in wanted):
                continue
            row = await measure(
                clients[probe.role],
                services.urls[probe.service],
                probe,
                probe.requests or args.requests,
                budget=args.budget,
            )
            mark = "pass" if row["pass"] else "FAIL"
            print(
                f"  {row['endpoint']:<40} p50 {row['p50_ms']:>8} p95 {row['p95_ms']:>8} ms  {mark}",
                flush=True,
            )
            results.append(row)
    finally:
        for client in clients.values():
            await client.aclose()
    return results


# --- The run -----------------------------------------------------------------------------------


async def time_ladders(data: DataSet, env: dict[str, str]) -> list[dict[str, Any]]:
    ladders = await scale_sql.time_ladders(data.db_urls, env, repeats=10)
    for row in ladders:
        row.update(
            target_ms=SCAN_MS, scan_pass=row["scan_max_ms"] < SCAN_MS, round_pass=row["round_ms"] < SCAN_MS
        )
        print(
            f"  ladder {row['ladder']}: {row['running_clocks']} running clocks, {row['due_now']} due; "
            f"scan p50 {row['scan_p50_ms']} ms, max {row['scan_max_ms']} ms; "
            f"one round of {row['round_steps']} steps {row['round_ms']} ms",
            flush=True,
        )
    return ladders


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="sv-scale-"))
    folder = await fill(workdir, args.fill) if args.fill else Path(args.data)
    data = load_data_set(folder)
    (workdir / "run").mkdir()
    load_before = list(os.getloadavg())
    trace_dir = workdir / "sql"
    trace_dir.mkdir()
    nats_process, nats_url = start_nats(workdir / "run")
    extra_env = {"SECRET_KEY": SECRET_KEY, "IDENTITY_KEY": IDENTITY_KEY, **data.env}
    if args.explain:
        extra_env[scale_sql.TRACE_DIR_ENV] = str(trace_dir)
    services = Services(
        workdir / "run",
        nats_url,
        None,
        db_urls=data.db_urls,
        extra_env=extra_env,
        serve_command=[sys.executable, str(scale_sql.SCRIPT)] if args.explain else None,
    )
    print(f"data set: {folder} ({data.backend}; {data.counts or 'counts not given'})", flush=True)
    if not args.no_migrate:
        # The ladders are timed in-process with today's models: the data set must have their schema.
        services.migrate()
    ladders = [] if args.skip_ladder else await time_ladders(data, {**services.env(), **extra_env})
    try:
        started = time.perf_counter()
        await services.start(migrate=not args.no_migrate, ready_timeout=600)
        drained = await wait_until_drained(nats_url, timeout=args.settle)
        print(
            f"services ready and {'quiet' if drained else 'still busy'} after {time.perf_counter() - started:.0f} s",
            flush=True,
        )
        anchored = await wait_for_audit_checkpoints(nats_url, data.db_urls, timeout=args.settle * 5)
        print(
            f"audit chains {'checkpointed' if anchored else 'still being checked'} after "
            f"{time.perf_counter() - started:.0f} s",
            flush=True,
        )
        results = await run_probes(services, data, args)
        plans = (
            await scale_sql.explain_slowest(results, data.db_urls, trace_dir, top=args.explain_top)
            if args.explain
            else []
        )
    finally:
        await services.stop()
        nats_process.terminate()
        nats_process.wait(timeout=10)
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "database": data.backend,
        # The folder's name, not its path: results are committed, paths are this machine's.
        "data_set": folder.name,
        "counts": data.counts,
        "requests_per_endpoint": args.requests,
        "ladders": ladders,
        "endpoints": [{k: v for k, v in row.items() if k != "window"} for row in results],
        "plans": plans,
        "machine": {"cpus": os.cpu_count(), "load_before": load_before, "load_after": list(os.getloadavg())},
        "sql_traced": bool(args.explain),
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Scale benchmark, {result['database']}, {result['when']}",
        "",
        f"Data set: {result['counts'] or result['data_set']}; {result['requests_per_endpoint']} requests per "
        "endpoint (the export fewer), one at a time, time to the last byte. Machine: "
        f"{result['machine']['cpus']} CPUs, load average {result['machine']['load_before'][0]:.1f} before, "
        f"{result['machine']['load_after'][0]:.1f} after"
        + (
            "; every SQL statement traced (--explain), which adds a little to each."
            if result["sql_traced"]
            else "."
        ),
        "",
        "| endpoint | requests | p50 ms | p95 ms | target ms | result | SQL ms / request | statements / request |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["endpoints"]:
        verdict = (
            "pass"
            if row["pass"]
            else ("FAIL" if {str(k) for k in row["statuses"]} == {"200"} else f"FAIL {row['statuses']}")
        )
        lines.append(
            f"| {row['endpoint']} | {row['requests']} | {row['p50_ms']} | {row['p95_ms']} | {row['target_ms']:g} | {verdict} | "
            f"{row.get('sql_ms_per_request', '')} | {row.get('statements_per_request', '')} |"
        )
    for row in result["ladders"]:
        lines.append(
            f"| ladder scan, {row['ladder']} ({row['running_clocks']} running, {row['due_now']} due) | 10 | "
            f"{row['scan_p50_ms']} | {row['scan_max_ms']} (max) | {row['target_ms']:g} | "
            f"{'pass' if row['scan_pass'] else 'FAIL'} | | |"
        )
        lines.append(
            f"| ladder round, {row['ladder']} ({row['round_steps']} steps due at {row['round_at']}, rolled back) | 1 | "
            f"{row['round_ms']} | {row['round_ms']} | {row['target_ms']:g} | {'pass' if row['round_pass'] else 'FAIL'} | | |"
        )
    for plan in result["plans"]:
        lines += [
            "",
            f"## {plan['endpoint']}: {plan['ms_per_request']} ms per request, {plan['runs_per_request']} runs",
            "",
            "```sql",
            plan["sql"].strip(),
            "```",
            "",
            "```",
            plan["plan"],
            "```",
        ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="var/bench-data", help="folder of the data set (its manifest.json)")
    parser.add_argument("--fill", type=int, default=0, help="instead: fill fresh services with N complaints")
    parser.add_argument("--requests", type=int, default=50, help="timed requests per endpoint")
    parser.add_argument(
        "--budget", type=float, default=60.0, help="seconds per endpoint before it stops at fewer requests"
    )
    parser.add_argument("--export-requests", type=int, default=5, help="timed requests of the Excel export")
    parser.add_argument(
        "--settle", type=float, default=120.0, help="seconds to wait for the services to go quiet"
    )
    parser.add_argument("--skip-ladder", action="store_true", help="do not time the ladders' scan")
    parser.add_argument("--no-migrate", action="store_true", help="the data set is migrated already")
    parser.add_argument(
        "--explain", action="store_true", help="print the plans of the slowest endpoints' SQL"
    )
    parser.add_argument(
        "--only", default="", help="comma-separated parts of endpoint names: measure only those endpoints"
    )
    parser.add_argument("--explain-top", type=int, default=6, help="how many endpoints --explain looks at")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"scale-{result['database']}-{stamp}"
    out.with_suffix(".json").write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    table = markdown(result)
    out.with_suffix(".md").write_text(table, encoding="utf-8")
    print(table)
    print(f"written to {out.relative_to(ROOT)}.json and .md")


if __name__ == "__main__":
    main()
