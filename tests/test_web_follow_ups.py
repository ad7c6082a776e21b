"""The operators' 回访 page in a real browser: a call due is listed and its outcome recorded.

The browser and page set-up are tests/web_support.py's; the services run without the demo
matters (this file makes its own), so the list holds just the calls made here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support import NatsServer, System, eventually, running_system
from tests.web_support import answered_by_api, browser, needs_chromium, open_session, record, reload_until

__all__ = ["browser", "open_session"]  # fixtures used by name below

pytestmark = needs_chromium


@pytest.fixture(scope="module")
async def web(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[System]:
    async with running_system(
        backend="sqlite", root=tmp_path_factory.mktemp("web-follow-ups"), nats_url=nats_server.url
    ) as system:
        yield system


async def served_by_phone(system: System, case_id: str) -> None:
    """No SMS gateway here: the operator phones the answer through and records it, as today."""

    async def approved() -> dict[str, Any] | None:
        response = await system.call(
            "feedback", "GET", "/api/v1/answers", as_user="supervisor1", params={"case_id": case_id}
        )
        found = [a for a in response.json() if a["status"] == "delivered"]
        return found[0] if found else None

    answer = await eventually(approved, what="approved answer")
    recorded = await system.call(
        "feedback",
        "POST",
        f"/api/v1/answers/{answer['id']}/deliveries",
        as_user="operator1",
        json={"channel": "phone", "note": "已电话告知投诉人核查结果"},
    )
    assert recorded.status_code == 201, recorded.text


async def test_operator_records_a_follow_up_call_on_the_follow_up_page(
    open_session: Any, web: System
) -> None:
    created = await record(web)
    await answered_by_api(web, created, "经调取执法记录仪视频，民警执法过程规范，未发现投诉所反映问题。")
    await served_by_phone(web, created["id"])

    operator = await open_session("operator1")
    await operator.goto("feedback", "/follow-ups")
    row = f"tr[data-case='{created['id']}']"
    await reload_until(operator, row)
    page = operator.page
    assert created["tracking_code"] in await page.inner_text(row)
    assert "王建国" not in await operator.text()  # no identity on the list

    # 不满意 without a reason: the field is named and nothing is recorded.
    operator.expected_statuses.add(422)
    await page.select_option(f"{row} .f-outcome", "unsatisfied")
    await page.click(f"{row} button[type=submit]")
    error = page.locator(f"{row} [data-field=reason] .field-error")
    await error.wait_for()
    assert "不满意" in await error.inner_text()

    await page.select_option(f"{row} .f-outcome", "basically_satisfied")
    await page.click(f"{row} button[type=submit]")
    await page.wait_for_selector(row, state="detached")
    assert "感谢您的评价" in await operator.text()

    async def closed() -> bool:
        response = await web.call(
            "intake", "GET", f"/api/v1/complaints/{created['id']}", as_user="supervisor1"
        )
        return bool(response.json()["status"] == "closed")

    await eventually(closed, what="matter closed by the follow-up rating")
