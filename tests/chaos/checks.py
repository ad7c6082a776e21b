"""What the run is judged on, read from the services' own databases and from the stream.

The databases are read directly (read-only for SQLite) rather than through the APIs: a
check must see every row, including the duplicates an API might hide, and must not depend
on the services it is judging.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from tests.chaos.load import MARKER_PREFIX

STREAM = "SUPERVISION"
DEAD_LETTER_STREAM = STREAM + "_DLQ"
POISON_HEADER = "Sv-Chaos-Poison"
# The complaints of chaos runs: their place is the MARKER_PREFIX and the idempotency key.
MARKED_COMPLAINTS = "SELECT id, place FROM intake_complaint WHERE place LIKE 'chaos %'"
assert MARKER_PREFIX == "chaos "


async def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` in the database at ``url`` (SQLite file or PostgreSQL), bounded in time."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1]

        def read() -> list[tuple[Any, ...]]:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as conn:
                return list(conn.execute(sql).fetchall())

        return await asyncio.wait_for(asyncio.to_thread(read), timeout=20)
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"), timeout=5)
    try:
        return [tuple(row) for row in await conn.fetch(sql, timeout=20)]
    finally:
        with contextlib.suppress(Exception):
            await conn.close(timeout=2)


@dataclass
class Snapshot:
    """One reading of the four databases."""

    complaints: dict[str, list[str]]  # marker key -> complaint ids with that key
    assignments: dict[str, int]  # case id -> assignment rows
    tasks: dict[str, int]  # case id -> task rows
    feedback_cases: set[str]
    unpublished: dict[str, int]  # service -> outbox rows not yet published

    @property
    def case_ids(self) -> set[str]:
        return {case_id for ids in self.complaints.values() for case_id in ids}


async def read_snapshot(db_urls: dict[str, str]) -> Snapshot:
    rows = await query(db_urls["intake"], MARKED_COMPLAINTS)
    complaints: dict[str, list[str]] = {}
    for case_id, place in rows:
        complaints.setdefault(str(place)[len(MARKER_PREFIX) :], []).append(str(case_id))
    per_case = "SELECT case_id, COUNT(*) FROM {} GROUP BY case_id"
    assignments = await query(db_urls["routing"], per_case.format("routing_assignment"))
    tasks = await query(db_urls["verification"], per_case.format("verification_task"))
    cases = await query(db_urls["feedback"], "SELECT case_id FROM feedback_case")
    unpublished = {}
    for name, url in db_urls.items():
        unpublished[name] = int(
            (await query(url, "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL"))[0][0]
        )
    return Snapshot(
        complaints=complaints,
        assignments={str(c): int(n) for c, n in assignments},
        tasks={str(c): int(n) for c, n in tasks},
        feedback_cases={str(row[0]) for row in cases},
        unpublished=unpublished,
    )


@dataclass
class Verdict:
    """The figures of one snapshot against what the clients were told (key -> id of each 201)."""

    accepted: int
    recorded: int
    unconfirmed: int  # recorded, though the client gave up before it heard the 201
    lost_in_intake: list[str]
    no_assignment: list[str]
    no_task: list[str]
    no_feedback_case: list[str]
    duplicated_complaints: int
    duplicated_assignments: int
    duplicated_tasks: int
    unpublished: dict[str, int]
    mismatched_ids: int

    @property
    def lost(self) -> int:
        return len(
            set(self.lost_in_intake)
            | set(self.no_assignment)
            | set(self.no_task)
            | set(self.no_feedback_case)
        )

    @property
    def duplicated(self) -> int:
        return self.duplicated_complaints + self.duplicated_assignments + self.duplicated_tasks

    @property
    def flowed(self) -> bool:
        """Everything recorded reached every service and every outbox is empty."""
        return not (self.lost or sum(self.unpublished.values()))

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "recorded_in_intake": self.recorded,
            "recorded_but_unconfirmed": self.unconfirmed,
            "lost": self.lost,
            "lost_detail": {
                "not_in_intake": len(self.lost_in_intake),
                "no_assignment": len(self.no_assignment),
                "no_task": len(self.no_task),
                "no_feedback_case": len(self.no_feedback_case),
                "samples": sorted(set(self.no_assignment) | set(self.no_task) | set(self.no_feedback_case))[
                    :5
                ],
            },
            "duplicated": self.duplicated,
            "duplicated_detail": {
                "complaints": self.duplicated_complaints,
                "assignments": self.duplicated_assignments,
                "tasks": self.duplicated_tasks,
                "answer_id_differs_from_recorded": self.mismatched_ids,
            },
            "stuck_outbox_rows": dict(self.unpublished),
        }


def judge(snapshot: Snapshot, accepted: dict[str, str]) -> Verdict:
    recorded_ids = snapshot.case_ids
    # Every recorded complaint must flow, whether or not its client heard the 201.
    return Verdict(
        accepted=len(accepted),
        recorded=len(snapshot.complaints),
        unconfirmed=len(set(snapshot.complaints) - set(accepted)),
        lost_in_intake=[cid for cid in accepted.values() if cid not in recorded_ids],
        no_assignment=[cid for cid in recorded_ids if cid not in snapshot.assignments],
        no_task=[cid for cid in recorded_ids if cid not in snapshot.tasks],
        no_feedback_case=[cid for cid in recorded_ids if cid not in snapshot.feedback_cases],
        duplicated_complaints=sum(len(ids) - 1 for ids in snapshot.complaints.values()),
        duplicated_assignments=sum(
            snapshot.assignments.get(cid, 0) - 1
            for cid in recorded_ids
            if snapshot.assignments.get(cid, 0) > 1
        ),
        duplicated_tasks=sum(
            snapshot.tasks.get(cid, 0) - 1 for cid in recorded_ids if snapshot.tasks.get(cid, 0) > 1
        ),
        unpublished=snapshot.unpublished,
        mismatched_ids=sum(
            1 for key, cid in accepted.items() if cid not in snapshot.complaints.get(key, [cid])
        ),
    )


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, a final ``>`` the rest."""
    wanted, tokens = pattern.split("."), subject.split(".")
    for index, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > index
        if index >= len(tokens) or (token not in ("*", tokens[index])):
            return False
    return len(wanted) == len(tokens)


