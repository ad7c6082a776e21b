"""The audit chain's anchor: checkpoints of each service's chain, kept on NATS, and the checks.

A chain proves that no entry inside it was changed or removed, but not that its newest entries
(or all of them) are still there: a shorter chain is intact too.  So every service publishes a
checkpoint now and then, its chain's head (``seq`` and hash) and its entry count, to the
JetStream stream ``AUDIT_CHECKPOINTS`` (subject ``audit.checkpoint.<service>``).  The stream
only grows: it is made with ``deny_delete`` and ``deny_purge`` (the server refuses to delete or
purge its messages, and to lift either flag later), and it lives on the NATS server, not in the
service's database, so whoever can rewrite a service's database cannot rewrite its checkpoints
with it.  Once each service connects to NATS as its own user, that user may publish on its own
checkpoint subject and nothing more on this stream.

A chain is intact against its checkpoints when it holds every checkpointed ``seq`` with the
checkpointed hash and has at least the checkpointed count of entries.  ``python -m services
audit verify`` checks every chain entirely against all its checkpoints; the checkpoint worker of
each service checks, before it publishes, the entries since its last checkpoint, that one
checkpoint, and that the count still matches the head (so a deletion anywhere shows there too).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.audit import GENESIS, AuditEntry, digest_of
from shared.db import table_of, utcnow
from shared.logging import get_logger
from shared.worker import BackgroundWorker

log = get_logger(__name__)

CHECKPOINT_STREAM = "AUDIT_CHECKPOINTS"
CHECKPOINT_SUBJECT_PREFIX = "audit.checkpoint"
# Entries a checkpoint step verifies at most before it publishes: a step stays short however
# far behind the last checkpoint is (the first one after the upgrade, say); the next continues.
STEP_ENTRIES = 20_000
# Entries read and hashed between two returns to the event loop: hashing is CPU on the loop, and a
# service catching up on hundreds of thousands of entries (the first start after an upgrade or a
# bulk load) stalled its requests for most of a second per batch of 2,000 (bench/scale.py).
SCAN_BATCH = 250
NATS_WAIT_SECONDS = 1.0


class ChainBroken(Exception):
    """The service's chain does not match itself or its last checkpoint; nothing is published."""


def checkpoint_subject(service: str) -> str:
    return f"{CHECKPOINT_SUBJECT_PREFIX}.{service}"


