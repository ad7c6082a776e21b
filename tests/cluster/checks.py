"""The exactly-once checks of a cluster run, beyond the chaos run's lost/duplicated complaints:
the relay's publishes (stream against outboxes), the ladder and the SMS the gateway received."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tests.chaos.checks import query
from tests.cluster.gateway import SmsGateway

STREAM = "SUPERVISION"
LADDER_SUBJECT = "sv.LadderStepReached.v1"


@dataclass
class StreamReading:
    messages: int = 0
    msg_ids: Counter[str] = field(default_factory=Counter)
    ladder_steps: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (task, clock, step)
    replicas: int = 0
    leader: str = ""
    peers_current: dict[str, bool] = field(default_factory=dict)
    consumers: dict[str, int] = field(default_factory=dict)  # durable -> replicas it runs on
    dead_letters: list[str] = field(default_factory=list)  # "consumer: subject: reason"


async def read_stream(servers: list[str]) -> StreamReading:
    """Every message of the stream through an ephemeral pull consumer, and the stream's placement."""
    import nats
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    nc = await nats.connect(servers=servers, connect_timeout=3, max_reconnect_attempts=3)
    reading = StreamReading()
    try:
        js = nc.jetstream(timeout=10)
        info = await js.stream_info(STREAM)
        reading.replicas = info.config.num_replicas or 1
        if info.cluster is not None:
            reading.leader = info.cluster.leader or ""
            reading.peers_current = {str(p.name): bool(p.current) for p in info.cluster.replicas or []}
        for consumer in await js.consumers_info(STREAM):
            cluster = consumer.cluster
            reading.consumers[str(consumer.name)] = 1 + len(cluster.replicas or []) if cluster else 1
        subscription = await js.pull_subscribe(
            "sv.>",
            durable=None,
            stream=STREAM,
            config=ConsumerConfig(
                ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, num_replicas=1, mem_storage=True
            ),
        )
        total = info.state.messages
        while reading.messages < total:
            try:
                batch = await subscription.fetch(500, timeout=5)
            except NatsTimeout:
                break
            for msg in batch:
                reading.messages += 1
                reading.msg_ids[str((msg.headers or {}).get("Nats-Msg-Id", ""))] += 1
                if msg.subject == LADDER_SUBJECT:
                    data = json.loads(msg.data)
                    reading.ladder_steps[(str(data["task_id"]), str(data["clock"]), str(data["step"]))] += 1
        with contextlib.suppress(Exception):
            await subscription.unsubscribe()
        reading.dead_letters = await read_dead_letters(js)
        return reading
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), timeout=3)


async def read_dead_letters(js: Any) -> list[str]:
    """Every parked event: in this run nothing is poison, so each one is an event lost to its service."""
    from nats.js.errors import NotFoundError

    try:
        state = (await js.stream_info(STREAM + "_DLQ")).state
    except NotFoundError:
        return []
    found: list[str] = []
    if not state.messages:
        return found
    for seq in range(max(state.first_seq, 1), state.last_seq + 1):
        with contextlib.suppress(NotFoundError):
            headers = (await js.get_msg(STREAM + "_DLQ", seq)).headers or {}
            found.append(
                f"{headers.get('Sv-Dead-Letter-Consumer')}: {headers.get('Sv-Original-Subject')}: "
                f"{str(headers.get('Sv-Dead-Letter-Reason', ''))[:200]}"
            )
    return found


async def outbox_event_ids(db_urls: dict[str, str]) -> dict[str, list[str]]:
    return {
        name: [str(r[0]) for r in await query(url, "SELECT event_id FROM outbox")]
        for name, url in db_urls.items()
    }


async def ladder_rows(verification_url: str) -> list[tuple[str, str, str]]:
    """(task, clock name, step) of every ladder step row."""
    rows = await query(
        verification_url,
        "SELECT s.task_id, c.name, s.step FROM verification_ladder_step s "
        "JOIN verification_clock c ON c.id = s.clock_id",
    )
    return [(str(t), str(c), str(s)) for t, c, s in rows]


