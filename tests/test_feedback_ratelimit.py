"""The public query's limits: a guesser of query secrets gets 429 with Retry-After; a person does not.

Failed attempts count, per client address and per tracking code, in the feedback database that
every instance shares; the right secret always passes and never counts.  The limits here are the
defaults scaled down (5 failures per code and 10 per address in a window of 1 s, where the defaults
are 20 and 10 in 600 s): one request every 0.2 s plays the person refreshing once a second, a burst
plays the guesser, and the test does not wait minutes.  X-Forwarded-For stands for distinct clients,
with feedback told it sits behind one proxy.  The last part drives the limiter on a real database
with a clock the test moves.

A window of 1 s drains while a loaded machine is still answering a burst: the allowance would then
be a range, and a slow enough burst would never be refused at all.  So feedback's limiters read
``CLOCK``, the wall clock except while a burst is sent, when it stands still: the burst is counted as
the instant it stands for and gets exactly its allowance, and between bursts the windows still pass
in real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.feedback.context import FeedbackContext
from services.feedback.models import AttemptCounter
from services.feedback.ratelimit import TOO_MANY, Allowance, PublicLimiter, TooManyAttempts, purge
from services.feedback.settings import FeedbackSettings
from shared.db import create_engine
from shared.migrations import upgrade
from tests import fixtures
from tests.databases import Databases
from tests.support import (
    TEST_SECRET_KEY,
    InProcessServices,
    NatsServer,
    System,
    eventually,
    free_port,
)
from tests.test_feedback_support import create, feedback_system, outside_world_env

PERSON = "198.51.100.10"
PER_CODE, PER_ADDRESS, WINDOW = 5, 10, 1.0


class BurstClock:
    """The wall clock, held still while a burst is sent (see the module's docstring)."""

    def __init__(self) -> None:
        self.held: float | None = None

    def __call__(self) -> float:
        return time.time() if self.held is None else self.held

    @contextlib.contextmanager
    def still(self) -> Iterator[None]:
        # Held at the present, never ahead of it, and released forwards: every instance and row
        # still sees time only move on.
        self.held = time.time()
        try:
            yield
        finally:
            self.held = None


CLOCK = BurstClock()


def use_clock(app: Any) -> None:
    app.state.feedback.limiter.clock = CLOCK


async def burst(system: System, bodies: list[dict[str, Any]], client: str, path: str = "lookup") -> list[Any]:
    """Send all at once, counted at one instant."""
    with CLOCK.still():
        return list(await asyncio.gather(*(lookup(system, b, client, path) for b in bodies)))


@pytest.fixture(scope="module")
async def system(
    backend: str, nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[System]:
    env = outside_world_env(gateway=None, mailbox=None) | {
        "PUBLIC_RATE_PER_ADDRESS": "10",
        "PUBLIC_RATE_PER_CODE": "5",
        "PUBLIC_RATE_WINDOW_SECONDS": "1",
        "PUBLIC_TRUSTED_PROXY_HOPS": "1",
    }
    async with feedback_system(
        backend=backend,
        root=tmp_path_factory.mktemp(f"feedback-ratelimit-{backend}"),
        nats_url=nats_server.url,
        env=env,
    ) as running:
        assert running.services is not None
        use_clock(running.services.servers["feedback"].config.app)
        yield running


async def lookup(system: System, body: dict[str, Any], client: str, path: str = "lookup") -> Any:
    return await system.call(
        "feedback", "POST", f"/api/v1/public/{path}", json=body, headers={"X-Forwarded-For": client}
    )


async def known_complaint(system: System) -> dict[str, Any]:
    created = await create(system, complainant={"phone": fixtures.unique_mobile()})
    secrets = {"tracking_code": created["tracking_code"], "query_secret": created["query_secret"]}

    async def known() -> bool:
        # Slower than the bucket refills, so waiting here never eats into the test's budget.
        await asyncio.sleep(WINDOW / PER_CODE * 1.5)
        return (await lookup(system, secrets, PERSON)).status_code == 200

    await eventually(known, what="feedback knows the complaint")
    await asyncio.sleep(WINDOW)  # a full bucket for what the test does next
    return created


async def test_guessing_secrets_of_one_code_gets_429_with_retry_after(system: System) -> None:
    created = await known_complaint(system)
    guesses = [
        {"tracking_code": created["tracking_code"], "query_secret": f"GUESS-{n:05d}"} for n in range(40)
    ]
    responses = await burst(system, guesses, "203.0.113.66")
    statuses = [r.status_code for r in responses]
    assert set(statuses) == {404, 429}
    assert statuses.count(404) == PER_CODE, statuses
    limited = next(r for r in responses if r.status_code == 429)
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.headers["cache-control"] == "no-store"
    assert limited.json()["detail"] == "查询过于频繁，请稍后再试"

    # The rating and the review request are held to the same limits.
    ratings = await burst(system, [{**g, "rating": "satisfied"} for g in guesses], "203.0.113.67", "rating")
    assert 429 in {r.status_code for r in ratings}
    reviews = await burst(
        system, [{**g, "reason": "要求复查"} for g in guesses], "203.0.113.68", "review-request"
    )
    assert 429 in {r.status_code for r in reviews}

    await asyncio.sleep(int(limited.headers["retry-after"]))
    owner = {"tracking_code": created["tracking_code"], "query_secret": created["query_secret"]}
    assert (await lookup(system, owner, PERSON)).status_code == 200


async def test_scanning_codes_from_one_address_gets_429_and_learns_nothing(system: System) -> None:
    # On an instance with a minute-long window, so no refill during the burst blurs the count
    # however slowly a loaded machine answers it.
    probes = [{"tracking_code": f"C2611{n:08d}", "query_secret": "AAAAA-BBBBB"} for n in range(40)]
    async with another_instance(system, SLOW) as client:
        responses = await asyncio.gather(*(post(client, body, "203.0.113.99") for body in probes))
        statuses = [r.status_code for r in responses]
        assert set(statuses) == {404, 429}
        assert statuses.count(404) == int(SLOW["PUBLIC_RATE_PER_ADDRESS"]), statuses
        not_found = [r.json() for r in responses if r.status_code == 404]
        assert all(body == not_found[0] for body in not_found)
        # Another client is not held up by this one.
        assert (await post(client, probes[-1], "203.0.113.100")).status_code == 404


async def test_a_person_refreshing_steadily_is_never_limited(system: System) -> None:
    created = await known_complaint(system)
    owner = {"tracking_code": created["tracking_code"], "query_secret": created["query_secret"]}
    statuses = []
    for _ in range(20):
        statuses.append((await lookup(system, owner, "198.51.100.20")).status_code)
        await asyncio.sleep(WINDOW / PER_CODE)
    assert statuses == [200] * 20


# Another instance on the same database and bus, as a load balancer would add, with a window long
# enough that a test on a loaded machine sees exact counts.
SLOW = {"PUBLIC_RATE_PER_ADDRESS": "3", "PUBLIC_RATE_PER_CODE": "3", "PUBLIC_RATE_WINDOW_SECONDS": "60"}


@contextlib.asynccontextmanager
async def another_instance(system: System, env: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    port = free_port()
    services = InProcessServices()
    await services.start("feedback", system.env | env | {"FEEDBACK_PORT": str(port)})
    # The same clock as the first instance, as servers kept in time would read.
    use_clock(services.servers["feedback"].config.app)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=20.0) as client:
            yield client
    finally:
        await services.stop_all()


async def post(client: httpx.AsyncClient, body: dict[str, Any], address: str, path: str = "lookup") -> Any:
    return await client.post(f"/api/v1/public/{path}", json=body, headers={"X-Forwarded-For": address})


def assert_too_many(response: Any, *, at_most: float) -> int:
    assert response.status_code == 429, response.text
    assert response.json()["detail"] == "查询过于频繁，请稍后再试"
    assert response.headers["cache-control"] == "no-store"
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= math.ceil(at_most)
    return retry_after


async def test_a_code_under_attack_still_answers_the_right_secret(system: System) -> None:
    created = await known_complaint(system)
    code = created["tracking_code"]
    owner = {"tracking_code": code, "query_secret": created["query_secret"]}
    async with another_instance(system, SLOW) as client:
        # One guess from each of many addresses: no address reaches its allowance, the code does.
        statuses = [
            (await post(client, {"tracking_code": code, "query_secret": f"GUESS-{n:05d}"}, f"203.0.114.{n}"))
            for n in range(6)
        ]
        assert [r.status_code for r in statuses] == [404, 404, 404, 429, 429, 429]
        # Three failures in, two more counted: the next fits once two have drained (20 s each).
        assert_too_many(statuses[-1], at_most=60 + 20)

        # The right secret passes, from a fresh address or from one of the guessers', and never counts.
        for address in ("203.0.114.200", "203.0.114.0", "203.0.114.200"):
            answered = await post(client, owner, address)
            assert answered.status_code == 200, answered.text
            assert answered.json()["tracking_code"] == code
        rated = await post(client, {**owner, "rating": "satisfied"}, "203.0.114.201", "rating")
        assert rated.status_code != 429, rated.text
        wrong = await post(client, {"tracking_code": code, "query_secret": "WRONG-00000"}, "203.0.114.202")
        assert wrong.status_code == 429


async def test_an_address_past_its_allowance_is_refused_even_the_right_secret(system: System) -> None:
    created = await known_complaint(system)
    owner = {"tracking_code": created["tracking_code"], "query_secret": created["query_secret"]}
    guesser = "203.0.115.7"
    async with another_instance(system, SLOW) as client:
        probes = [{"tracking_code": f"C2612{n:08d}", "query_secret": "AAAAA-BBBBB"} for n in range(4)]
        statuses = [(await post(client, body, guesser)).status_code for body in probes]
        assert statuses == [404, 404, 404, 429]

        # The address comes first: the right secret from it waits too, so no guess is ever confirmed.
        assert_too_many(await post(client, owner, guesser), at_most=60 + 20)
        # Nobody else is held up by it.
        assert (await post(client, owner, "203.0.115.8")).status_code == 200


async def test_an_address_is_answered_again_once_its_window_passes(system: System) -> None:
    created = await known_complaint(system)
    owner = {"tracking_code": created["tracking_code"], "query_secret": created["query_secret"]}
    guesser = "203.0.115.9"
    probes = [
        {"tracking_code": f"C2613{n:08d}", "query_secret": "AAAAA-BBBBB"} for n in range(3 * PER_ADDRESS)
    ]
    responses = await burst(system, probes, guesser)
    assert [r.status_code for r in responses].count(404) == PER_ADDRESS
    # However hard it hammered, it owes at most one window past its allowance.
    waits = [
        assert_too_many(r, at_most=WINDOW + WINDOW / PER_ADDRESS) for r in responses if r.status_code != 404
    ]
    assert len(waits) == len(probes) - PER_ADDRESS

    await asyncio.sleep(max(waits))
    assert (await lookup(system, owner, guesser)).status_code == 200
    assert (await lookup(system, probes[0], guesser)).status_code == 404


async def test_two_feedback_instances_share_the_counts(system: System) -> None:
    created = await known_complaint(system)
    async with another_instance(system, {}) as client:
        guesses = [
            {"tracking_code": created["tracking_code"], "query_secret": f"GUESS-{n:05d}"} for n in range(40)
        ]
        with CLOCK.still():
            responses = await asyncio.gather(
                *(
                    # Every other guess to the other instance, each from its own address.
                    lookup(system, body, f"203.0.116.{n}") if n % 2 else post(client, body, f"203.0.116.{n}")
                    for n, body in enumerate(guesses)
                )
            )
        statuses = [r.status_code for r in responses]
        # Each instance counting alone would answer 404 to PER_CODE guesses each.
        assert statuses.count(404) == PER_CODE, statuses
        owner = {"tracking_code": created["tracking_code"], "query_secret": created["query_secret"]}
        answered = await post(client, owner, "203.0.116.200")
        assert answered.status_code == 200, answered.text


# --- The limiter on a real database, with a clock the test moves --------------------------------

KEY = "a-test-key-of-the-query-secrets"


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def database_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    databases = Databases(backend, tmp_path)
    url = await databases.url_for("feedback")
    try:
        # The migrations build the table, as on a bureau's database.
        await asyncio.to_thread(upgrade, "feedback", url)
        yield url
    finally:
        await databases.drop_all()


@contextlib.asynccontextmanager
async def instance(url: str) -> AsyncIterator[AsyncEngine]:
    """One feedback instance's connections to the shared database."""
    engine = create_engine(url)
    try:
        yield engine
    finally:
        await engine.dispose()


def limiter(
    clock: Clock, *, per_address: int = 10, per_code: int = 5, window: float = 600.0
) -> PublicLimiter:
    return PublicLimiter(
        per_address=Allowance(failures=per_address, window_seconds=window),
        per_code=Allowance(failures=per_code, window_seconds=window),
        key_secret=KEY,
        clock=clock,
    )


async def fails(limits: PublicLimiter, engine: AsyncEngine, address: str, code: str) -> float | None:
    """Count one failure: None when it fitted, else the Retry-After the 429 carries."""
    try:
        await limits.count_failure(engine=engine, address=address, tracking_code=code)
    except TooManyAttempts as refused:
        assert refused.status_code == 429
        assert refused.detail == TOO_MANY
        return refused.retry_after
    return None


async def address_wait(limits: PublicLimiter, engine: AsyncEngine, address: str) -> float | None:
    async with AsyncSession(engine) as session:
        try:
            await limits.check_address(session=session, address=address)
        except TooManyAttempts as refused:
            return refused.retry_after
    return None


async def rows(engine: AsyncEngine) -> list[AttemptCounter]:
    async with AsyncSession(engine) as session:
        return list(await session.exec(select(AttemptCounter)))


async def test_two_limiters_on_one_database_share_the_counts(database_url: str) -> None:
    clock = Clock()
    async with instance(database_url) as one, instance(database_url) as two:
        first, second = limiter(clock), limiter(clock)
        # One code guessed through both instances, from a new address each time.
        results = [
            await fails(*pair, f"203.0.113.{n}", "C2026110200001")
            for n, pair in enumerate([(first, one), (second, two)] * 3)
        ]
        assert results[:5] == [None] * 5
        # A failure drains in window / allowance; the refused one counts too, so two must drain.
        assert results[5] == pytest.approx(2 * 600.0 / 5)

        # One address through both: the other instance refuses it before the secret is looked at.
        for n in range(10):
            assert await fails(first if n % 2 else second, one if n % 2 else two, PERSON, f"X{n}") is None
        assert await address_wait(first, one, PERSON) == pytest.approx(60.0)
        assert await address_wait(second, two, PERSON) == pytest.approx(60.0)
        assert await address_wait(second, two, "198.51.100.11") is None


async def test_failures_counted_at_the_same_moment_are_never_lost(database_url: str) -> None:
    clock = Clock()
    async with instance(database_url) as one, instance(database_url) as two:
        first, second = limiter(clock, per_code=0), limiter(clock, per_code=0)
        results = await asyncio.gather(
            *(fails(*((first, one) if n % 2 else (second, two)), PERSON, f"C{n}") for n in range(30))
        )
    assert results.count(None) == 10


async def test_allowances_drain_and_windows_expire(database_url: str) -> None:
    clock = Clock()
    async with instance(database_url) as engine:
        limits = limiter(clock)
        for n in range(10):
            assert await fails(limits, engine, PERSON, f"C{n}") is None
        wait = await fails(limits, engine, PERSON, "C10")
        assert wait is not None and wait > 0
        clock.now += wait
        assert await address_wait(limits, engine, PERSON) is None
        assert await fails(limits, engine, PERSON, "C11") is None
        assert await fails(limits, engine, PERSON, "C12") is not None

        # However hard it hammers, an address owes at most one window past its allowance.
        for n in range(100):
            await fails(limits, engine, PERSON, f"D{n}")
        longest = await address_wait(limits, engine, PERSON)
        assert longest == pytest.approx(600.0 + 60.0)
        clock.now += 2 * 600.0
        assert await address_wait(limits, engine, PERSON) is None
        assert [await fails(limits, engine, PERSON, f"E{n}") for n in range(10)] == [None] * 10


async def test_a_person_mistyping_once_a_minute_is_never_stopped_with_the_defaults(database_url: str) -> None:
    settings = FeedbackSettings(secret_key=TEST_SECRET_KEY)
    limits = FeedbackContext.from_settings(settings).limiter
    clock = Clock()
    limits.clock = clock
    async with instance(database_url) as engine:
        for _ in range(60):
            assert await fails(limits, engine, PERSON, "C2026110200001") is None
            clock.now += settings.public_rate_window_seconds / settings.public_rate_per_address
        # A burst from one address: its allowance, then 429 saying when one more would fit.
        burst_results = [await fails(limits, engine, "203.0.113.5", f"C{n}") for n in range(11)]
        assert burst_results[:10] == [None] * 10
        assert burst_results[10] == pytest.approx(2 * 60.0)


async def test_purge_deletes_what_counts_nothing_in_bounded_batches(database_url: str) -> None:
    clock = Clock()
    async with instance(database_url) as engine:
        limits = limiter(clock)
        for n in range(12):
            await fails(limits, engine, f"203.0.113.{n}", f"C{n}")
        assert len(await rows(engine)) == 24
        # The table holds keyed hashes only, never an address or a code.
        assert all(len(row.key) == 64 and "203.0.113" not in row.key for row in await rows(engine))

        clock.now += 601.0
        assert await purge(engine=engine, now=clock.now, batch=10) == 10
        await fails(limits, engine, PERSON, "C2026110200001")  # its own purge takes the rest
        kept = await rows(engine)
        assert {row.key for row in kept} == {
            limits.address_key(PERSON),
            limits.code_key(" c2026110200001 "),
        }


def test_the_counted_address_is_what_the_outermost_trusted_proxy_saw() -> None:
    direct = limiter(Clock())
    assert direct.client_address(peer="192.0.2.1", forwarded_for="203.0.113.9") == "192.0.2.1"
    behind_one = PublicLimiter(
        per_address=Allowance(failures=1, window_seconds=1),
        per_code=Allowance(failures=1, window_seconds=1),
        key_secret=KEY,
        trusted_proxy_hops=1,
    )
    forged = "10.0.0.1, 203.0.113.9"
    assert behind_one.client_address(peer="192.0.2.1", forwarded_for=forged) == "203.0.113.9"
    assert behind_one.client_address(peer="192.0.2.1", forwarded_for=None) == "192.0.2.1"
