"""One cluster run: start everything, load it, kill one NATS node and one instance of each service,
let it settle, and judge what the databases, the stream and the SMS gateway hold."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path
from typing import Any

import httpx

from tests.chaos.checks import Verdict, judge, query, read_snapshot
from tests.chaos.load import Outcome
from tests.cluster import checks
from tests.cluster.answers import take_to_answer
from tests.cluster.clients import Api, file_complaints
from tests.cluster.gateway import SmsGateway, running_gateway
from tests.cluster.instances import ClusterDatabases, ServiceFleet
from tests.cluster.nodes import NatsCluster

SERVICE_ENV = {
    "NATS_REPLICAS": "3",
    # A killed instance's unacknowledged events, leased outbox rows and leased deliveries come
    # back to the survivors after these; the defaults (30 s, 30 s, 120 s) would outlast the test.
    "CONSUMER_ACK_WAIT_SECONDS": "5",
    "OUTBOX_LEASE_SECONDS": "5",
    "DELIVERY_LEASE_SECONDS": "10",
    "DELIVERY_POLL_SECONDS": "0.5",
    "DELIVERY_RETRY_BASE_SECONDS": "0.5",
    "DELIVERY_RETRY_MAX_SECONDS": "2",
    "LADDER_INTERVAL_SECONDS": "0.5",
    "PUBLIC_RATE_PER_ADDRESS": "0",
    "PUBLIC_RATE_PER_CODE": "0",
    "LOG_LEVEL": "WARNING",
}


# Bound on each wait of an answer's way (assignment, task, draft): generous, since on two shared
# cores the events queue behind a few hundred complaints and a leader election.
ANSWER_STEP_TIMEOUT = 120.0


@dataclass
class ClusterConfig:
    postgres_url: str
    complaints: int = 300
    clients: int = 8
    rate: float = 10.0  # complaints a second
    answers: int = 24  # complaints taken through to an SMS answer
    kill_at: float = 0.35  # share of complaints accepted when the kills start
    settle_timeout: float = 90.0


@dataclass
class Timeline:
    started: float = field(default_factory=time.monotonic)
    marks: dict[str, float] = field(default_factory=dict)

    def mark(self, what: str) -> None:
        self.marks[what] = round(time.monotonic() - self.started, 1)


async def wait_accepted(outcomes: list[Outcome], count: int, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while sum(1 for o in outcomes if o.status == "accepted") < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"fewer than {count} complaints accepted within {timeout} s")
        await asyncio.sleep(0.1)


async def stream_leader(servers: list[str]) -> str:
    import nats

    nc = await nats.connect(servers=servers, connect_timeout=3, max_reconnect_attempts=3)
    try:
        info = await nc.jetstream(timeout=5).stream_info(checks.STREAM)
        return info.cluster.leader if info.cluster and info.cluster.leader else ""
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), timeout=3)


async def kill_under_load(
    config: ClusterConfig,
    outcomes: list[Outcome],
    cluster: NatsCluster,
    fleet: ServiceFleet,
    timeline: Timeline,
) -> dict[str, Any]:
    """The stream's leader node first (the worst one to lose), then instance ``a`` of each service."""
    await wait_accepted(outcomes, int(config.complaints * config.kill_at), timeout=120)
    leader = await stream_leader([n.url for n in cluster.nodes]) or cluster.nodes[0].name
    cluster.kill(cluster.node(leader))
    timeline.mark(f"SIGKILL {leader} (stream leader)")
    await asyncio.sleep(2)
    killed = []
    for (_service, label), instance in fleet.instances.items():
        if label == "a":
            fleet.kill(instance)
            killed.append(instance.name)
            timeline.mark(f"SIGKILL {instance.name}")
            await asyncio.sleep(0.5)
    return {"nats_node": leader, "instances": killed}


async def answer_some(
    api: Api, accepted: asyncio.Queue[Outcome], count: int, timeline: Timeline, failures: list[str]
) -> list[dict[str, Any]]:
    """Take the first ``count`` accepted complaints through to an answer, four at a time.

    A complaint that does not get there is recorded in ``failures``; the run goes on, so that
    its figures say how far everything else got.
    """
    gate = asyncio.Semaphore(4)
    answered: list[dict[str, Any]] = []

    async def one(case_id: str) -> None:
        async with gate:
            try:
                answer = await take_to_answer(api, case_id, timeout=ANSWER_STEP_TIMEOUT)
                answered.append({**answer, "approved_at": round(time.monotonic() - timeline.started, 1)})
            except (AssertionError, RuntimeError, httpx.HTTPError) as exc:
                failures.append(f"{case_id}: {exc}")

    async with asyncio.TaskGroup() as group:
        for _ in range(count):
            outcome = await accepted.get()
            assert outcome.complaint_id is not None
            group.create_task(one(outcome.complaint_id))
    timeline.mark(f"{len(answered)} answers approved")
    return answered


