"""Benchmark: complaints through intake into assigned tasks, on the real services.

Starts its own nats-server (JetStream, sync_interval: always) and the four
services as separate processes on free ports, with SQLite databases in a
scratch folder (or PostgreSQL with --postgres-url).  Measures, in one run:

* raw JetStream: publish with acks, then pull-consume with acks, messages/s;
* throughput: N complaints posted as fast as C concurrent clients can, and the
  rate at which tasks appear in verification (end to end);
* latency at a steady rate (default 100/s): from intake's 201 to the task row,
  taken from the two services' own commit timestamps, p50/p95/p99.

Figures are printed and written to bench/results/ (JSON, plus one Markdown line
per run appended to bench/results/history.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402 - after the sys.path line above
from bench.common import (  # noqa: E402 - after the sys.path line above
    RESULTS,
    cpu_per_complaint,
    cpu_snapshot,
    database_work,
    events_per_slice,
    percentile,
    rss_kib,
    slice_counts,
    start_nats,
    wait_until_drained,
    work_per_complaint,
)


async def raw_jetstream(nats_url: str, count: int) -> dict[str, float]:
    import nats

    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await js.add_stream(name="RAWBENCH", subjects=["rawbench.>"])
    payload = b"x" * 600  # about the size of a ComplaintReceived event
    started = time.perf_counter()
    window: list[Any] = []
    for index in range(count):
        window.append(await js.publish_async("rawbench.m", payload, headers={"Nats-Msg-Id": f"m{index}"}))
        if len(window) >= 200:
            await asyncio.gather(*window)
            window.clear()
    await asyncio.gather(*window)
    publish_seconds = time.perf_counter() - started
    sub = await js.pull_subscribe("rawbench.>", durable="rawbench")
    started = time.perf_counter()
    received = 0
    while received < count:
        for msg in await sub.fetch(200, timeout=5):
            await msg.ack()
            received += 1
    consume_seconds = time.perf_counter() - started
    await js.delete_stream("RAWBENCH")
    await nc.drain()
    return {
        "messages": count,
        "publish_per_second": round(count / publish_seconds),
        "consume_per_second": round(count / consume_seconds),
    }


def complaint_body(index: int) -> dict[str, Any]:
    counties = ["411681", "411623", "411624", "411625", "411602"]
    county = counties[index % len(counties)]
    return {
        "channel": "phone",
        "complainant": {"name": "测试", "phone": f"13{(index % 7) + 3}{index:08d}"[:11], "anonymous": False},
        "accused": {"unit": f"测试派出所{index % 9}", "county_code": county},
        "category": "态度粗暴" if index % 5 else "吃拿卡要",
        "incident_at": "2026-10-30T20:30:00+08:00",
        "place": "测试地点",
        "account": "民警执法时态度粗暴，言语辱骂。" * 5,
    }


class LightClient:
    """POSTs JSON over kept-alive HTTP/1.1 connections on plain asyncio streams.

    The load generator shares the machine with what it measures; httpx spent about
    2.3 ms of CPU per request here, a tenth of the whole pipeline's, this about 0.2 ms.
    """

    def __init__(self, base_url: str, *, token: str, connections: int, answer_timeout: float) -> None:
        self.answer_timeout = answer_timeout
        host_port = base_url.split("://", 1)[1].rstrip("/")
        self.host, port = host_port.rsplit(":", 1)
        self.port = int(port)
        self.token = token
        self.idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        self.connections = connections

    async def open(self) -> None:
        for _ in range(self.connections):
            self.idle.put_nowait(await asyncio.open_connection(self.host, self.port))

    async def close(self) -> None:
        while not self.idle.empty():
            _, writer = self.idle.get_nowait()
            writer.close()

    async def post_json(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        payload = json.dumps(body, ensure_ascii=False).encode()
        # A key per complaint, as the operator's page sends it: the check is part of a create.
        request = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: Bearer {self.token}\r\n"
            f"Idempotency-Key: {uuid.uuid4()}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        ).encode() + payload
        try:
            return await self._exchange(request)
        except (asyncio.IncompleteReadError, ConnectionResetError):
            # The server closes a kept-alive connection left idle past its keep-alive time (the
            # connection was replaced); sent again with the same key, a request that did arrive
            # is answered from its stored answer instead of being recorded twice.
            return await self._exchange(request)

    async def _exchange(self, request: bytes) -> tuple[int, dict[str, Any]]:
        reader, writer = await self.idle.get()
        try:
            # A request that is never answered is a finding, not a reason to wait for ever.
            async with asyncio.timeout(self.answer_timeout):
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                answer = json.loads(await reader.readexactly(length)) if length else {}
        except BaseException:
            writer.close()
            self.idle.put_nowait(await asyncio.open_connection(self.host, self.port))
            raise
        self.idle.put_nowait((reader, writer))
        return status, answer


class Services(common.Services):
    """The shared service processes, plus the commit times this benchmark reads."""

    async def commit_times(self, service: str, query: str) -> dict[str, float]:
        """case_id -> commit time (epoch seconds) read from a service's own database."""
        url = self.db_urls[service]
        if url.startswith("sqlite"):
            path = url.split("///", 1)[1]
            with contextlib.closing(sqlite3.connect(path)) as conn:
                rows = conn.execute(query).fetchall()
            return {
                case_id: datetime.fromisoformat(str(at)).replace(tzinfo=UTC).timestamp()
                for case_id, at in rows
            }
        import asyncpg

        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            rows = await conn.fetch(query)
        finally:
            await conn.close()
        return {r[0]: r[1].timestamp() for r in rows}


