"""Each demo matter taken to its stage, as the demo users would: claim, find, approve, rate."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from services.demo_seed.matters import COMPLAINTS, FINDINGS, SUGGESTIONS, Stage
from services.demo_seed.seeder import Say, Seeder


async def already_seeded(seeder: Seeder) -> bool:
    rows = await seeder.call("intake", "GET", "/api/v1/complaints", user="operator1", params={"limit": 1})
    return bool(rows)


async def seed(urls: dict[str, str], say: Say) -> bool:
    """Make the demo matters; False when there was already data (nothing is done then)."""
    async with httpx.AsyncClient(timeout=20.0, trust_env=False) as client:
        seeder = Seeder(urls=urls, say=say, client=client)
        if await already_seeded(seeder):
            say("demo data: matters already exist, nothing seeded")
            return False
        say(f"demo data: recording {len(COMPLAINTS)} complaints and {len(SUGGESTIONS)} suggestions")
        created: list[tuple[Stage, dict[str, Any]]] = []
        for stage, body in COMPLAINTS:
            created.append(
                (
                    stage,
                    await seeder.call("intake", "POST", "/api/v1/complaints", user="operator1", json=body),
                )
            )
        suggestions: list[tuple[Stage, dict[str, Any]]] = []
        for stage, body in SUGGESTIONS:
            suggestions.append(
                (
                    stage,
                    await seeder.call("intake", "POST", "/api/v1/suggestions", user="operator1", json=body),
                )
            )
        await asyncio.gather(*(advance(seeder, stage, matter) for stage, matter in created))
        await asyncio.gather(*(advance_suggestion(seeder, stage, matter) for stage, matter in suggestions))
        await mark_ledger(seeder, created)
        say("demo data: done; sign in at " + urls["intake"] + "/login")
        return True


async def advance(seeder: Seeder, stage: Stage, matter: dict[str, Any]) -> None:
    case_id = matter["id"]
    if stage == Stage.NEW:
        await seeder.task(case_id)
    elif stage in (Stage.CLAIMED, Stage.OVERDUE):
        await seeder.claim(case_id)
    elif stage == Stage.EXTENSION:
        task, inspector = await seeder.claim(case_id)
        await seeder.call(
            "verification",
            "POST",
            f"/api/v1/tasks/{task['id']}/extensions",
            user=inspector,
            json={
                "clock": "verification",
                "days": 15,
                "reason": "需调取交通监控录像并询问外地证人，现有期限内无法完成核查",
            },
        )
    elif stage == Stage.IN_REVIEW:
        await seeder.find(case_id, "partly_substantiated", FINDINGS["partly"])
    elif stage == Stage.PENDING_ANSWER:
        await seeder.find(case_id, "substantiated", FINDINGS["substantiated"], accountability=["批评教育"])
        await seeder.pending_answer(case_id)
    elif stage in (Stage.ANSWERED, Stage.CLOSED, Stage.REOPENED):
        await _answer_and_rate(seeder, stage, matter)


async def _answer_and_rate(seeder: Seeder, stage: Stage, matter: dict[str, Any]) -> None:
    """Found, answered; then the complainant is satisfied (CLOSED) or not (REOPENED), or says nothing."""
    case_id = matter["id"]
    outcome = "unsubstantiated" if stage == Stage.REOPENED else "partly_substantiated"
    await seeder.find(case_id, outcome, FINDINGS["unsubstantiated" if stage == Stage.REOPENED else "partly"])
    await seeder.approve(case_id)
    code, secret = matter["tracking_code"], matter["query_secret"]
    await seeder.public_status(code, secret, "answered")
    if stage == Stage.CLOSED:
        await seeder.call(
            "feedback",
            "POST",
            "/api/v1/public/rating",
            json={"tracking_code": code, "query_secret": secret, "rating": "satisfied"},
        )
    elif stage == Stage.REOPENED:
        await seeder.call(
            "feedback",
            "POST",
            "/api/v1/public/rating",
            json={
                "tracking_code": code,
                "query_secret": secret,
                "rating": "unsatisfied",
                "reason": "调查没有询问我提供的证人，结论不客观",
            },
        )
        # Reopened matters go up a level: wait for the new task so the board shows it.
        await seeder.task(case_id, statuses=("open",))


async def advance_suggestion(seeder: Seeder, stage: Stage, matter: dict[str, Any]) -> None:
    case_id = matter["id"]
    if stage == Stage.CLAIMED:
        await seeder.claim(case_id)
        return
    await seeder.find(
        case_id,
        "no_finding",
        "市公安局交警支队会同教育部门对城区32所中小学周边道路进行了排查，已增设减速带46处、警示标志120余块，"
        "并在上下学时段设立护学岗，安排民警和辅警值守。下一步将建立常态化巡查机制。",
        no_finding_reason="建议办理，不涉及核查结论",
        classification="A",
    )
    await seeder.approve(case_id)


async def mark_ledger(seeder: Seeder, created: list[tuple[Stage, dict[str, Any]]]) -> None:
    oldest = next((m for stage, m in created if stage == Stage.OVERDUE), None)
    if oldest is not None:
        await seeder.call(
            "verification",
            "POST",
            f"/api/v1/ledger/{oldest['id']}/marks",
            user="supervisor1",
            json={"mark": "supervised", "note": "超期未办结，列为督办件"},
        )
