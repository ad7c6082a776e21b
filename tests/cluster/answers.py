"""Taking complaints through to an answer over the cluster: the team claims the task and records a
finding (another team confirms it when the matter needs a cross-check), the supervisor approves
the drafted answer, and feedback sends it by SMS.

Every write is a POST that may have taken effect on an instance killed before it answered; a
refusal of the retry is therefore checked against what the services now show.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tests.cluster.clients import Api

FINDING = {
    "outcome": "partly_substantiated",
    "summary": "经调取执法记录仪视频并询问在场人员，民警言语不文明属实，已对其批评教育。",
}


async def poll(probe: Callable[[], Awaitable[Any]], *, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := await probe():
            return found
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


async def take_to_answer(api: Api, case_id: str, *, timeout: float) -> dict[str, Any]:
    """Claim, finding, approval; returns the approved answer as feedback shows it."""

    async def assignment() -> dict[str, Any] | None:
        response = await api.request(
            "routing", "GET", "/api/v1/assignments", as_user="supervisor1", params={"case_id": case_id}
        )
        return response.json() if response.status_code == 200 else None

    inspector = f"inspector-{(await poll(assignment, timeout=timeout, what='assignment'))['team_code']}"

    async def task() -> dict[str, Any] | None:
        response = await api.request(
            "verification", "GET", "/api/v1/tasks", as_user=inspector, params={"case_id": case_id}
        )
        found = response.json() if response.status_code == 200 else []
        return found[0] if found else None

    found = await poll(task, timeout=timeout, what="task")
    path = f"/api/v1/tasks/{found['id']}"
    if found["status"] == "open":
        claimed = await api.request("verification", "POST", f"{path}/claim", as_user=inspector)
        if claimed.status_code != 200 and (await task() or {}).get("status") != "claimed":
            raise AssertionError(f"claim of {found['id']}: HTTP {claimed.status_code} {claimed.text[:300]}")
    finding = await api.request("verification", "POST", f"{path}/finding", as_user=inspector, json=FINDING)
    if finding.status_code != 200 and (await task() or {}).get("status") in ("open", "claimed"):
        raise AssertionError(f"finding on {found['id']}: HTTP {finding.status_code} {finding.text[:300]}")

    after = await task() or {}
    if after.get("status") == "in_review" and after.get("review_team_code"):
        # A matter that needs a cross-check (复核) is concluded by another team's confirmation.
        reviewed = await api.request(
            "verification",
            "POST",
            f"{path}/review",
            as_user=f"inspector-{after['review_team_code']}",
            json={"decision": "confirm", "reasons": ["核查充分"]},
        )
        if reviewed.status_code != 200 and (await task() or {}).get("status") == "in_review":
            raise AssertionError(
                f"review of {found['id']}: HTTP {reviewed.status_code} {reviewed.text[:300]}"
            )

    async def answers() -> list[dict[str, Any]] | None:
        response = await api.request(
            "feedback", "GET", "/api/v1/answers", as_user="supervisor1", params={"case_id": case_id}
        )
        return (response.json() or None) if response.status_code == 200 else None

    drafts = await poll(answers, timeout=timeout, what="answer draft")
    if len(drafts) != 1:
        raise AssertionError(f"{len(drafts)} answers drafted for {case_id}")
    draft = drafts[0]
    approved = await api.request(
        "feedback", "POST", f"/api/v1/answers/{draft['id']}/approve", as_user="supervisor1"
    )
    if approved.status_code == 200:
        return dict(approved.json())
    [now] = await answers() or [{}]
    if now.get("status") != "delivered":
        raise AssertionError(f"approval of {draft['id']}: HTTP {approved.status_code} {approved.text[:300]}")
    return dict(now)
