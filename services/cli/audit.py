"""``audit verify`` and ``audit checkpoint``: each service's audit chain, checked against its anchor.

``verify`` reads every service's chain from its first entry to its last (every hash recomputed,
the sequence numbers without a gap, every entry linked to the one before it) and every
checkpoint of it kept on NATS (``shared.audit_anchor``): the chain must hold each checkpointed
sequence number with the checkpointed hash, and at least the checkpointed number of entries.
It prints one line per service, OK or the first break, and exits 1 on any break.  A chain with
entries but no checkpoint counts as a break too (its tail could have gone unnoticed), unless
``--allow-unanchored``.

``checkpoint`` takes a checkpoint of each chain now (the services also take one every
``AUDIT_CHECKPOINT_SECONDS``), after checking the entries since the last one.  Restoring a
backup loses the entries written after it, so the chains no longer reach their last
checkpoints; ``checkpoint --restart REASON`` then anchors each chain anew.  The earlier
checkpoints stay in the stream and ``verify`` names the restart on every run, so an anchor
restarted to hide a loss does not go unseen.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from services.cli.common import CommandError, load_service_settings
from services.registry import SERVICES

if TYPE_CHECKING:
    from nats.js import JetStreamContext

    from shared.audit_anchor import Checkpoint

NATS_CONNECT_TIMEOUT_SECONDS = 10.0

Report = Callable[[str], None]


@dataclass(frozen=True)
class ChainVerdict:
    service: str
    entries: int
    head_seq: int
    checkpoints: int
    problem: str | None = None
    restarted: Checkpoint | None = None  # the last restart of the anchor, if any
    unchecked: int = 0  # checkpoints before that restart

    @property
    def intact(self) -> bool:
        return self.problem is None

    def line(self) -> str:
        if self.problem is not None:
            return f"{self.service}: BROKEN: {self.problem}"
        line = f"{self.service}: OK ({self.entries} entries, head seq {self.head_seq}, {self.checkpoints} checkpoints)"
        if self.restarted is not None:
            line += (
                f"; anchored anew at seq {self.restarted.seq} on {self.restarted.at.isoformat()} "
                f"({self.restarted.restart}), {self.unchecked} earlier checkpoints not checked"
            )
        return line


def anchor_problem(
    checkpoints: list[Checkpoint], *, head_seq: int, entries: int, hashes: Mapping[int, str]
) -> str | None:
    """The first checkpoint the (intact) chain does not satisfy, said in words; None if none."""
    for checkpoint in checkpoints:
        when = checkpoint.at.isoformat()
        if checkpoint.seq > head_seq:
            return (
                f"the checkpoint of {when} anchors seq {checkpoint.seq} but the chain ends at seq "
                f"{head_seq}: entries were removed"
            )
        if checkpoint.seq > 0 and hashes.get(checkpoint.seq) != checkpoint.hash:
            return f"seq {checkpoint.seq} differs from the checkpoint of {when}: the chain was rewritten"
        if entries < checkpoint.count:
            return f"{entries} entries, fewer than the {checkpoint.count} of the checkpoint of {when}"
    return None


async def verify_service(
    *, service: str, database_url: str, js: JetStreamContext, allow_unanchored: bool = False
) -> ChainVerdict:
    from shared.audit_anchor import all_checkpoints, scan_chain, since_last_restart
    from shared.db import create_engine

    earlier, checkpoints = since_last_restart(await all_checkpoints(js, service))
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            scan = await scan_chain(connection, remember=frozenset(c.seq for c in checkpoints))
    finally:
        await engine.dispose()
    head_seq = scan.head[0]
    problem = scan.problem or anchor_problem(
        checkpoints, head_seq=head_seq, entries=scan.entries, hashes=scan.hashes
    )
    if problem is None and not checkpoints and scan.entries and not allow_unanchored:
        problem = "no checkpoint on NATS anchors this chain (its newest entries could be gone unnoticed)"
    return ChainVerdict(
        service=service,
        entries=scan.entries,
        head_seq=head_seq,
        checkpoints=len(checkpoints),
        problem=problem,
        restarted=checkpoints[0] if checkpoints and checkpoints[0].restart else None,
        unchecked=len(earlier),
    )


async def _jetstream(nats_url: str) -> tuple[Any, JetStreamContext]:
    import nats

    try:
        nc = await nats.connect(
            nats_url, connect_timeout=NATS_CONNECT_TIMEOUT_SECONDS, allow_reconnect=False, name="audit-cli"
        )
    except Exception as exc:
        raise CommandError(f"NATS at {nats_url} unreachable: {exc!r}") from exc
    return nc, nc.jetstream()


async def verify_services(
    databases: Mapping[str, str], *, nats_url: str, allow_unanchored: bool = False, report: Report = print
) -> bool:
    """Check each service's chain (``databases``: service name to database URL); True if all are intact."""
    nc, js = await _jetstream(nats_url)
    try:
        verdicts = [
            await verify_service(service=name, database_url=url, js=js, allow_unanchored=allow_unanchored)
            for name, url in databases.items()
        ]
    finally:
        await nc.close()
    for verdict in verdicts:
        report(verdict.line())
    return all(verdict.intact for verdict in verdicts)