async def due_ladder_steps(verification_url: str) -> int:
    """Running clocks whose next step is due: the schedulers still have work."""
    rows = await query(
        verification_url,
        "SELECT COUNT(*) FROM verification_clock WHERE status = 'running' AND next_step_at <= now()",
    )
    return int(rows[0][0])


async def sms_deliveries(feedback_url: str) -> list[tuple[str, str, str, str]]:
    """(delivery id, answer id, idempotency key, status) of every automatic delivery by SMS.

    Answers, acceptance notices (告知受理) and the staff's ladder notices alike: each is one SMS.
    """
    rows = await query(
        feedback_url,
        "SELECT id, COALESCE(answer_id, ''), idempotency_key, status FROM feedback_delivery "
        "WHERE mode = 'auto' AND COALESCE(channel, 'sms') = 'sms'",
    )
    return [(str(a), str(b), str(c), str(d)) for a, b, c, d in rows]


def judge_publishes(reading: StreamReading, outboxes: dict[str, list[str]]) -> dict[str, Any]:
    recorded = [event_id for ids in outboxes.values() for event_id in ids]
    in_stream = set(reading.msg_ids)
    return {
        "outbox_rows": {name: len(ids) for name, ids in outboxes.items()},
        "outbox_rows_total": len(recorded),
        "stream_messages": reading.messages,
        "stream_duplicates": sum(n - 1 for n in reading.msg_ids.values() if n > 1),
        "outbox_duplicates": len(recorded) - len(set(recorded)),
        "not_in_stream": len(set(recorded) - in_stream),
        "in_stream_not_in_outbox": len(in_stream - set(recorded)),
    }


def judge_ladder(reading: StreamReading, rows: list[tuple[str, str, str]], due: int) -> dict[str, Any]:
    counted = Counter(rows)
    return {
        "steps": len(rows),
        "by_step": dict(Counter(step for _, _, step in rows)),
        "duplicate_rows": sum(n - 1 for n in counted.values() if n > 1),
        "events": sum(reading.ladder_steps.values()),
        "duplicate_events": sum(n - 1 for n in reading.ladder_steps.values() if n > 1),
        "rows_without_event": len(set(counted) - set(reading.ladder_steps)),
        "events_without_row": len(set(reading.ladder_steps) - set(counted)),
        "still_due": due,
    }


def judge_sms(
    gateway: SmsGateway, deliveries: list[tuple[str, str, str, str]], approved: int
) -> dict[str, Any]:
    """Every SMS the gateway took is one delivery's, each delivery's once, each answer's once."""
    posts = Counter(str(p.get("key")) for p in gateway.posts)
    references: dict[str, set[str]] = {str(p.get("key")): set() for p in gateway.posts}
    for post in gateway.posts:
        references[str(post.get("key"))].add(str(post.get("reference")))
    by_key = {key: (delivery_id, answer_id, status) for delivery_id, answer_id, key, status in deliveries}
    per_answer = Counter(answer_id for _, answer_id, _, _ in deliveries if answer_id)
    return {
        "answers_approved": approved,
        "deliveries": len(deliveries),
        "deliveries_sent": sum(1 for *_, status in deliveries if status == "sent"),
        "answer_deliveries_sent": sum(
            1 for _, answer_id, _, status in deliveries if answer_id and status == "sent"
        ),
        "gateway_posts": sum(posts.values()),
        "gateway_sms": len(gateway.sent),
        "reposted_same_key": sum(n - 1 for n in posts.values() if n > 1),
        "keys_of_no_delivery": sorted(set(gateway.sent) - set(by_key))[:5],
        "key_with_several_references": sum(1 for refs in references.values() if len(refs) > 1),
        "answers_with_several_deliveries": sum(1 for n in per_answer.values() if n > 1),
        "sent_but_not_received": sum(
            1 for key, (_, _, status) in by_key.items() if status == "sent" and key not in gateway.sent
        ),
    }