async def settled(
    db_urls: dict[str, str], accepted: dict[str, str], gateway: SmsGateway
) -> tuple[bool, Verdict]:
    verdict = judge(await read_snapshot(db_urls), accepted)
    due = await checks.due_ladder_steps(db_urls["verification"])
    deliveries = await checks.sms_deliveries(db_urls["feedback"])
    pending = sum(1 for *_, status in deliveries if status == "pending")
    sent = sum(1 for *_, status in deliveries if status == "sent")
    return verdict.flowed and due == 0 and pending == 0 and len(gateway.sent) >= sent, verdict


async def peak_connections(base_url: str, prefix: str, peak: list[int]) -> None:
    """Samples the run's PostgreSQL connections every second (a figure for the report)."""
    sql = f"SELECT COUNT(*) FROM pg_stat_activity WHERE datname LIKE '{prefix}%'"  # noqa: S608 - our own prefix
    while True:
        with contextlib.suppress(Exception):
            peak[0] = max(peak[0], int((await query(base_url, sql))[0][0]))
        await asyncio.sleep(1)


@contextlib.asynccontextmanager
async def running_cluster(
    config: ClusterConfig, root: Path, gateway: SmsGateway
) -> AsyncIterator[tuple[NatsCluster, ClusterDatabases, ServiceFleet]]:
    cluster = NatsCluster(root)
    databases = ClusterDatabases(config.postgres_url)
    fleet: ServiceFleet | None = None
    try:
        await cluster.start()
        await databases.create()
        fleet = ServiceFleet(
            root=root,
            nats_url=cluster.url,
            db_urls=databases.urls,
            extra_env={**SERVICE_ENV, "SMS_GATEWAY_URL": gateway.url},
        )
        await fleet.migrate()
        await fleet.start_balancers()
        for instance in fleet.instances.values():
            fleet.start(instance)
        await fleet.wait_ready(list(fleet.instances.values()), timeout=150)
        yield cluster, databases, fleet
    finally:
        if fleet is not None:
            await fleet.stop_all()
        cluster.kill_all()
        await databases.drop()


async def load_and_kill(
    config: ClusterConfig, cluster: NatsCluster, fleet: ServiceFleet, timeline: Timeline
) -> tuple[list[Outcome], list[dict[str, Any]], dict[str, Any]]:
    """The operators, the answering team and the kills, all at once; every wait bounded."""
    outcomes = [Outcome(index=i, key=str(uuid.uuid4())) for i in range(config.complaints)]
    accepted: asyncio.Queue[Outcome] = asyncio.Queue()
    limits = httpx.Limits(max_connections=config.clients + 8, max_keepalive_connections=config.clients + 8)
    # Bearer tokens only: a session cookie kept from a sign-in would make the next POST without
    # a bearer (a sign-in) look like a cross-site form post, which the services refuse.
    no_cookies = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    async with httpx.AsyncClient(limits=limits, cookies=no_cookies) as client:
        api = Api(client, fleet.urls, give_up_after=60)
        failures: list[str] = []
        answering = asyncio.create_task(answer_some(api, accepted, config.answers, timeline, failures))
        killing = asyncio.create_task(kill_under_load(config, outcomes, cluster, fleet, timeline))
        try:
            await asyncio.wait_for(
                file_complaints(api, outcomes, clients=config.clients, rate=config.rate, accepted=accepted),
                timeout=240,
            )
            timeline.mark(f"{config.complaints} complaints filed")
            killed = await asyncio.wait_for(killing, timeout=30)
            answered = await asyncio.wait_for(answering, timeout=4 * ANSWER_STEP_TIMEOUT)
        finally:
            for task in (answering, killing):
                task.cancel()
    first_kill = min(timeline.marks.get(f"SIGKILL {name}", 1e9) for name in killed["instances"])
    return (
        outcomes,
        answered,
        {
            "killed": killed,
            "answer_failures": failures,
            "answers_approved_before_the_kills": sum(1 for a in answered if a["approved_at"] < first_kill),
            "client_errors": dict(api.errors.most_common()),
        },
    )


async def wait_settled(
    config: ClusterConfig, db_urls: dict[str, str], keys: dict[str, str], gateway: SmsGateway
) -> bool:
    deadline = time.monotonic() + config.settle_timeout
    done, _ = await settled(db_urls, keys, gateway)
    while not done and time.monotonic() < deadline:
        await asyncio.sleep(1)
        done, _ = await settled(db_urls, keys, gateway)
    return done