async def post_complaints(
    client: LightClient, count: int, *, rate: float | None, offset: int
) -> tuple[list[str], float]:
    """Posts ``count`` complaints, paced at ``rate`` per second or as fast as the connections go."""
    ids: list[str] = []
    started = time.perf_counter()
    # One shared iterator: each worker takes the next index. A burst runs one worker per
    # connection rather than a task per complaint: 100,000 tasks took long enough to start on a
    # loaded machine that the server dropped the idle connections meanwhile.  Paced, each
    # complaint keeps its own task, so a slow answer does not delay the ones after it.
    indexes = iter(range(count))

    async def worker() -> None:
        for index in indexes:
            if rate:
                delay = started + index / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            status, answer = await client.post_json("/api/v1/complaints", complaint_body(offset + index))
            if status != 201:
                raise RuntimeError(f"complaint not accepted: {status} {answer}")
            ids.append(answer["id"])

    workers = count if rate else min(count, client.connections)
    await asyncio.gather(*(worker() for _ in range(workers)))
    return ids, time.perf_counter() - started


async def wait_for_tasks(services: Services, ids: list[str], timeout: float) -> dict[str, float]:
    wanted = set(ids)
    deadline = time.monotonic() + timeout
    while True:
        tasks = await services.commit_times(
            "verification", "SELECT case_id, created_at FROM verification_task"
        )
        if wanted <= tasks.keys() or time.monotonic() > deadline:
            return {k: v for k, v in tasks.items() if k in wanted}
        await asyncio.sleep(0.25)


# Where the time from 201 to task goes, hop by hop, from the rows each service stamps itself:
# intake's relay marks the event published once JetStream acknowledged it, routing's inbox row
# is written in the transaction that handled it, and so on.  (stage name, service, query)
STAGE_STAMPS = (
    (
        "intake relay acked",
        "intake",
        "SELECT case_id, published_at FROM outbox "
        "WHERE event_type = 'ComplaintReceived' AND published_at IS NOT NULL",
    ),
    (
        "routing handled",
        "routing",
        "SELECT case_id, processed_at FROM inbox WHERE event_type = 'ComplaintReceived'",
    ),
    (
        "routing relay acked",
        "routing",
        "SELECT case_id, published_at FROM outbox "
        "WHERE event_type = 'CaseAssigned' AND published_at IS NOT NULL",
    ),
)


