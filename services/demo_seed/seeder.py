"""The demo users at work: sign in, call a service's API, wait until the events have crossed the bus."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

DEMO_PASSWORD = "demo"  # noqa: S105 - the demo accounts' documented password
STEP_TIMEOUT_SECONDS = 45.0
# A task's statuses once it exists and until its finding is approved or sent back.
WORKED_STATUSES = ("open", "claimed", "in_review", "concluded")

Say = Callable[[str], None]


class SeedError(RuntimeError):
    """A step of the seeding failed; the message says which."""


@dataclass
class Seeder:
    urls: dict[str, str]
    say: Say
    client: httpx.AsyncClient
    tokens: dict[str, str] = field(default_factory=dict)

    async def login(self, username: str) -> dict[str, str]:
        if username not in self.tokens:
            response = await self.client.post(
                f"{self.urls['intake']}/api/v1/auth/token",
                data={"username": username, "password": DEMO_PASSWORD},
            )
            if response.status_code != 200:
                raise SeedError(f"cannot sign in as {username}: {response.status_code}")
            self.tokens[username] = response.json()["access_token"]
        return {"Authorization": f"Bearer {self.tokens[username]}"}

    async def call(
        self,
        service: str,
        method: str,
        path: str,
        *,
        user: str | None = None,
        ok: tuple[int, ...] = (200, 201),
        **kwargs: Any,
    ) -> Any:
        headers = await self.login(user) if user else {}
        response = await self.client.request(method, self.urls[service] + path, headers=headers, **kwargs)
        if response.status_code not in ok:
            raise SeedError(f"{method} {service}{path}: {response.status_code} {response.text[:300]}")
        return response.json() if response.content else None

    async def until(self, probe: Callable[[], Awaitable[Any]], what: str) -> Any:
        deadline = time.monotonic() + STEP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            found = await probe()
            if found:
                return found
            await asyncio.sleep(0.25)
        raise SeedError(f"timed out waiting for {what}")

    async def pending_answer(self, case_id: str) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            rows = await self.call(
                "feedback",
                "GET",
                "/api/v1/answers",
                user="supervisor1",
                params={"case_id": case_id, "status": "pending_approval"},
            )
            return rows[0] if rows else None

        found: dict[str, Any] = await self.until(probe, f"the draft answer of {case_id}")
        return found

    async def status_now(self, code: str, secret: str) -> str | None:
        """The matter's public status now; None while feedback does not know it yet."""
        found = await self.call(
            "feedback",
            "POST",
            "/api/v1/public/lookup",
            json={"tracking_code": code, "query_secret": secret},
            ok=(200, 404),
        )
        # A 404 (feedback has not projected the matter yet) answers {"detail": …}: no status.
        return str(found["status"]) if found and "status" in found else None

    async def public_status(self, code: str, secret: str, status: str) -> None:
        async def probe() -> bool:
            return await self.status_now(code, secret) == status

        await self.until(probe, f"{code} to be {status}")

    def inspector(self, task: dict[str, Any]) -> str:
        return f"inspector-{task['team_code']}"

    async def claim(self, case_id: str) -> tuple[dict[str, Any], str]:
        """The matter's latest task, claimed; one a run cut short had already taken is left as it is."""
        task = await self.task(case_id, statuses=WORKED_STATUSES)
        inspector = self.inspector(task)
        if task["status"] == "open":
            await self.call("verification", "POST", f"/api/v1/tasks/{task['id']}/claim", user=inspector)
            task = {**task, "status": "claimed"}
        return task, inspector

    async def task(self, case_id: str, *, statuses: tuple[str, ...] = ("open",)) -> dict[str, Any]:
        """The matter's task of the latest round in one of ``statuses``, once verification has it."""

        async def probe() -> dict[str, Any] | None:
            rows = await self.call(
                "verification", "GET", "/api/v1/tasks", user="supervisor1", params={"case_id": case_id}
            )
            matching = [t for t in rows if t["status"] in statuses]
            return max(matching, key=lambda t: int(t.get("round") or 0)) if matching else None

        found: dict[str, Any] = await self.until(probe, f"the task of {case_id}")
        return found

    async def find(self, case_id: str, outcome: str, summary: str, **extra: Any) -> dict[str, Any]:
        """Evidence and a finding, each unless a run cut short already gave it."""
        task, inspector = await self.claim(case_id)
        if task["status"] != "claimed":
            return task  # found already: in review or concluded
        path = f"/api/v1/tasks/{task['id']}"
        if not await self.call("verification", "GET", f"{path}/evidence", user=inspector):
            await self.call(
                "verification",
                "POST",
                f"{path}/evidence",
                user=inspector,
                data={
                    "kind": "interview",
                    "description": "当事民警及在场人员询问笔录",
                    "reference": "督察大队档案室",
                },
            )
        await self.call(
            "verification",
            "POST",
            f"{path}/finding",
            user=inspector,
            json={"outcome": outcome, "summary": summary, **extra},
        )
        return task

    async def approve(self, case_id: str) -> None:
        """Approve the matter's draft answer, unless a run cut short already approved it."""

        async def probe() -> dict[str, Any] | None:
            rows = await self.call(
                "feedback", "GET", "/api/v1/answers", user="supervisor1", params={"case_id": case_id}
            )
            pending = [a for a in rows if a["status"] == "pending_approval"]
            if pending:
                return dict(pending[0])
            return {"approved_already": True} if rows else None

        answer: dict[str, Any] = await self.until(probe, f"the draft answer of {case_id}")
        if not answer.get("approved_already"):
            await self.call("feedback", "POST", f"/api/v1/answers/{answer['id']}/approve", user="supervisor1")
