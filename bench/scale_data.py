"""Scale data: the four service databases filled with five years of a bureau's work.

``make bench-data`` (or ``.venv/bin/python bench/scale_data.py --backend sqlite|postgresql
--complaints N --suggestions M --years 5 --out DIR [--postgres-url URL] [--seed 1]``) makes
1,000,000 complaints and 20,000 deputies' suggestions and CPPCC proposals by default.

The direct path.  Going through the APIs would take days for a million matters, so the
generator writes the rows the services would have written, straight into their tables:

* the schema is each service's own alembic history (``shared.migrations.upgrade``), and the
  reference data and accounts are the services' own seeders (routing's organisation and
  rules, intake's demo accounts; deputies are added the same way, sharing the demo password);
* each matter is planned first (``bench/scaledata/plan.py``: county by census population,
  categories, channel, findings, accountability, ratings, repeats, how far it got), and
  routing's own ``decide`` and the deadline book compute its assignment and clocks;
* each service module (``bench/scaledata/<service>.py``) turns the plans into rows of that
  service's SQLModel tables, ten thousand matters per transaction: SQLAlchemy Core's
  executemany on PostgreSQL; on SQLite the driver's executemany, each value converted as the
  model's column type would; the audit chains are numbered and hashed with
  ``shared.audit.entry_digest`` exactly as a flush does, so ``verify_chain`` holds;
* ``--jobs`` worker processes (3 by default) each plan every matter (the plan is
  deterministic from ``--seed``) and write some of the databases, side by side;
* identities are sealed with intake's ``IdentityVault`` under the run's IDENTITY_KEY, once per
  distinct caller (a pool of phones, drawn with a skew so some callers have many matters);
  tracking codes are unique by construction and each query secret is derived from the seed,
  so any code's secret can be recomputed (samples are in the manifest);
* the ladders are where they would be today: every step whose time has passed was taken
  (a step row, the audit entry, feedback's 待办 item, handled when the matter concluded), and
  each running clock points at its next step, so a started scheduler finds nothing overdue.
  ``--open-share`` (0.05) of the complaints are open, spread over the rungs (about one per cent
  of all matters at each); at 5 % that is about 60 running clocks per thousand matters.

Also written (``bench/scaledata/records.py``): evidence records (references to where the
originals are kept, no files), deadline extensions of about 5 % of complaint rounds (requested
before the deadline; four in five approved, which moves the due date, the rest refused; a few
open ones pending), and the rectification items (整改) of three in five substantiated findings,
each with its clock until checked.

Not written: outbox and inbox rows (the events are all processed), evidence files, the
complainant's extension notice, early-warning crossings (the hits are written), co-handling
views, reply letters (.docx), staff SMS to supervisors and leaders, identity-access log entries,
reclassifications and returns.

The services must run with the keys in the manifest (``SECRET_KEY``, ``IDENTITY_KEY``) and
``DEMO_MODE=true`` is not needed (the accounts are already there; password ``demo``).

``<out>/manifest.json`` keys: ``backend``; ``databases`` (service -> URL); ``keys``
(``SECRET_KEY``, ``IDENTITY_KEY``); ``counts`` (planned matters: ``complaints``, ``suggestions``,
``open``, ``linked_repeats``, ``repeats``); ``repeat_share`` (repeats, linked or not, over
complaints: about 7 %) and ``rows`` (service -> table -> rows);
``busiest_team`` (team code with the most open tasks) and ``open_tasks_by_team``;
``sample_phones`` (callers with several matters, most first); ``sample_queries`` (list of
``{tracking_code, query_secret, status}``); ``deputy`` (``{account, name, suggestions}``,
password ``demo``); ``accounts`` (usernames of operator, supervisor, a leader, an inspector of
the busiest team); ``generated_at``; ``seconds`` (``plan`` and each service: seconds its worker
spent planning, and building and writing that database's rows; ``total``: wall clock); ``now``
(the moment the data set was made for: its clocks are as they stood then).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.scaledata import database  # noqa: E402 - after the sys.path line above
from bench.scaledata import feedback as feedback_rows  # noqa: E402
from bench.scaledata import intake as intake_rows  # noqa: E402
from bench.scaledata import routing as routing_rows  # noqa: E402
from bench.scaledata import verification as verification_rows  # noqa: E402
from bench.scaledata.common import (  # noqa: E402
    RULES_FILE,
    SERVICES,
    AuditChain,
    NullChain,
    Rows,
    Timer,
    World,
    load_rules,
    write_rows,
)
from bench.scaledata.plan import Matter, Planner, open_received_at  # noqa: E402

SECRET_KEY = "scale-signing-key-5b1e0c7d9a3f46e2b8c41d7f0a9e3c6b"
IDENTITY_KEY = "Zx3kq0mP8vR2tL6yW9bN4cH7jF1dS5gA0eU3iO8rT2Y="
BATCH = 10_000
# Distinct callers: twice the complaints (at least 50,000), drawn with a skew (plan.py).
PHONE_POOL = 50_000


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--complaints", type=int, default=1_000_000)
    parser.add_argument("--suggestions", type=int, default=20_000)
    parser.add_argument("--years", type=float, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench-data")
    parser.add_argument("--postgres-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    parser.add_argument(
        "--pg-prefix",
        default=database.PG_PREFIX,
        help="PostgreSQL: the four databases are <prefix><service>, dropped and made again",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--open-share", type=float, default=0.05, help="share of complaints still open")
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--jobs", type=int, default=3, help="processes writing the databases side by side")
    # For the worker processes the command starts: the same plan, written to some databases only.
    parser.add_argument("--only", default="", help=argparse.SUPPRESS)
    parser.add_argument("--now", default="", help=argparse.SUPPRESS)
    parser.add_argument("--part", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


# How the services are shared out among the worker processes, by number of processes.
JOBS: dict[int, list[tuple[str, ...]]] = {
    1: [SERVICES],
    2: [("intake", "routing", "verification"), ("feedback",)],
    3: [("intake", "routing"), ("verification",), ("feedback",)],
    4: [(name,) for name in SERVICES],
}


def deputies() -> list[tuple[str, str, str]]:
    """The deputies and members: deputy1 (the demo's) first, then a few hundred more."""
    rng = random.Random(7)
    delegations = [
        "川汇区代表团",
        "淮阳区代表团",
        "项城市代表团",
        "太康县代表团",
        "郸城县代表团",
        "政协社会福利界",
        "政协法律界",
    ]
    found = [("deputy1", "马刚", "川汇区代表团")]
    for n in range(2, 301):
        name = rng.choice("王李张刘陈杨黄赵吴周") + rng.choice("建国志强丽华秀英红梅伟明")
        found.append((f"deputy{n}", name, rng.choice(delegations)))
    return found


def schedule(args: argparse.Namespace, now: datetime) -> list[tuple[int, int]]:
    """(complaints, suggestions) per batch."""
    total = args.complaints + args.suggestions
    batches = max(1, -(-total // args.batch))
    plan = []
    for index in range(batches):
        c = args.complaints * (index + 1) // batches - args.complaints * index // batches
        s = args.suggestions * (index + 1) // batches - args.suggestions * index // batches
        plan.append((c, s))
    return plan


def plan_batch(
    planner: Planner,
    args: argparse.Namespace,
    index: int,
    sizes: tuple[int, int],
    now: datetime,
    batches: int,
) -> list[Matter]:
    rng = planner.rng
    start = now - timedelta(days=365.25 * args.years)
    # Closed matters fill the years up to three weeks ago; a batch is a slice of that, in order.
    span = (now - timedelta(days=21) - start) / batches
    complaints, suggestions = sizes
    times = sorted(start + span * (index + rng.random()) for _ in range(complaints + suggestions))
    kinds = ["complaint"] * complaints + ["suggestion"] * suggestions
    rng.shuffle(kinds)
    matters = []
    for received_at, kind in zip(times, kinds, strict=True):
        if kind == "suggestion":
            recent = rng.random() < 0.06
            if recent:
                received_at = now - timedelta(days=rng.uniform(1, 85))
            matter = planner.suggestion(received_at)
            planner.live(matter, open_=recent and rng.random() < 0.8, now=now)
        else:
            open_ = rng.random() < args.open_share
            if open_:
                received_at = open_received_at(rng, now)
            matter = planner.complaint(received_at, open_=open_)
            planner.live(matter, open_=open_, now=now)
        matters.append(matter)
    return matters


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Prepare the databases, have the workers fill them, then write the manifest."""
    started = time.perf_counter()
    now = datetime.now(UTC).replace(microsecond=0)
    world = World(now=now, signing_key=SECRET_KEY, identity_key=IDENTITY_KEY, seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    urls = await database.prepare(args.backend, args.out, args.postgres_url, args.pg_prefix)
    engines = {name: database.engine(url) for name, url in urls.items()}
    await database.seed_reference(engines, world=world, deputies=deputies())
    print(f"schema and accounts ready in {time.perf_counter() - started:.1f}s", flush=True)
    parts = []
    workers = []
    for index, group in enumerate(JOBS[max(1, min(args.jobs, 4))]):
        part = args.out / f"part-{index}.json"
        part.unlink(missing_ok=True)
        parts.append(part)
        command = [
            sys.executable,
            __file__,
            *args.argv,
            "--only",
            ",".join(group),
            "--now",
            now.isoformat(),
            "--part",
            str(part),
        ]
        workers.append(await asyncio.create_subprocess_exec(*command))
    codes = [await worker.wait() for worker in workers]
    if any(codes):
        raise SystemExit(f"a worker failed: exit codes {codes}")
    results = [json.loads(part.read_text(encoding="utf-8")) for part in parts]
    await database.finish(engines)
    rows = await database.row_counts(engines)
    for engine in engines.values():
        await engine.dispose()
    manifest: dict[str, Any] = next(r["manifest"] for r in results if r.get("manifest"))
    manifest["databases"], manifest["rows"], manifest["backend"] = urls, rows, args.backend
    seconds: dict[str, float] = {}
    for result in results:
        for name, value in result["seconds"].items():
            if name in result["wrote"] or name == "plan":
                seconds[name] = max(seconds.get(name, 0.0), value)
    seconds["total"] = round(time.perf_counter() - started, 1)
    manifest["seconds"] = seconds
    manifest["generated_at"] = datetime.now(UTC).isoformat()
    (args.out / "manifest.json").write_text(
        json.dumps(manifest, ensure_ascii=False, indent=2), encoding="utf-8"
    )
    for part in parts:
        part.unlink(missing_ok=True)
    return manifest


async def work(args: argparse.Namespace) -> None:
    """A worker: plans every matter, writes the rows of the databases named by ``--only``."""
    started = time.perf_counter()
    only = set(args.only.split(","))
    now = datetime.fromisoformat(args.now)
    world = World(now=now, signing_key=SECRET_KEY, identity_key=IDENTITY_KEY, seed=args.seed)
    world.rules = load_rules(str(ROOT / RULES_FILE))
    urls = {
        name: database.url_of(args.backend, args.out, args.postgres_url, name, args.pg_prefix)
        for name in only
    }
    timer = Timer()
    engines = {name: database.engine(url) for name, url in urls.items()}
    pool = deputies()
    planner = Planner(world, phones=max(PHONE_POOL, 2 * args.complaints), deputies=pool)
    chains = {name: AuditChain() if name in only else NullChain() for name in SERVICES}
    next_ids: dict[str, dict[str, int]] = {name: {} for name in SERVICES}
    identities = intake_rows.Identities(world)
    tally = Tally()
    batches = schedule(args, now)
    for index, sizes in enumerate(batches):
        t0 = time.perf_counter()
        matters = plan_batch(planner, args, index, sizes, now, len(batches))
        timer.add("plan", t0)
        tally.count(matters, world)
        await write_batch(
            matters,
            world=world,
            engines=engines,
            chains=chains,
            next_ids=next_ids,
            identities=identities,
            timer=timer,
        )
        for matter in matters:
            # Written: what later matters may repeat needs no more than the matter itself.
            matter.repeat_of = None
            matter.linked_calls = []
        done = sum(a + b for a, b in batches[: index + 1])
        elapsed = time.perf_counter() - started
        print(f"[{args.only}] batch {index + 1}/{len(batches)}: {done} matters, {elapsed:.0f}s", flush=True)
    for engine in engines.values():
        await engine.dispose()
    result = {
        "wrote": sorted(only),
        "seconds": {k: round(v, 1) for k, v in timer.seconds.items()},
        "manifest": tally.manifest(args=args, world=world, pool=pool) if "intake" in only else None,
    }
    assert args.part is not None
    args.part.write_text(json.dumps(result, ensure_ascii=False), encoding="utf-8")


async def write_batch(
    matters: list[Matter],
    *,
    world: World,
    engines: dict[str, Any],
    chains: dict[str, AuditChain],
    next_ids: dict[str, dict[str, int]],
    identities: intake_rows.Identities,
    timer: Timer,
) -> None:
    """The batch's rows for the databases in ``engines``; routing's and verification's are also
    built (not written) when a later service needs the ids and steps they give."""
    if "intake" in engines:
        t0 = time.perf_counter()
        rows = Rows(next_ids["intake"])
        audit = intake_rows.build(
            matters, world=world, rows=rows, chain=chains["intake"], identities=identities
        )
        timer.add("intake", t0, await write_rows(engines["intake"], rows, audit=audit))
    if not {"routing", "verification", "feedback"} & set(engines):
        return
    t0 = time.perf_counter()
    rows = Rows(next_ids["routing"])
    audit = routing_rows.build(matters, rows=rows, chain=chains["routing"])
    if "routing" in engines:
        timer.add("routing", t0, await write_rows(engines["routing"], rows, audit=audit))
    if not {"verification", "feedback"} & set(engines):
        return
    t0 = time.perf_counter()
    rows = Rows(next_ids["verification"])
    builder = verification_rows.build(matters, world=world, rows=rows, chain=chains["verification"])
    if "verification" in engines:
        timer.add("verification", t0, await write_rows(engines["verification"], rows, audit=builder.audit))
    if "feedback" in engines:
        t0 = time.perf_counter()
        rows = Rows(next_ids["feedback"])
        audit = feedback_rows.build(
            matters, builder.steps, world=world, rows=rows, chain=chains["feedback"], identities=identities
        )
        timer.add("feedback", t0, await write_rows(engines["feedback"], rows, audit=audit))


class Tally:
    """What the manifest reports: counts, the busiest team, callers with many matters, samples."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.open_by_team: Counter[str] = Counter()
        self.phones: Counter[int] = Counter()
        self.samples: list[dict[str, str]] = []
        self.deputy_suggestions: Counter[str] = Counter()

    def count(self, matters: list[Matter], world: World) -> None:
        for matter in matters:
            self.counts[matter.kind + "s"] += 1
            if matter.linked_repeat:
                self.counts["linked_repeats"] += 1
            elif matter.repeat_of is not None:
                self.counts["repeats"] += 1
            if matter.rounds and matter.is_open:
                self.counts["open"] += 1
                self.open_by_team[matter.last.decision.team_code] += 1
            if matter.phone >= 0:
                self.phones[matter.phone] += 1
            if matter.kind == "suggestion":
                self.deputy_suggestions[matter.deputy[0]] += 1
            if len(self.samples) < 200 and (matter.rounds or matter.linked_repeat) and random.random() < 0.01:
                self.samples.append(
                    {
                        "tracking_code": matter.tracking_code,
                        "query_secret": world.query_secret(matter.tracking_code),
                        "status": feedback_rows.case_status(matter),
                    }
                )

    def manifest(
        self, *, args: argparse.Namespace, world: World, pool: list[tuple[str, str, str]]
    ) -> dict[str, Any]:
        busiest = (
            self.open_by_team.most_common(1)[0][0] if self.open_by_team else world.organisation.city_team_code
        )
        names = {account: name for account, name, _ in pool}
        return {
            "keys": {"SECRET_KEY": SECRET_KEY, "IDENTITY_KEY": IDENTITY_KEY},
            "counts": dict(self.counts),
            # Repeats and linked repeats over complaints: about 7 % (plan.REPEAT_SHARE).
            "repeat_share": round(
                (self.counts["repeats"] + self.counts["linked_repeats"]) / max(1, self.counts["complaints"]),
                4,
            ),
            "busiest_team": busiest,
            "open_tasks_by_team": dict(self.open_by_team.most_common()),
            "sample_phones": [
                {"phone": intake_rows.phone_number(i), "matters": n} for i, n in self.phones.most_common(20)
            ],
            "sample_queries": self.samples,
            "deputy": {
                "account": "deputy1",
                "name": names["deputy1"],
                "suggestions": self.deputy_suggestions["deputy1"],
            },
            "accounts": {
                "operator": "operator1",
                "supervisor": "supervisor1",
                "leader": f"leader-{busiest if busiest != world.organisation.city_team_code else '411602'}",
                "inspector": f"inspector-{busiest}",
                "password": "demo",
            },
            "now": world.now.isoformat(),
        }


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.only:
        asyncio.run(work(args))
        return
    manifest = asyncio.run(run(args))
    seconds = manifest["seconds"]
    print(
        f"{args.backend}: {manifest['counts'].get('complaints', 0)} complaints, "
        f"{manifest['counts'].get('suggestions', 0)} suggestions, {manifest['counts'].get('open', 0)} open; "
        + ", ".join(f"{k} {v}s" for k, v in seconds.items())
    )
    counts = manifest["counts"]
    repeats = counts.get("repeats", 0) + counts.get("linked_repeats", 0)
    print(
        f"repeats: {repeats} ({manifest['repeat_share']:.1%} of complaints), "
        f"{counts.get('linked_repeats', 0)} of them linked to an open complaint"
    )
    print(f"manifest: {args.out / 'manifest.json'}")


if __name__ == "__main__":
    main()
