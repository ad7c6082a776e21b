"""The public query's limits: a guesser of query secrets gets 429 with Retry-After; a person does not.

The limits here are the defaults scaled down (5 per code and 10 per address in a window of 1 s,
where the defaults are 60 and 120 in 60 s): one request every 0.2 s plays the person refreshing
once a second, a burst plays the guesser, and the test does not wait minutes.
X-Forwarded-For stands for distinct clients, with feedback told it sits behind one proxy.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests import fixtures
from tests.support import NatsServer, System, eventually
from tests.test_feedback_support import create, feedback_system, outside_world_env

PERSON = "198.51.100.10"
PER_CODE, PER_ADDRESS, WINDOW = 5, 10, 1.0


async def burst(
    system: System, bodies: list[dict[str, Any]], client: str, path: str = "lookup"
) -> tuple[list[Any], int]:
    """Send all at once; also say how many could have passed (the bucket refills while they arrive)."""
    started = time.monotonic()
    responses = await asyncio.gather(*(lookup(system, b, client, path) for b in bodies))
    return list(responses), math.ceil((time.monotonic() - started) / WINDOW * PER_CODE)


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
    responses, refilled = await burst(system, guesses, "203.0.113.66")
    statuses = [r.status_code for r in responses]
    assert set(statuses) == {404, 429}
    assert PER_CODE <= statuses.count(404) <= PER_CODE + refilled, statuses
    limited = next(r for r in responses if r.status_code == 429)
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.headers["cache-control"] == "no-store"
    assert limited.json()["detail"] == "查询过于频繁，请稍后再试"

    # The rating and the review request are held to the same limits.
    ratings, _ = await burst(
        system, [{**g, "rating": "satisfied"} for g in guesses], "203.0.113.67", "rating"
    )
    assert 429 in {r.status_code for r in ratings}
    reviews, _ = await burst(
        system, [{**g, "reason": "要求复查"} for g in guesses], "203.0.113.68", "review-request"
    )
    assert 429 in {r.status_code for r in reviews}

    await asyncio.sleep(int(limited.headers["retry-after"]))
    owner = {"tracking_code": created["tracking_code"], "query_secret": created["query_secret"]}
    assert (await lookup(system, owner, PERSON)).status_code == 200


async def test_scanning_codes_from_one_address_gets_429_and_learns_nothing(system: System) -> None:
    probes = [{"tracking_code": f"C2611{n:08d}", "query_secret": "AAAAA-BBBBB"} for n in range(40)]
    responses, refilled = await burst(system, probes, "203.0.113.99")
    statuses = [r.status_code for r in responses]
    assert set(statuses) == {404, 429}
    assert PER_ADDRESS <= statuses.count(404) <= PER_ADDRESS + 2 * refilled, statuses
    not_found = [r.json() for r in responses if r.status_code == 404]
    assert all(body == not_found[0] for body in not_found)
    # Another client is not held up by this one.
    assert (await lookup(system, probes[-1], "203.0.113.100")).status_code == 404


async def test_a_person_refreshing_steadily_is_never_limited(system: System) -> None:
    created = await known_complaint(system)
    owner = {"tracking_code": created["tracking_code"], "query_secret": created["query_secret"]}
    statuses = []
    for _ in range(20):
        statuses.append((await lookup(system, owner, "198.51.100.20")).status_code)
        await asyncio.sleep(WINDOW / PER_CODE)
    assert statuses == [200] * 20
