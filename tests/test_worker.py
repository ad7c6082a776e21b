"""The one background worker: back-off, step timeout, bounded stop, wake on commit, the app's watchdog."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from shared.app import Runtime, create_service_app
from shared.db import CommitSignal, create_engine, create_session_factory
from shared.migrations import upgrade
from shared.settings import ServiceSettings
from shared.worker import BackgroundWorker, StepTimeoutError
from tests.support import TEST_SECRET_KEY, eventually, free_port

woken = CommitSignal("test-worker")


class Steps:
    """A step function that records when it ran and does what the test tells it to."""

    def __init__(self, *, fail_first: int = 0, hang_first: int = 0, more: bool = False) -> None:
        self.calls: list[float] = []
        self.fail_first = fail_first
        self.hang_first = hang_first
        self.more = more

    async def __call__(self) -> bool:
        self.calls.append(time.monotonic())
        if len(self.calls) <= self.hang_first:
            await asyncio.sleep(3600)
        if len(self.calls) <= self.fail_first:
            raise RuntimeError(f"failure {len(self.calls)}")
        return self.more


@pytest.fixture
async def stopping() -> AsyncIterator[list[BackgroundWorker]]:
    """Workers a test started; stopped afterwards whatever the test did."""
    workers: list[BackgroundWorker] = []
    yield workers
    for worker in workers:
        await worker.stop(timeout=1.0)


def started(workers: list[BackgroundWorker], **kwargs: object) -> BackgroundWorker:
    worker = BackgroundWorker(**kwargs)  # type: ignore[arg-type]
    worker.start()
    workers.append(worker)
    return worker


async def test_failures_back_off_exponentially_and_a_success_resets_them(
    stopping: list[BackgroundWorker],
) -> None:
    steps = Steps(fail_first=4)
    worker = started(
        stopping,
        name="flaky",
        step=steps,
        idle_seconds=60,
        step_timeout=1.0,
        backoff_base=0.05,
        backoff_max=0.15,
    )
    await eventually(lambda: _true(len(steps.calls) >= 5), timeout=5, what="five steps")
    gaps = [later - earlier for earlier, later in zip(steps.calls, steps.calls[1:], strict=False)]
    # 0.05, 0.1, then capped at 0.15: growing, never beyond the cap (with slack for a loaded machine).
    assert gaps[0] >= 0.04 and gaps[1] >= 0.09 and gaps[2] >= 0.14 and gaps[3] >= 0.14
    assert gaps[3] < 0.35, "uncapped, the fourth back-off would be 0.4 s"
    health = worker.health
    assert health.consecutive_failures == 0 and health.last_error is None
    assert health.last_progress_at is not None and not health.stuck


async def test_failure_is_counted_and_reported(stopping: list[BackgroundWorker]) -> None:
    steps = Steps(fail_first=1000)
    worker = started(
        stopping, name="broken", step=steps, idle_seconds=60, step_timeout=1.0, backoff_base=0.01
    )
    await eventually(lambda: _true(worker.health.consecutive_failures >= 3), timeout=5, what="three failures")
    health = worker.health
    assert health.last_error is not None and "RuntimeError" in health.last_error
    assert health.last_progress_at is None and not health.stuck


async def test_a_hung_step_is_cancelled_at_its_timeout_and_counted_failed(
    stopping: list[BackgroundWorker],
) -> None:
    steps = Steps(hang_first=1)
    worker = started(stopping, name="hangs", step=steps, idle_seconds=60, step_timeout=0.2, backoff_base=0.01)
    await eventually(lambda: _true(len(steps.calls) >= 2), timeout=5, what="the step after the hung one")
    assert 0.2 <= steps.calls[1] - steps.calls[0] < 1.5
    await eventually(lambda: _true(worker.health.last_progress_at is not None), timeout=5, what="progress")
    assert worker.health.consecutive_failures == 0


async def test_step_timeout_error_names_the_bound(stopping: list[BackgroundWorker]) -> None:
    steps = Steps(hang_first=1000)
    worker = started(stopping, name="hangs", step=steps, idle_seconds=60, step_timeout=0.1, backoff_base=0.01)
    await eventually(
        lambda: _true(worker.health.consecutive_failures >= 1), timeout=5, what="a timed-out step"
    )
    assert StepTimeoutError.__name__ in (worker.health.last_error or "")


async def test_stop_lets_a_short_step_finish_and_returns_in_time_from_a_hung_one() -> None:
    finished: list[bool] = []

    async def short_step() -> bool:
        await asyncio.sleep(0.1)
        finished.append(True)
        return False

    worker = BackgroundWorker(name="short", step=short_step, idle_seconds=60, step_timeout=5)
    worker.start()
    await asyncio.sleep(0.02)
    await worker.stop(timeout=2.0)
    assert finished == [True]

    async def deaf_step() -> bool:
        # Ignores cancellation for a while, like a call stuck where cancelling cannot reach.
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                await asyncio.sleep(0.5)
                raise

    worker = BackgroundWorker(name="deaf", step=deaf_step, idle_seconds=60, step_timeout=60)
    worker.start()
    await asyncio.sleep(0.02)
    began = time.monotonic()
    await worker.stop(timeout=0.3)
    assert time.monotonic() - began < 0.5
    assert not worker.running
    await asyncio.sleep(0.5)  # let the abandoned step end before the loop closes


async def test_more_work_runs_at_once_and_idle_waits(stopping: list[BackgroundWorker]) -> None:
    busy = Steps(more=True)
    started(stopping, name="busy", step=busy, idle_seconds=60, step_timeout=1)
    idle = Steps()
    started(stopping, name="idle", step=idle, idle_seconds=60, step_timeout=1)
    await asyncio.sleep(0.2)
    assert len(busy.calls) > 10
    assert len(idle.calls) == 1


async def test_a_commit_that_concerns_the_worker_wakes_it(
    tmp_path: Path, stopping: list[BackgroundWorker]
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'wake.db'}")
    sessions = create_session_factory(engine)
    try:
        steps = Steps()
        worker = started(
            stopping,
            name="woken",
            step=steps,
            idle_seconds=60,
            step_timeout=1,
            wake_signal=woken,
            engine=engine,
        )
        await eventually(lambda: _true(len(steps.calls) == 1), timeout=5, what="the first step")
        async with sessions() as session, session.begin():
            pass  # a commit that does not concern the worker
        await asyncio.sleep(0.1)
        assert len(steps.calls) == 1
        async with sessions() as session, session.begin():
            woken.mark(session)
        await eventually(lambda: _true(len(steps.calls) == 2), timeout=2, what="the woken step")
        worker.wake()
        await eventually(lambda: _true(len(steps.calls) == 3), timeout=2, what="the step after wake()")
    finally:
        await engine.dispose()


async def test_a_worker_stuck_in_a_step_is_reported_and_restarted_by_the_app(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'watchdog.db'}"
    await asyncio.to_thread(upgrade, "verification", url)
    calls: list[float] = []

    async def step() -> bool:
        calls.append(time.monotonic())
        if len(calls) == 1:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                await asyncio.sleep(3600)  # deaf to the step timeout: only the watchdog's restart helps
        return False

    async def add_worker(runtime: Runtime) -> None:
        runtime.add_worker(BackgroundWorker(name="deaf", step=step, idle_seconds=0.05, step_timeout=0.2))

    settings = ServiceSettings(
        service_name="watchdog-test",
        database_url=url,
        secret_key=TEST_SECRET_KEY,
        nats_url=f"nats://127.0.0.1:{free_port()}",  # nobody there: the bus never comes
        worker_stuck_seconds=0.5,
        stop_timeout_seconds=1.0,
        log_json=True,
    )
    app = create_service_app(settings=settings, title="watchdog", routers=[], on_startup=[add_worker])
    with capture_logs() as logs:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
        ):

            async def stuck_on_readyz() -> bool:
                body = (await client.get("/readyz")).json()
                return "worker deaf is stuck" in body["reasons"] and body["workers"]["deaf"]["stuck"]

            await eventually(stuck_on_readyz, timeout=5, what="/readyz to report the stuck worker")
            await eventually(lambda: _true(len(calls) >= 3), timeout=5, what="steps after the restart")
            response = await client.get("/readyz")
            body = response.json()
            assert response.status_code == 503 and body["bus"] is False
            assert body["workers"]["deaf"]["stuck"] is False
            assert body["workers"]["deaf"]["last_progress_at"] is not None
            assert body["reasons"] == ["NATS is not connected"]
    restarts = [entry for entry in logs if entry["event"] == "background worker stuck; restarting it"]
    assert restarts and restarts[0]["log_level"] == "error" and restarts[0]["worker"] == "deaf"


async def _true(value: bool) -> bool:
    return value
