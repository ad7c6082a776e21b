"""Each demo matter taken to its stage, as the demo users would: claim, find, approve, rate.

Seeding takes a while, and a newcomer may press Ctrl-C in the middle of the first run.  Each
step that completes is recorded in a small state file beside the run's data (``var/``): every
matter recorded (with the query secret the public steps need, shown once by intake), every
matter taken to its stage, the ledger marks.  The next run skips what is recorded and goes on
from there; a matter cut short half-way is taken on from the state the services report.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from services.demo_seed.matters import COMPLAINTS, FINDINGS, SUGGESTIONS, Stage
from services.demo_seed.seeder import Say, Seeder, SeedError

# Called after each step is recorded, with the step's marker (the tests interrupt the seeding there).
Hook = Callable[[str], Awaitable[None]]
COMPLETE = "complete"
LEDGER = "ledger"
# A matter's public status once it was answered, and after the complainant's rating.
ANSWERED_OR_LATER = ("answered", "closed", "reopened")


@dataclass
class SeedState:
    """The steps already done, kept in ``path`` (None: in memory only, nothing resumes)."""

    path: Path | None = None
    matters: dict[str, dict[str, Any]] = field(default_factory=dict)
    done: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path | None) -> SeedState:
        if path is None or not path.exists():
            return cls(path=path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(path=path, matters=dict(data["matters"]), done=list(data["done"]))
        except (ValueError, KeyError, TypeError, OSError):
            return cls(path=path)  # unreadable: start afresh (the database check below decides)

    @property
    def started(self) -> bool:
        return bool(self.matters or self.done)

    def has(self, marker: str) -> bool:
        return marker in self.done

    def reset(self) -> None:
        self.matters, self.done = {}, []
        self.save()

    def record(self, key: str, matter: dict[str, Any]) -> None:
        # Only what the later steps need: the id, the tracking code, the query secret, and whether
        # intake linked it to an open matter as a repeat call (重复件: no task of its own).
        self.matters[key] = {k: matter.get(k) for k in ("id", "tracking_code", "query_secret", "repeat_of")}
        self.save()

    def mark(self, marker: str) -> None:
        if marker not in self.done:
            self.done.append(marker)
            self.save()

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = self.path.with_suffix(".tmp")
        partial.write_text(json.dumps({"matters": self.matters, "done": self.done}), encoding="utf-8")
        with contextlib.suppress(OSError):
            partial.chmod(0o600)  # the query secrets of the demo matters
        os.replace(partial, self.path)


async def already_seeded(seeder: Seeder) -> bool:
    rows = await seeder.call("intake", "GET", "/api/v1/complaints", user="operator1", params={"limit": 1})
    return bool(rows)


async def _recorded_matter_exists(seeder: Seeder, state: SeedState) -> bool:
    """Whether the state file belongs to these databases: its first recorded matter is in intake."""
    first = next(iter(state.matters.values()), None)
    if first is None:
        return not await already_seeded(seeder)
    found = await seeder.call(
        "intake", "GET", f"/api/v1/complaints/{first['id']}", user="operator1", ok=(200, 403, 404)
    )
    return bool(found) and found.get("id") == first["id"]


async def _fresh_start_allowed(seeder: Seeder, state: SeedState, say: Say) -> bool:
    """Go on from the state file, or start afresh; False when data not seeded by this file exists."""
    if state.started and await _recorded_matter_exists(seeder, state):
        say("demo data: going on from where the last run stopped")
        return True
    if state.started:
        state.reset()  # a state file from other databases (var/ emptied but the file kept)
    if await already_seeded(seeder):
        say("demo data: matters already exist, nothing seeded")
        return False
    return True


async def seed(
    urls: dict[str, str], say: Say, *, state_file: Path | None = None, after_step: Hook | None = None
) -> bool:
    """Make the demo matters, or finish an interrupted seeding; False when nothing was left to do."""
    state = SeedState.load(state_file)
    if state.has(COMPLETE):
        say("demo data: already seeded")
        return False

    async def done(marker: str) -> None:
        state.mark(marker)
        if after_step is not None:
            await after_step(marker)

    async with httpx.AsyncClient(timeout=20.0, trust_env=False) as client:
        seeder = Seeder(urls=urls, say=say, client=client)
        if not await _fresh_start_allowed(seeder, state, say):
            return False
        say(f"demo data: recording {len(COMPLAINTS)} complaints and {len(SUGGESTIONS)} suggestions")
        complaints = await _record(seeder, state, done, "complaint", "/api/v1/complaints", COMPLAINTS)
        suggestions = await _record(seeder, state, done, "suggestion", "/api/v1/suggestions", SUGGESTIONS)
        await _advance_all(state, done, complaints, lambda stage, m: advance(seeder, stage, m))
        await _advance_all(state, done, suggestions, lambda stage, m: advance_suggestion(seeder, stage, m))
        if not state.has(LEDGER):
            await mark_ledger(seeder, [(stage, matter) for _, stage, matter in complaints])
            await done(LEDGER)
        await done(COMPLETE)
        say("demo data: done; sign in at " + urls["intake"] + "/login")
        return True


Recorded = list[tuple[str, Stage, dict[str, Any]]]


async def _record(
    seeder: Seeder,
    state: SeedState,
    done: Hook,
    kind: str,
    path: str,
    bodies: list[tuple[Stage, dict[str, Any]]],
) -> Recorded:
    """Each matter recorded once: those the state file holds are not recorded again."""
    recorded: Recorded = []
    for index, (stage, body) in enumerate(bodies):
        key = f"{kind}:{index}"
        if key not in state.matters:
            created = await seeder.call("intake", "POST", path, user="operator1", json=body)
            state.record(key, created)
            await done(key)
        recorded.append((key, stage, state.matters[key]))
    return recorded


async def _advance_all(
    state: SeedState,
    done: Hook,
    recorded: Recorded,
    step: Callable[[Stage, dict[str, Any]], Awaitable[None]],
) -> None:
    async def one(key: str, stage: Stage, matter: dict[str, Any]) -> None:
        marker = f"advanced:{key}"
        if not state.has(marker):
            await step(stage, matter)
            await done(marker)

    await _all_or_none(one(key, stage, matter) for key, stage, matter in recorded)


async def _all_or_none(steps: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run ``steps`` together; the first failure (or a cancellation) stops the others, then is raised."""
    tasks = [asyncio.ensure_future(step) for step in steps]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            error = task.exception()
            if error is not None:
                raise error
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def advance(seeder: Seeder, stage: Stage, matter: dict[str, Any]) -> None:
    case_id = matter["id"]
    if matter.get("repeat_of"):
        return  # a repeat of an open matter is worked with it, not on its own
    if stage == Stage.NEW:
        await seeder.task(case_id)
    elif stage in (Stage.CLAIMED, Stage.OVERDUE):
        await seeder.claim(case_id)
    elif stage == Stage.EXTENSION:
        task, inspector = await seeder.claim(case_id)
        # 409: a run cut short had already asked for it.
        await seeder.call(
            "verification",
            "POST",
            f"/api/v1/tasks/{task['id']}/extensions",
            user=inspector,
            ok=(200, 201, 409),
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
    code, secret = matter["tracking_code"], matter["query_secret"]
    if await seeder.status_now(code, secret) not in ANSWERED_OR_LATER:
        outcome = "unsubstantiated" if stage == Stage.REOPENED else "partly_substantiated"
        summary = FINDINGS["unsubstantiated" if stage == Stage.REOPENED else "partly"]
        await seeder.find(case_id, outcome, summary)
        await seeder.approve(case_id)
        await seeder.public_status(code, secret, "answered")
    if stage == Stage.CLOSED and await seeder.status_now(code, secret) == "answered":
        await seeder.call(
            "feedback",
            "POST",
            "/api/v1/public/rating",
            json={"tracking_code": code, "query_secret": secret, "rating": "satisfied"},
        )
    elif stage == Stage.REOPENED:
        if await seeder.status_now(code, secret) == "answered":
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
    code, secret = matter["tracking_code"], matter["query_secret"]
    if await seeder.status_now(code, secret) in ANSWERED_OR_LATER:
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
        # 409: a run cut short had already marked it.
        await seeder.call(
            "verification",
            "POST",
            f"/api/v1/ledger/{oldest['id']}/marks",
            user="supervisor1",
            ok=(200, 201, 409),
            json={"mark": "supervised", "note": "超期未办结，列为督办件"},
        )


__all__ = ["SeedError", "SeedState", "seed"]