async def read_verdicts(
    *,
    db_urls: dict[str, str],
    keys: dict[str, str],
    cluster: NatsCluster,
    gateway: SmsGateway,
    answered: int,
) -> dict[str, Any]:
    verdict = judge(await read_snapshot(db_urls), keys)
    reading = await checks.read_stream([n.url for n in cluster.nodes if n.process is not None])
    return {
        "complaints": verdict.as_dict(),
        "publishes": checks.judge_publishes(reading, await checks.outbox_event_ids(db_urls)),
        "ladder": checks.judge_ladder(
            reading,
            await checks.ladder_rows(db_urls["verification"]),
            await checks.due_ladder_steps(db_urls["verification"]),
        ),
        "sms": checks.judge_sms(gateway, await checks.sms_deliveries(db_urls["feedback"]), answered),
        "stream": {
            "replicas": reading.replicas,
            "leader_after": reading.leader,
            "peers": reading.peers_current,
            "consumer_replicas": reading.consumers,
            "dead_letters": reading.dead_letters,
        },
    }


async def run_cluster(config: ClusterConfig, root: Path) -> dict[str, Any]:
    timeline = Timeline()
    summary: dict[str, Any] = {"config": {k: v for k, v in vars(config).items() if k != "postgres_url"}}
    async with (
        running_gateway() as gateway,
        running_cluster(config, root, gateway) as (cluster, databases, fleet),
    ):
        timeline.mark("cluster and 8 instances ready")
        peak = [0]
        sampler = asyncio.create_task(peak_connections(databases.base_url, "cluster_", peak))
        try:
            outcomes, answered, figures = await load_and_kill(config, cluster, fleet, timeline)
            summary |= figures
            keys = {o.key: o.complaint_id for o in outcomes if o.status == "accepted" and o.complaint_id}
            summary["settled"] = await wait_settled(config, databases.urls, keys, gateway)
            timeline.mark("settled" if summary["settled"] else "NOT settled")
            # Redeliveries still in flight would land now: count after they had the chance.
            await asyncio.sleep(3)
            summary |= await read_verdicts(
                db_urls=databases.urls, keys=keys, cluster=cluster, gateway=gateway, answered=len(answered)
            )
        finally:
            sampler.cancel()
        summary |= {
            "rejected": [o.last_error for o in outcomes if o.status == "rejected"][:5],
            "failed_first_start": dict(fleet.start_failures),
            "exited_by_themselves": fleet.exited(),
            "postgres_connections_peak": peak[0],
            "balancer_refused_connections": {s: b.refused for s, b in fleet.balancers.items()},
        }
    timeline.mark("stopped")
    summary["timeline"] = timeline.marks
    summary["problems"] = problems(summary, config)
    summary["passed"] = not summary["problems"]
    return summary


def problems(summary: dict[str, Any], config: ClusterConfig) -> list[str]:
    found = []
    complaints, publishes, ladder, sms = (summary[k] for k in ("complaints", "publishes", "ladder", "sms"))
    if summary["answer_failures"]:
        found.append(f"complaints that did not reach an answer: {summary['answer_failures'][:5]}")
    if not summary["settled"]:
        found.append("the cluster did not settle within the bound")
    if complaints["accepted"] != config.complaints or summary["rejected"]:
        found.append(
            f"{config.complaints - complaints['accepted']} complaints not accepted: {summary['rejected']}"
        )
    if complaints["lost"] or complaints["duplicated"] or sum(complaints["stuck_outbox_rows"].values()):
        found.append(f"lost, duplicated or stuck: {complaints}")
    if publishes["stream_duplicates"] or publishes["not_in_stream"] or publishes["in_stream_not_in_outbox"]:
        found.append(f"relay publishes not exactly once: {publishes}")
    if publishes["stream_messages"] != publishes["outbox_rows_total"]:
        found.append(
            f"stream holds {publishes['stream_messages']} messages for {publishes['outbox_rows_total']} outbox rows"
        )
    if (
        ladder["duplicate_rows"]
        or ladder["duplicate_events"]
        or ladder["rows_without_event"]
        or ladder["events_without_row"]
    ):
        found.append(f"ladder steps not exactly once: {ladder}")
    if not ladder["steps"] or ladder["still_due"]:
        found.append(f"the ladder did not climb: {ladder}")
    if sms["answers_approved"] != config.answers or sms["answer_deliveries_sent"] != config.answers:
        found.append(f"not every answer was sent: {sms}")
    if (
        sms["gateway_sms"] != sms["deliveries_sent"]
        or sms["keys_of_no_delivery"]
        or sms["key_with_several_references"]
    ):
        found.append(f"SMS not exactly once per delivery: {sms}")
    if sms["answers_with_several_deliveries"] or sms["sent_but_not_received"]:
        found.append(f"SMS deliveries inconsistent: {sms}")
    if summary["stream"]["dead_letters"]:
        found.append(f"events parked as dead letters: {summary['stream']['dead_letters'][:5]}")
    if summary["stream"]["replicas"] != 3:
        found.append(f"the stream is not R3: {summary['stream']}")
    if summary["failed_first_start"]:
        found.append(
            f"instances failed when started together (restarted once): {summary['failed_first_start']}"
        )
    if summary["exited_by_themselves"]:
        found.append(f"instances exited by themselves: {summary['exited_by_themselves']}")
    return found
