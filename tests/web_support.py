"""The browser tests' common part: Chromium through Playwright, a signed-in page per role
(``open_session``), and the API calls that set up what the pages then show."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import pytest

from tests import fixtures
from tests.support import System, eventually

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--lang=zh-CN",  # date and time fields in the Chinese layout, as on the bureau's desktops
]
SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"browser tests need Chromium at {CHROMIUM} (Debian: apt-get install chromium; or set CHROMIUM_PATH)",
)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


async def chart_series(page: Any, node_id: str) -> list[dict[str, Any]] | None:
    """The series an ECharts chart draws in the node (charts.js), as the page holds them."""
    return cast(
        "list[dict[str, Any]] | None",
        await page.evaluate(
            """id => { const chart = SV.chart.of(document.getElementById(id));
              return chart ? chart.getOption().series.map(s => ({ type: s.type, name: s.name, data: s.data })) : null; }""",
            node_id,
        ),
    )


class Session:
    """One person at one browser: their pages, and what went wrong on them."""

    def __init__(self, context: Any, page: Any, system: System) -> None:
        self.context = context
        self.page = page
        self.system = system
        self.errors: list[str] = []
        self.outside: list[str] = []
        # HTTP statuses a test provokes on purpose (the browser logs each as an error).
        self.expected_statuses: set[int] = set()

    def url(self, service: str, path: str) -> str:
        return self.system.urls[service] + path

    async def goto(self, service: str, path: str) -> None:
        await self.page.goto(self.url(service, path))

    async def sign_in(self, username: str, password: str = "demo") -> None:
        page = self.page
        if "/login" not in page.url:
            await self.goto("intake", "/login")
        await page.fill("#username", username)
        await page.fill("#password", password)
        async with page.expect_navigation():
            await page.press("#password", "Enter")

    async def text(self) -> str:
        return str(await self.page.inner_text("body"))

    async def shot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await self.page.wait_for_load_state("networkidle")
        await self.page.screenshot(path=str(SCREENSHOTS / name), full_page=True)

    def check(self) -> None:
        errors = [
            e for e in self.errors if not any(f"status of {code} " in e for code in self.expected_statuses)
        ]
        assert not errors, f"errors in the page: {errors}"
        assert not self.outside, f"requests outside the bureau's network: {self.outside}"


@pytest.fixture
async def open_session(web: System, browser: Any) -> AsyncIterator[Callable[..., Awaitable[Session]]]:
    sessions: list[Session] = []

    async def make(user: str | None = None, *, viewport: dict[str, int] = DESKTOP) -> Session:
        context = await browser.new_context(
            locale="zh-CN", timezone_id="Asia/Shanghai", viewport=viewport, accept_downloads=True
        )
        page = await context.new_page()
        session = Session(context, page, web)
        page.on("pageerror", lambda error: session.errors.append(str(error)))
        page.on(
            "console",
            lambda message: session.errors.append(message.text) if message.type == "error" else None,
        )

        async def only_local(route: Any) -> None:
            # The bureau's network is closed: everything a page loads comes from the services.
            host = urlsplit(route.request.url).hostname
            if host in ("127.0.0.1", "localhost") or route.request.url.startswith(("data:", "blob:")):
                await route.continue_()
            else:
                session.outside.append(route.request.url)
                await route.abort()

        await page.route("**/*", only_local)
        if user:
            await session.sign_in(user)
        sessions.append(session)
        return session

    yield make
    for session in sessions:
        await session.context.close()
    for session in sessions:
        session.check()


# --------------------------------------------------------------------------- helpers via the API


async def record(system: System, **overrides: Any) -> dict[str, Any]:
    # Received now (the sample's fixed date would already be past every deadline).
    body = fixtures.complaint(**{"received_at": None, **overrides})
    response = await system.call("intake", "POST", "/api/v1/complaints", as_user="operator1", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def task_of(system: System, case_id: str, statuses: tuple[str, ...] = ("open",)) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        response = await system.call(
            "verification", "GET", "/api/v1/tasks", as_user="supervisor1", params={"case_id": case_id}
        )
        return next((t for t in response.json() if t["status"] in statuses), None)

    return dict(await eventually(probe, what=f"task in {statuses}"))


async def claimed_and_found(system: System, case_id: str, finding: dict[str, Any]) -> dict[str, Any]:
    """The matter's open task claimed by its team's inspector, who records ``finding``; the task."""
    task = await task_of(system, case_id)
    inspector = f"inspector-{task['team_code']}"
    claimed = await system.call(
        "verification", "POST", f"/api/v1/tasks/{task['id']}/claim", as_user=inspector
    )
    assert claimed.status_code == 200, claimed.text
    found = await system.call(
        "verification", "POST", f"/api/v1/tasks/{task['id']}/finding", as_user=inspector, json=finding
    )
    assert found.status_code == 200, found.text
    return task


async def first_listed(system: System, path: str, params: dict[str, Any], *, what: str) -> dict[str, Any]:
    """The first row feedback lists at ``path`` with ``params`` for the supervisor, once there is one."""

    async def probe() -> dict[str, Any] | None:
        response = await system.call("feedback", "GET", path, as_user="supervisor1", params=params)
        return response.json()[0] if response.json() else None

    return dict(await eventually(probe, what=what))


async def answered_by_api(system: System, created: dict[str, Any], summary: str) -> None:
    await claimed_and_found(system, created["id"], {"outcome": "partly_substantiated", "summary": summary})

    answer = await first_listed(
        system,
        "/api/v1/answers",
        {"case_id": created["id"], "status": "pending_approval"},
        what="draft answer",
    )
    approved = await system.call(
        "feedback", "POST", f"/api/v1/answers/{answer['id']}/approve", as_user="supervisor1"
    )
    assert approved.status_code == 200, approved.text


async def reload_until(session: Session, selector: str, *, timeout: float = 20.0) -> None:
    async def probe() -> bool:
        await session.page.reload()
        await session.page.wait_for_load_state("networkidle")
        return bool(await session.page.locator(selector).count())

    await eventually(probe, timeout=timeout, interval=0.3, what=selector)
