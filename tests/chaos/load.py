"""The operators: concurrent clients that file complaints and retry them, as the operator's page does.

Each complaint has its own ``Idempotency-Key`` and an unchanged body on every retry, so a
retry of a complaint that was in fact recorded gets the first answer back instead of a second
complaint.  The key is also written into the complaint's ``place`` (``chaos <key>``), which
lets the checks find a complaint recorded twice.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

MARKER_PREFIX = "chaos "
COUNTIES = ("411681", "411623", "411624", "411625", "411602")


def complaint_body(index: int, key: str) -> dict[str, Any]:
    return {
        "channel": "phone",
        "complainant": {"name": "测试", "phone": f"139{index % 100_000_000:08d}", "anonymous": False},
        "accused": {"unit": f"测试派出所{index % 9}", "county_code": COUNTIES[index % len(COUNTIES)]},
        "category": "态度粗暴" if index % 5 else "吃拿卡要",
        "incident_at": "2026-10-30T20:30:00+08:00",
        "place": f"{MARKER_PREFIX}{key}",
        "account": "民警执法时态度粗暴，言语辱骂。" * 5,
    }


@dataclass
class Outcome:
    index: int
    key: str
    complaint_id: str | None = None
    status: str = "pending"  # accepted | rejected | gave_up | not_sent (the load was stopped)
    attempts: int = 0
    replayed: bool = False
    last_error: str | None = None
    accepted_at: float | None = None  # time.monotonic() of the 201


@dataclass
class LoadReport:
    outcomes: list[Outcome]
    seconds: float
    errors: Counter[str] = field(default_factory=Counter)
    stalled: bool = False  # intake accepted nothing for give_up_after: the rest was not sent

    @property
    def accepted(self) -> dict[str, str]:
        """Idempotency key -> complaint id, for every complaint that got its 201."""
        return {o.key: o.complaint_id for o in self.outcomes if o.status == "accepted" and o.complaint_id}

    def accepted_between(self, start: float, end: float) -> int:
        return sum(1 for o in self.outcomes if o.accepted_at is not None and start <= o.accepted_at <= end)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    def as_dict(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 1),
            "stopped_because_intake_accepted_nothing": self.stalled,
            "retries": sum(max(o.attempts - 1, 0) for o in self.outcomes),
            "replayed_answers": sum(1 for o in self.outcomes if o.replayed),
            "errors_by_kind": dict(self.errors.most_common()),
            "rejected_samples": [o.last_error for o in self.outcomes if o.status == "rejected"][:5],
        }


class Operators:
    """``clients`` concurrent clients sending ``count`` complaints at about ``rate`` per second."""

    def __init__(
        self, *, intake_url: str, count: int, clients: int, rate: float, give_up_after: float
    ) -> None:
        self.intake_url = intake_url
        self.count = count
        self.clients = clients
        self.rate = rate
        self.give_up_after = give_up_after
        self.outcomes = [Outcome(index=i, key=str(uuid.uuid4())) for i in range(count)]
        self.errors: Counter[str] = Counter()
        self._token: str | None = None
        self.sent = 0
        # When intake last answered 201 (or the load began): nothing for give_up_after stops the load,
        # else a broken intake would hold every client on every complaint for give_up_after each.
        self.last_progress = time.monotonic()
        self.stalled = False

    async def token(self, client: httpx.AsyncClient, *, timeout: float = 60.0) -> str:
        """A bearer token for operator1; retried while intake is down (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                response = await client.post(
                    "/api/v1/auth/token", data={"username": "operator1", "password": "demo"}, timeout=10
                )
                if response.status_code == 200:
                    self._token = str(response.json()["access_token"])
                    return self._token
                problem = f"token: HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                problem = f"token: {type(exc).__name__}"
            if time.monotonic() > deadline:
                raise RuntimeError(f"no token from intake within {timeout} s ({problem})")
            await asyncio.sleep(0.5)

    async def run(self) -> LoadReport:
        started = time.monotonic()
        limits = httpx.Limits(max_connections=self.clients, max_keepalive_connections=self.clients)
        async with httpx.AsyncClient(base_url=self.intake_url, limits=limits) as client:
            await self.token(client)
            queue: asyncio.Queue[Outcome] = asyncio.Queue()
            for outcome in self.outcomes:
                queue.put_nowait(outcome)

            async def operator() -> None:
                while not queue.empty() and not self.stalled:
                    outcome = queue.get_nowait()
                    # Paced: complaint i is due i/rate seconds after the start.
                    delay = started + outcome.index / self.rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    await self.file(client, outcome)

            async with asyncio.TaskGroup() as group:
                for _ in range(self.clients):
                    group.create_task(operator())
        for outcome in self.outcomes:
            if outcome.status == "pending":
                outcome.status = "not_sent"
        return LoadReport(
            outcomes=self.outcomes,
            seconds=time.monotonic() - started,
            errors=self.errors,
            stalled=self.stalled,
        )

    async def file(self, client: httpx.AsyncClient, outcome: Outcome) -> None:
        """POST one complaint until it is answered 201 or refused, or ``give_up_after`` passes."""
        body = complaint_body(outcome.index, outcome.key)
        deadline = time.monotonic() + self.give_up_after
        backoff = 0.2
        self.sent += 1
        while time.monotonic() < deadline:
            if time.monotonic() - self.last_progress > self.give_up_after:
                self.stalled = True
                break
            outcome.attempts += 1
            try:
                response = await client.post(
                    "/api/v1/complaints",
                    json=body,
                    headers={"Authorization": f"Bearer {self._token}", "Idempotency-Key": outcome.key},
                    timeout=15.0,
                )
            except httpx.HTTPError as exc:
                kind = type(exc).__name__
            else:
                if response.status_code == 201:
                    outcome.status = "accepted"
                    outcome.complaint_id = str(response.json()["id"])
                    outcome.replayed = response.headers.get("Idempotent-Replayed") == "true"
                    outcome.accepted_at = self.last_progress = time.monotonic()
                    return
                kind = f"HTTP {response.status_code}"
                if response.status_code == 401:
                    await self.token(client)
                elif response.status_code < 500 and response.status_code not in (408, 409, 425, 429):
                    # A refusal a retry cannot change (422, 403...): the harness's own mistake.
                    outcome.status, outcome.last_error = "rejected", f"{kind}: {response.text[:300]}"
                    self.errors[kind] += 1
                    return
            self.errors[kind] += 1
            outcome.last_error = kind
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)
        outcome.status = "gave_up"
