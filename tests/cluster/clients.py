"""The people using the cluster: operators filing complaints, and a team and a supervisor taking
some of them through to an answer, all through the balancers and retrying as the pages do.

Complaints carry ``chaos <idempotency key>`` as their place, so that tests.chaos.checks can find
a complaint recorded twice; each has a phone, so that its answer goes out by SMS.  One in
``OVERDUE_EVERY`` was received 41 days ago, so its clocks are past due and the ladder climbs
while the instances are being killed.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import httpx

from shared.workcalendar import SHANGHAI
from tests.chaos.load import MARKER_PREFIX, Outcome, complaint_body

OVERDUE_EVERY = 10
RETRYABLE = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class Api:
    """Calls through a balancer with a bearer token, retrying transport errors and 5xx (bounded)."""

    def __init__(self, client: httpx.AsyncClient, urls: dict[str, str], *, give_up_after: float) -> None:
        self.client = client
        self.urls = urls
        self.give_up_after = give_up_after
        self.tokens: dict[str, str] = {}
        self.errors: Counter[str] = Counter()
        self._signing_in = asyncio.Lock()

    async def token(self, username: str) -> str:
        # One sign-in per account: a burst of them would only add rows to intake's session table.
        async with self._signing_in:
            if username in self.tokens:
                return self.tokens[username]
            response = await self.request(
                "intake", "POST", "/api/v1/auth/token", data={"username": username, "password": "demo"}
            )
            response.raise_for_status()
            self.tokens[username] = str(response.json()["access_token"])
        return self.tokens[username]

    async def request(
        self, service: str, method: str, path: str, *, as_user: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        """The first answer that is not a transport error or a retryable status, or the last one."""
        deadline = time.monotonic() + self.give_up_after
        headers = dict(kwargs.pop("headers", {}) or {})
        if as_user:
            headers["Authorization"] = f"Bearer {await self.token(as_user)}"
        backoff = 0.2
        while True:
            try:
                response = await self.client.request(
                    method, self.urls[service] + path, headers=headers, timeout=15.0, **kwargs
                )
            except httpx.HTTPError as exc:
                kind, response_or_none = type(exc).__name__, None
            else:
                if response.status_code not in RETRYABLE:
                    return response
                kind, response_or_none = f"HTTP {response.status_code}", response
            self.errors[f"{service} {kind}"] += 1
            if time.monotonic() + backoff > deadline:
                if response_or_none is not None:
                    return response_or_none
                raise RuntimeError(
                    f"{method} {service}{path}: no answer within {self.give_up_after} s ({kind})"
                )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)


def cluster_complaint(index: int, key: str) -> dict[str, Any]:
    body = complaint_body(index, key)
    assert body["place"] == f"{MARKER_PREFIX}{key}"
    days = 41 if index % OVERDUE_EVERY == 0 else 0
    received = datetime.now(SHANGHAI) - timedelta(days=days, minutes=5)
    return {
        **body,
        "received_at": received.isoformat(),
        "incident_at": (received - timedelta(days=1)).isoformat(),
    }


async def file_complaints(
    api: Api, outcomes: list[Outcome], *, clients: int, rate: float, accepted: asyncio.Queue[Outcome]
) -> None:
    """``clients`` operators file ``outcomes`` at about ``rate`` a second; each 201 goes to ``accepted``."""
    started = time.monotonic()
    queue: asyncio.Queue[Outcome] = asyncio.Queue()
    for outcome in outcomes:
        queue.put_nowait(outcome)

    async def operator() -> None:
        while not queue.empty():
            outcome = queue.get_nowait()
            delay = started + outcome.index / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            outcome.attempts += 1
            response = await api.request(
                "intake",
                "POST",
                "/api/v1/complaints",
                as_user="operator1",
                json=cluster_complaint(outcome.index, outcome.key),
                headers={"Idempotency-Key": outcome.key},
            )
            if response.status_code == 201:
                outcome.status, outcome.complaint_id = "accepted", str(response.json()["id"])
                outcome.replayed = response.headers.get("Idempotent-Replayed") == "true"
                outcome.accepted_at = time.monotonic()
                accepted.put_nowait(outcome)
            else:
                outcome.status, outcome.last_error = (
                    "rejected",
                    f"HTTP {response.status_code}: {response.text[:300]}",
                )

    async with asyncio.TaskGroup() as group:
        for _ in range(clients):
            group.create_task(operator())