async def stage_latencies(
    services: Services, ids: list[str], created: dict[str, float], tasks: dict[str, float]
) -> dict[str, dict[str, float]]:
    """p50/p99 in ms of each hop from intake's commit to the task row, for the complaints ``ids``."""
    stamps = [created]
    for _, service, query in STAGE_STAMPS:
        stamps.append(await services.commit_times(service, query))
    stamps.append(tasks)
    names = ["201 to " + STAGE_STAMPS[0][0]]
    names += [f"{before[0]} to {after[0]}" for before, after in itertools.pairwise(STAGE_STAMPS)]
    names.append(f"{STAGE_STAMPS[-1][0]} to task")
    complete = [i for i in ids if all(i in stamp for stamp in stamps)]
    stages: dict[str, dict[str, float]] = {}
    for index, name in enumerate(names):
        gaps = [(stamps[index + 1][i] - stamps[index][i]) * 1000 for i in complete]
        if gaps:
            stages[name] = {
                "p50_ms": round(percentile(gaps, 0.5), 1),
                "p99_ms": round(percentile(gaps, 0.99), 1),
            }
    return stages


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="sv-bench-"))
    nats_process, nats_url = start_nats(workdir)
    services = Services(workdir, nats_url, args.postgres_url)
    processes = {"nats-server": nats_process.pid}
    try:
        raw = await raw_jetstream(nats_url, args.raw_messages)
        print(
            f"raw JetStream: publish {raw['publish_per_second']}/s, consume+ack {raw['consume_per_second']}/s",
            flush=True,
        )
        await services.start()
        async with httpx.AsyncClient(base_url=services.urls["intake"], timeout=60) as signer:
            token_response = await signer.post(
                "/api/v1/auth/token", data={"username": "operator1", "password": "demo"}
            )
        token = token_response.json()["access_token"]
        client = LightClient(
            services.urls["intake"], token=token, connections=args.concurrency, answer_timeout=args.timeout
        )
        paced_client = LightClient(
            services.urls["intake"],
            token=token,
            connections=max(args.concurrency, 16),
            answer_timeout=args.timeout,
        )
        await client.open()
        await paced_client.open()
        try:
            await post_complaints(client, 50, rate=None, offset=10_000_000)  # warm-up

            processes.update(services.pids)
            rss_before = {name: rss_kib(pid) for name, pid in processes.items()}
            cpu_before = cpu_snapshot(processes, postgres=bool(args.postgres_url))
            slices_before = await slice_counts(services.urls)
            work_before = await database_work(services.urls)
            rows_before = await services.row_writes()
            ids, post_seconds = await post_complaints(client, args.count, rate=None, offset=0)
            burst_start = time.time() - post_seconds
            tasks = await wait_for_tasks(services, ids, timeout=args.timeout)
            cpu = cpu_per_complaint(
                cpu_before, cpu_snapshot(processes, postgres=bool(args.postgres_url)), args.count
            )
            slices = events_per_slice(slices_before, await slice_counts(services.urls))
            # Read once the tasks are in, so what a service holds after the burst is counted.
            rss_after = {name: rss_kib(pid) for name, pid in processes.items()}
            created = await services.commit_times("intake", "SELECT id, created_at FROM intake_complaint")
            end_to_end_seconds = max(tasks.values()) - min(created[i] for i in ids) if tasks else float("nan")
            throughput = {
                "complaints": args.count,
                "concurrency": args.concurrency,
                "accepted_per_second": round(args.count / post_seconds, 1),
                "tasks_created": len(tasks),
                "end_to_end_per_second": round(len(tasks) / end_to_end_seconds, 1) if tasks else 0,
                "started": burst_start,
                "cpu_ms_per_complaint": cpu,
                "events_per_slice": slices,
                "rss_mib": {
                    name: {
                        "before": round(rss_before[name] / 1024, 1),
                        "after": round(rss_after[name] / 1024, 1),
                    }
                    for name in rss_before
                },
            }
            print(
                f"throughput: {throughput['accepted_per_second']}/s accepted (201), "
                f"{throughput['end_to_end_per_second']}/s through to tasks ({len(tasks)}/{args.count})",
                flush=True,
            )
            print(
                "CPU per complaint (ms): " + ", ".join(f"{name} {ms}" for name, ms in cpu.items()),
                flush=True,
            )
            print(
                "events per slice: " + ", ".join(f"{name} {size}" for name, size in slices.items()),
                flush=True,
            )
            print(
                "RSS before -> after the burst (MiB): "
                + ", ".join(
                    f"{name} {figures['before']} -> {figures['after']}"
                    for name, figures in throughput["rss_mib"].items()
                ),
                flush=True,
            )

            # The burst leaves work behind it (intake and feedback follow every assignment); the
            # latency phase starts from a quiet system, or it measures the burst's tail instead.
            await wait_until_drained(nats_url, timeout=args.timeout)
            # Read once drained: the statements of every consumer's share of the burst, not a part.
            throughput["database_work_per_complaint"] = work = work_per_complaint(
                work_before, await database_work(services.urls), args.count
            )
            print(
                "database statements (commits) per complaint: "
                + ", ".join(f"{name} {w['statements']} ({w['commits']})" for name, w in work.items()),
                flush=True,
            )
            rows_after = await services.row_writes()
            if rows_before is not None and rows_after is not None:
                written = {
                    table: round((count - rows_before.get(table, 0)) / args.count, 2)
                    for table, count in rows_after.items()
                }
                busiest = dict(sorted(written.items(), key=lambda item: -item[1])[:12])
                throughput["rows_written_per_complaint"] = written
                print(
                    f"rows written per complaint: {round(sum(written.values()), 1)} in all; "
                    + ", ".join(f"{table} {n}" for table, n in busiest.items()),
                    flush=True,
                )
            paced_count = int(args.rate * args.paced_seconds)
            paced_ids, _ = await post_complaints(paced_client, paced_count, rate=args.rate, offset=1_000_000)
            paced_tasks = await wait_for_tasks(services, paced_ids, timeout=args.timeout)
            created = await services.commit_times("intake", "SELECT id, created_at FROM intake_complaint")
            latencies = [(paced_tasks[i] - created[i]) * 1000 for i in paced_ids if i in paced_tasks]
            latency = {
                "rate_per_second": args.rate,
                "complaints": paced_count,
                "tasks_created": len(paced_tasks),
                "p50_ms": round(percentile(latencies, 0.50), 1) if latencies else None,
                "p95_ms": round(percentile(latencies, 0.95), 1) if latencies else None,
                "p99_ms": round(percentile(latencies, 0.99), 1) if latencies else None,
                "mean_ms": round(statistics.mean(latencies), 1) if latencies else None,
                "stages": await stage_latencies(services, paced_ids, created, paced_tasks),
            }
            print(
                f"latency at {args.rate:g}/s, 201 to task: p50 {latency['p50_ms']} ms, "
                f"p95 {latency['p95_ms']} ms, p99 {latency['p99_ms']} ms",
                flush=True,
            )
            print(
                "  by hop, p50 / p99 ms: "
                + "; ".join(f"{name} {f['p50_ms']} / {f['p99_ms']}" for name, f in latency["stages"].items()),
                flush=True,
            )
            latency["postgres_deadlocks"] = deadlocks = await services.postgres_deadlocks()
            if deadlocks is not None:
                print(f"PostgreSQL deadlocks in the run: {deadlocks}", flush=True)
        finally:
            await client.close()
            await paced_client.close()
    finally:
        await services.stop()
        nats_process.terminate()
        nats_process.wait(timeout=10)
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "database": "postgresql" if args.postgres_url else "sqlite",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "raw_jetstream": raw,
        "throughput": throughput,
        "latency": latency,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=1000, help="complaints in the throughput phase")
    parser.add_argument(
        "--concurrency", type=int, default=32, help="concurrent clients in the throughput phase"
    )
    parser.add_argument(
        "--rate", type=float, default=100.0, help="complaints per second in the latency phase"
    )
    parser.add_argument("--paced-seconds", type=float, default=10.0, help="length of the latency phase")
    parser.add_argument(
        "--raw-messages", type=int, default=20_000, help="messages for the raw JetStream figure"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="how long to wait for tasks")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL"),
        help="run on PostgreSQL (a server URL whose user may CREATE DATABASE); default SQLite",
    )
    args = parser.parse_args()
    result = asyncio.run(run(args))
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"pipeline-{result['database']}-{stamp}.json"
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    line = (
        f"| {result['when']} | {result['database']} | {result['machine']['cpus']} | "
        f"{result['raw_jetstream']['publish_per_second']} / {result['raw_jetstream']['consume_per_second']} | "
        f"{result['throughput']['accepted_per_second']} | {result['throughput']['end_to_end_per_second']} | "
        f"{result['latency']['p50_ms']} / {result['latency']['p99_ms']} at {result['latency']['rate_per_second']:g}/s |\n"
    )
    history = RESULTS / "history.md"
    if not history.exists():
        history.write_text(
            "| when | database | cpus | raw JetStream pub/consume per s | 201 per s | end to end per s | p50 / p99 ms, 201 to task |\n"
            "|---|---|---|---|---|---|---|\n",
            encoding="utf-8",
        )
    with history.open("a", encoding="utf-8") as handle:
        handle.write(line)
    print(f"written to {out.relative_to(ROOT)} and {history.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