async def checkpoint_services(
    databases: Mapping[str, str],
    *,
    nats_url: str,
    restart: str | None = None,
    replicas: int = 1,
    report: Report = print,
) -> bool:
    """Checkpoint each service's chain now; False if a chain is broken (then nothing is published for it).

    ``restart``: anchor each chain anew at its head, with this reason, whatever the earlier
    checkpoints say (after restoring a backup); the chain must still be intact in itself.
    """
    from shared.audit_anchor import ChainBroken, publish_checkpoint, restart_anchor
    from shared.db import create_engine

    nc, js = await _jetstream(nats_url)
    intact = True
    try:
        for name, url in databases.items():
            engine = create_engine(url)
            published: Checkpoint | None
            try:
                if restart is not None:
                    published, more = (
                        await restart_anchor(js, engine, service=name, reason=restart, replicas=replicas),
                        False,
                    )
                else:
                    published, more = await publish_checkpoint(js, engine, service=name, replicas=replicas)
                while more:
                    published, more = await publish_checkpoint(js, engine, service=name, replicas=replicas)
            except ChainBroken as broken:
                report(f"{name}: BROKEN: {broken}")
                intact = False
                continue
            finally:
                await engine.dispose()
            said = (
                f"checkpoint at seq {published.seq}" if published else "unchanged since the last checkpoint"
            )
            report(f"{name}: {said}")
    finally:
        await nc.close()
    return intact


@dataclass(frozen=True)
class _Targets:
    databases: dict[str, str]  # service name -> database URL
    nats_url: str
    nats_replicas: int


def _targets(args: argparse.Namespace) -> _Targets:
    names = list(SERVICES) if args.service == "all" else [args.service]
    settings = {name: load_service_settings(SERVICES[name]) for name in names}
    missing = [name for name, loaded in settings.items() if not loaded.database_url]
    if missing:
        raise CommandError(f"no database URL for {', '.join(missing)}")
    first = settings[names[0]]
    return _Targets(
        databases={name: loaded.database_url for name, loaded in settings.items()},
        nats_url=first.nats_url,
        nats_replicas=first.nats_replicas,
    )


def cmd_audit_verify(args: argparse.Namespace) -> int:
    targets = _targets(args)
    intact = asyncio.run(
        verify_services(targets.databases, nats_url=targets.nats_url, allow_unanchored=args.allow_unanchored)
    )
    return 0 if intact else 1


def cmd_audit_checkpoint(args: argparse.Namespace) -> int:
    targets = _targets(args)
    intact = asyncio.run(
        checkpoint_services(
            targets.databases, nats_url=targets.nats_url, restart=args.restart, replicas=targets.nats_replicas
        )
    )
    return 0 if intact else 1


def add_commands(commands: Any) -> None:
    """``audit verify`` and ``audit checkpoint`` under ``commands`` (the top-level subparsers)."""
    audit = commands.add_parser("audit", help="check the audit trails against their checkpoints")
    actions = audit.add_subparsers(dest="audit_command", required=True, metavar="action")
    verify = actions.add_parser("verify", help="verify every chain and its checkpoints; exit 1 on a break")
    verify.add_argument("--service", default="all", choices=[*SERVICES, "all"])
    verify.add_argument(
        "--allow-unanchored", action="store_true", help="a chain without any checkpoint is not a break"
    )
    verify.set_defaults(handler=cmd_audit_verify)
    checkpoint = actions.add_parser("checkpoint", help="checkpoint every chain on NATS now")
    checkpoint.add_argument("--service", default="all", choices=[*SERVICES, "all"])
    checkpoint.add_argument(
        "--restart",
        metavar="REASON",
        help="anchor the chains anew (after restoring a backup): earlier checkpoints are no longer checked",
    )
    checkpoint.set_defaults(handler=cmd_audit_checkpoint)