@dataclass
class DeadLetters:
    """Who parked the poison events, and what else got parked (a legitimate event there is a loss)."""

    expected: dict[str, set[str]]  # poison id -> durables that take its subject
    parked: dict[str, set[str]] = field(default_factory=dict)
    others: list[str] = field(default_factory=list)

    @property
    def all_parked(self) -> bool:
        return all(self.expected[pid] <= self.parked.get(pid, set()) for pid in self.expected)

    def as_dict(self) -> dict[str, Any]:
        return {
            "poison_events": len(self.expected),
            "all_parked": self.all_parked,
            "parked_by": {pid: sorted(self.parked.get(pid, set())) for pid in self.expected},
            "expected_parkers": {pid: sorted(durables) for pid, durables in self.expected.items()},
            "other_dead_letters": len(self.others),
            "other_dead_letter_samples": self.others[:5],
        }


async def read_dead_letters(nats_url: str, poison: dict[str, str]) -> DeadLetters:
    """``poison``: poison id -> the subject it was published on."""
    import nats
    from nats.js.errors import NotFoundError

    nc = await nats.connect(nats_url, connect_timeout=3, allow_reconnect=False)
    try:
        js = nc.jetstream(timeout=5)
        consumers = await js.consumers_info(STREAM)
        expected: dict[str, set[str]] = {}
        for pid, subject in poison.items():
            expected[pid] = set()
            for info in consumers:
                filters = list(info.config.filter_subjects or []) or [info.config.filter_subject or ">"]
                if any(subject_matches(f, subject) for f in filters):
                    expected[pid].add(str(info.name))
        letters = DeadLetters(expected=expected)
        try:
            state = (await js.stream_info(DEAD_LETTER_STREAM)).state
        except NotFoundError:
            return letters
        for seq in range(state.first_seq, state.last_seq + 1):
            try:
                msg = await js.get_msg(DEAD_LETTER_STREAM, seq)
            except NotFoundError:
                continue
            headers = msg.headers or {}
            durable = str(headers.get("Sv-Dead-Letter-Consumer", "?"))
            if POISON_HEADER in headers:
                letters.parked.setdefault(str(headers[POISON_HEADER]), set()).add(durable)
            else:
                reason = str(headers.get("Sv-Dead-Letter-Reason", ""))[:200]
                letters.others.append(f"{durable}: {headers.get('Sv-Original-Subject')}: {reason}")
        return letters
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), timeout=3)