@dataclass(frozen=True)
class Checkpoint:
    service: str
    seq: int
    hash: str
    count: int
    at: datetime = field(default_factory=utcnow)
    # Set on a checkpoint an operator took to anchor the chain anew (after restoring a backup,
    # which legitimately loses the newest entries): the reason.  The checkpoints before it are
    # kept, and ``audit verify`` says they are no longer checked.
    restart: str | None = None

    def encode(self) -> bytes:
        return json.dumps(asdict(self) | {"at": self.at.isoformat()}, sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> Checkpoint:
        values = json.loads(data)
        return cls(
            service=str(values["service"]),
            seq=int(values["seq"]),
            hash=str(values["hash"]),
            count=int(values["count"]),
            at=datetime.fromisoformat(values["at"]),
            restart=values.get("restart"),
        )


def stream_config(*, replicas: int = 1) -> StreamConfig:
    return StreamConfig(
        name=CHECKPOINT_STREAM,
        subjects=[f"{CHECKPOINT_SUBJECT_PREFIX}.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        deny_delete=True,
        deny_purge=True,
        duplicate_window=120,
        num_replicas=replicas,
    )


async def ensure_checkpoint_stream(js: JetStreamContext, *, replicas: int = 1) -> None:
    """Create the stream unless it exists; an existing one is left as it is (only appended to)."""
    try:
        await js.stream_info(CHECKPOINT_STREAM)
    except NotFoundError:
        await js.add_stream(stream_config(replicas=replicas))


async def last_checkpoint(js: JetStreamContext, service: str) -> Checkpoint | None:
    try:
        message = await js.get_last_msg(CHECKPOINT_STREAM, checkpoint_subject(service))
    except NotFoundError:
        return None
    assert message.data is not None
    return Checkpoint.decode(message.data)


async def all_checkpoints(js: JetStreamContext, service: str) -> list[Checkpoint]:
    """Every checkpoint of ``service`` still in the stream, oldest first ([] without the stream)."""
    found: list[Checkpoint] = []
    seq = 1
    while True:
        try:
            message = await js.get_msg(
                CHECKPOINT_STREAM, seq=seq, subject=checkpoint_subject(service), next=True
            )
        except NotFoundError:
            return found
        assert message.data is not None and message.seq is not None
        found.append(Checkpoint.decode(message.data))
        seq = message.seq + 1


@dataclass
class ChainScan:
    """What reading a stretch of a chain found: how far it got, and the first break if any."""

    head: tuple[int, str]
    entries: int = 0
    problem: str | None = None
    hashes: dict[int, str] = field(default_factory=dict)  # the seqs asked for -> their stored hash


async def scan_chain(
    connection: AsyncConnection,
    *,
    after: tuple[int, str] = (0, GENESIS),
    until: int | None = None,
    remember: frozenset[int] = frozenset(),
) -> ChainScan:
    """Check the entries after ``after`` (a (seq, hash) taken as sound) up to seq ``until``.

    Every entry must follow the one before it (seq one higher, ``prev_hash`` its hash) and
    carry the hash of its content.  Stops at the first break.
    """
    table = table_of(AuditEntry)
    scan = ChainScan(head=after)
    while until is None or scan.head[0] < until:
        query = sa.select(table).where(table.c.seq > scan.head[0]).order_by(table.c.seq).limit(SCAN_BATCH)
        if until is not None:
            query = query.where(table.c.seq <= until)
        rows = (await connection.execute(query)).all()
        if not rows:
            break
        for row in rows:
            seq, prev = scan.head
            if row.seq != seq + 1:
                scan.problem = f"seq {seq + 1} is missing (the next entry is seq {row.seq})"
            elif row.prev_hash != prev:
                scan.problem = f"seq {row.seq} does not link to seq {seq}"
            elif digest_of(row) != row.entry_hash:
                scan.problem = f"seq {row.seq}: its hash does not match its content"
            if scan.problem:
                return scan
            if row.seq in remember:
                scan.hashes[row.seq] = row.entry_hash
            scan.head = (row.seq, row.entry_hash)
            scan.entries += 1
        await asyncio.sleep(0)
    return scan


async def _stored_entry(connection: AsyncConnection, seq: int) -> Any:
    table = table_of(AuditEntry)
    return (await connection.execute(sa.select(table).where(table.c.seq == seq))).first()


async def _entry_count(connection: AsyncConnection) -> int:
    return int(
        (await connection.execute(sa.select(sa.func.count()).select_from(table_of(AuditEntry)))).scalar_one()
    )


async def next_checkpoint(
    engine: AsyncEngine, *, service: str, last: Checkpoint | None
) -> tuple[Checkpoint | None, bool]:
    """The checkpoint to publish after ``last`` (None: nothing new), and whether more is left.

    Raises ``ChainBroken`` when the chain no longer holds ``last`` or breaks after it.
    """
    async with engine.connect() as connection:
        after = (0, GENESIS)
        if last is not None and last.seq > 0:
            anchored = await _stored_entry(connection, last.seq)
            if (
                anchored is None
                or anchored.entry_hash != last.hash
                or digest_of(anchored) != anchored.entry_hash
            ):
                raise ChainBroken(f"{service}: the chain no longer holds its checkpoint at seq {last.seq}")
            after = (last.seq, last.hash)
        scan = await scan_chain(connection, after=after, until=after[0] + STEP_ENTRIES)
        if scan.problem:
            raise ChainBroken(f"{service}: {scan.problem}")
        count = await _entry_count(connection)
    head_seq, head_hash = scan.head
    if count < head_seq or (last is not None and count < last.count):
        raise ChainBroken(f"{service}: {count} entries where the chain's seq reaches {head_seq}")
    if last is not None and head_seq == last.seq:
        return None, False
    return Checkpoint(service=service, seq=head_seq, hash=head_hash, count=head_seq), count > head_seq


async def _publish(js: JetStreamContext, checkpoint: Checkpoint) -> None:
    kind = "restart" if checkpoint.restart else "checkpoint"
    await js.publish(
        checkpoint_subject(checkpoint.service),
        checkpoint.encode(),
        stream=CHECKPOINT_STREAM,
        headers={"Nats-Msg-Id": f"{checkpoint.service}:{kind}:{checkpoint.seq}:{checkpoint.hash}"},
    )
    log.info("audit checkpoint published", kind=kind, seq=checkpoint.seq, restart=checkpoint.restart)


async def publish_checkpoint(
    js: JetStreamContext, engine: AsyncEngine, *, service: str, replicas: int = 1
) -> tuple[Checkpoint | None, bool]:
    """Verify the entries since the last checkpoint and publish one for the head (one step).

    Returns the checkpoint published (None: the chain has not grown) and whether entries are
    left for another step.
    """
    await ensure_checkpoint_stream(js, replicas=replicas)
    last = await last_checkpoint(js, service)
    checkpoint, more = await next_checkpoint(engine, service=service, last=last)
    if checkpoint is not None:
        await _publish(js, checkpoint)
    return checkpoint, more


async def restart_anchor(
    js: JetStreamContext, engine: AsyncEngine, *, service: str, reason: str, replicas: int = 1
) -> Checkpoint:
    """Anchor the chain anew at its head, whatever the earlier checkpoints say (after a restore).

    The whole chain must be intact in itself; raises ``ChainBroken`` otherwise.
    """
    await ensure_checkpoint_stream(js, replicas=replicas)
    async with engine.connect() as connection:
        scan = await scan_chain(connection)
        count = await _entry_count(connection)
    if scan.problem or count != scan.head[0]:
        raise ChainBroken(f"{service}: {scan.problem or f'{count} entries where seq reaches {scan.head[0]}'}")
    checkpoint = Checkpoint(service=service, seq=scan.head[0], hash=scan.head[1], count=count, restart=reason)
    await _publish(js, checkpoint)
    return checkpoint


def since_last_restart(checkpoints: list[Checkpoint]) -> tuple[list[Checkpoint], list[Checkpoint]]:
    """``checkpoints`` (oldest first) split at the last restart: those before it, and the rest."""
    starts = [index for index, checkpoint in enumerate(checkpoints) if checkpoint.restart]
    cut = starts[-1] if starts else 0
    return checkpoints[:cut], checkpoints[cut:]


def checkpoint_worker(
    *,
    service: str,
    engine: AsyncEngine,
    jetstream: Callable[[], JetStreamContext | None],
    interval_seconds: float,
    replicas: int = 1,
) -> BackgroundWorker:
    """The background loop that checkpoints the service's chain every ``interval_seconds``."""

    async def step() -> bool:
        js = jetstream()
        if js is None:
            # Not yet (or no longer) connected: look again soon rather than after a whole
            # interval, so the first checkpoint follows the connection.
            await asyncio.sleep(NATS_WAIT_SECONDS)
            return True
        try:
            _, more = await publish_checkpoint(js, engine, service=service, replicas=replicas)
        except ChainBroken as broken:
            log.error("audit chain broken; no checkpoint published", problem=str(broken))
            raise
        return more

    return BackgroundWorker(
        name="audit-checkpoint", step=step, idle_seconds=interval_seconds, step_timeout=60.0, backoff_max=60.0
    )


def runtime_checkpoint_worker(runtime: Any) -> BackgroundWorker:
    """``checkpoint_worker`` for a service's ``shared.app.Runtime`` (its settings, engine, NATS)."""
    settings = runtime.settings

    def jetstream() -> JetStreamContext | None:
        nc = runtime.nc
        return runtime.js if nc is not None and nc.is_connected else None

    return checkpoint_worker(
        service=settings.service_name,
        engine=runtime.engine,
        jetstream=jetstream,
        interval_seconds=settings.audit_checkpoint_seconds,
        replicas=settings.nats_replicas,
    )
