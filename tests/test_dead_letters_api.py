"""The dead-letter API and page of the running services: supervisors only, reasons required.

The four services run in this process (``tests.support.running_system``, SQLite); a poison
event published on the bus is parked by each consumer of its subject.  The browser test
(Chromium via Playwright, as ``tests/web_support.py``) is skipped where there is none.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from uuid import uuid4

import nats
import pytest

from shared.outbox import HEADER_EVENT_TYPE, HEADER_EVENT_VERSION, HEADER_MSG_ID
from tests.support import System, eventually

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))


async def publish_poison(system: System) -> str:
    """A MatterReclassified that is JSON with a case id but no valid event: parked on first delivery."""
    case_id = f"dl-{uuid4().hex[:10]}"
    payload = {"case_id": case_id, "event_id": str(uuid4()), "from_kind": "complaint", "to_kind": "nonsense"}
    nc = await nats.connect(system.nats_url)
    try:
        headers = {
            HEADER_MSG_ID: payload["event_id"],
            HEADER_EVENT_TYPE: "MatterReclassified",
            HEADER_EVENT_VERSION: "1",
        }
        await nc.jetstream(timeout=5.0).publish(
            "sv.MatterReclassified.v1", json.dumps(payload).encode(), headers=headers
        )
    finally:
        await nc.drain()
    return case_id


async def parked_in(system: System, service: str, case_id: str) -> list[dict[str, Any]]:
    async def probe() -> list[dict[str, Any]] | None:
        response = await system.call(service, "GET", "/api/v1/dead-letters", as_user="supervisor1")
        assert response.status_code == 200, response.text
        found = [letter for letter in response.json() if letter["case_id"] == case_id]
        return found or None

    return list(await eventually(probe, timeout=20, what=f"{service} to park the poison event"))


async def test_supervisor_lists_discards_and_replays_a_services_dead_letters(system: System) -> None:
    case_id = await publish_poison(system)
    (letter,) = await parked_in(system, "routing", case_id)
    assert letter["service"] == "routing" and letter["consumer"] == "routing-intake"
    assert letter["subject"] == "sv.MatterReclassified.v1" and letter["event_type"] == "MatterReclassified"
    assert letter["reason"].startswith("invalid event") and letter["tries"] == 1
    assert letter["status"] == "parked" and letter["parked_at"]

    async def readiness_counts(expected: int) -> bool:
        details = (await system.client("routing").get("/readyz")).json()
        return bool(details.get("dead_letters_parked") == expected)

    await eventually(lambda: readiness_counts(1), what="/readyz to count the parked event")
    assert (await system.client("routing").get("/readyz")).status_code == 200

    path = f"/api/v1/dead-letters/{letter['id']}"
    missing = await system.call(
        "routing",
        "POST",
        path + "/discard",
        as_user="supervisor1",
        json={},
        headers={"Accept-Language": "zh-CN"},
    )
    assert missing.status_code == 422
    assert (
        missing.json()["detail"][0]["field"] == "reason"
        and missing.json()["detail"][0]["message"] == "必填项"
    )
    discarded = await system.call(
        "routing", "POST", path + "/discard", as_user="supervisor1", json={"reason": "测试用的无效事件"}
    )
    assert discarded.status_code == 200, discarded.text
    assert (
        discarded.json()["status"] == "discarded"
        and discarded.json()["decision_reason"] == "测试用的无效事件"
    )
    await eventually(lambda: readiness_counts(0), what="/readyz to drop the discarded event")
    again = await system.call("routing", "POST", path + "/replay", as_user="supervisor1")
    assert again.status_code == 409
    trail = await system.call("routing", "GET", f"/api/v1/audit/{case_id}", as_user="supervisor1")
    (entry,) = [e for e in trail.json()["entries"] if e["action"] == "dead_letter_discarded"]
    assert entry["actor"] == "supervisor1" and entry["reason"] == "测试用的无效事件"

    # Feedback parked it too; a replay of an event still invalid is parked again, as a new dead letter.
    (theirs,) = await parked_in(system, "feedback", case_id)
    replayed = await system.call(
        "feedback", "POST", f"/api/v1/dead-letters/{theirs['id']}/replay", as_user="supervisor1"
    )
    assert replayed.status_code == 200 and replayed.json()["status"] == "replayed"
    letters = await parked_in(system, "feedback", case_id)
    await eventually(lambda: _two(system, case_id), what="the replay to be parked again")
    assert {x["status"] for x in letters} <= {"parked", "replayed"}
    everything = await system.call(
        "feedback", "POST", "/api/v1/dead-letters/replay-all", as_user="supervisor1"
    )
    assert everything.status_code == 200 and everything.json()["replayed"] >= 1
    # Routing's list is routing's: feedback's dead letter is not found there.
    assert (
        await system.call(
            "routing", "POST", f"/api/v1/dead-letters/{theirs['id']}/replay", as_user="supervisor1"
        )
    ).status_code == 404


async def _two(system: System, case_id: str) -> bool:
    response = await system.call("feedback", "GET", "/api/v1/dead-letters", as_user="supervisor1")
    return len([x for x in response.json() if x["case_id"] == case_id]) >= 2


async def test_only_supervisors_reach_the_dead_letters(system: System) -> None:
    for user in ("operator1", "inspector-411600"):
        for method, path in (
            ("GET", "/api/v1/dead-letters"),
            ("POST", "/api/v1/dead-letters/replay-all"),
            ("POST", "/api/v1/dead-letters/1/replay"),
        ):
            response = await system.call("verification", method, path, as_user=user)
            assert response.status_code == 403, (user, path, response.text)
        discard = await system.call(
            "verification", "POST", "/api/v1/dead-letters/1/discard", as_user=user, json={"reason": "无权"}
        )
        assert discard.status_code == 403
    assert (await system.client("intake").get("/api/v1/dead-letters")).status_code == 401


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"browser tests need Chromium at {CHROMIUM}")
async def test_the_page_lists_every_services_parked_events(system: System) -> None:
    from playwright.async_api import async_playwright

    case_id = await publish_poison(system)
    await parked_in(system, "routing", case_id)
    await parked_in(system, "feedback", case_id)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        try:
            page = await (await browser.new_context(locale="zh-CN", timezone_id="Asia/Shanghai")).new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            await page.goto(system.urls["intake"] + "/login")
            await page.fill("#username", "supervisor1")
            await page.fill("#password", "demo")
            async with page.expect_navigation():
                await page.press("#password", "Enter")
            await page.goto(system.urls["verification"] + "/dead-letters")
            assert "死信队列" in await page.inner_text("nav.mainnav")
            routing_row = page.locator(f"[data-service='routing'] tr:has-text('{case_id}')")
            await routing_row.wait_for(timeout=15_000)
            assert "routing-intake" in await routing_row.inner_text()
            assert "invalid event" in await routing_row.inner_text()
            assert await page.locator(f"[data-service='feedback'] tr:has-text('{case_id}')").count() == 1
            # Discarding without a reason is stopped at the field; with one, the row shows it.
            await routing_row.locator("button:has-text('丢弃')").click()
            assert "请填写丢弃理由" in await routing_row.inner_text()
            await routing_row.locator("input[name=reason]").fill("页面测试丢弃")
            await routing_row.locator("button:has-text('丢弃')").click()
            await page.locator(
                f"[data-service='routing'] tr:has-text('{case_id}'):has-text('已丢弃')"
            ).wait_for(timeout=15_000)
            assert not errors, errors
        finally:
            await browser.close()
