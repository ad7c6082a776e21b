"""Early warning (预警): an officer with three complaints in a year is flagged once, substantiated
findings count on their own threshold, and supervisors change the thresholds with a reason."""

from __future__ import annotations

import json
from datetime import date, timedelta
from typing import Any

import nats
import pytest

from tests.support import System, eventually
from tests.test_ledger_closeoff import sign_in_leader
from tests.test_pipeline import conclude, create_complaint, task_for

# Counts the whole database's figures: a system of its own, on empty databases.
pytestmark = pytest.mark.private_system

UNIT = "项城市公安局花园派出所"


async def raised_events(system: System, subject_key: str) -> list[dict[str, Any]]:
    nc = await nats.connect(system.nats_url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe("sv.EarlyWarningRaised.*", stream="SUPERVISION")
        found: list[dict[str, Any]] = []
        while True:
            try:
                messages = await sub.fetch(200, timeout=0.5)
            except TimeoutError:
                break
            for msg in messages:
                data = json.loads(msg.data)
                if data["subject_key"] == subject_key:
                    found.append(data)
                await msg.ack()
        await sub.unsubscribe()
        return found
    finally:
        await nc.drain()


async def warnings_of(system: System, user: str = "supervisor1") -> list[dict[str, Any]]:
    response = await system.call("verification", "GET", "/api/v1/warnings", as_user=user)
    assert response.status_code == 200, response.text
    return list(response.json())


def against(badge: str, received: str, unit: str = UNIT, county: str = "411681") -> dict[str, Any]:
    """A complaint about ``badge`` of ``unit`` received on ``received`` (a date), about the day before."""
    day = date.fromisoformat(received)
    return {
        "accused": {"unit": unit, "county_code": county, "badge_no": badge},
        "received_at": f"{day}T09:00:00+08:00",
        "incident_at": f"{day - timedelta(days=1)}T20:30:00+08:00",
    }


async def test_an_officer_with_three_complaints_in_a_year_is_flagged_once(system: System) -> None:
    first = await create_complaint(system, **against("W00001", "2026-01-10"))
    second = await create_complaint(system, **against("W00001", "2026-06-10"))
    for created in (first, second):
        await task_for(system, created["id"], "inspector-411681")
    assert not [w for w in await warnings_of(system) if w["subject_key"] == "W00001"]

    third = await create_complaint(system, **against("W00001", "2026-11-02"))

    async def flagged() -> list[dict[str, Any]]:
        return [w for w in await warnings_of(system) if w["subject_key"] == "W00001"]

    async def flagged_with_its_matters() -> list[dict[str, Any]]:
        # The warning is counted by one consumer and the matter's snapshot made by another.
        found = await flagged()
        return found if all(m["tracking_code"] for w in found for m in w["matters"]) else []

    [warning] = await eventually(flagged_with_its_matters, what="the officer flagged")
    assert warning["subject_kind"] == "officer" and warning["measure"] == "complaints"
    assert (warning["count"], warning["threshold"], warning["window_months"]) == (3, 3, 12)
    assert warning["case_id"] == third["id"] and warning["county_code"] == "411681"
    assert [m["case_id"] for m in warning["matters"]] == [first["id"], second["id"], third["id"]]
    assert "王建国" not in str(warning)
    # The unit crossed its threshold with the same matter.
    assert any(w["subject_kind"] == "unit" and w["subject_key"] == UNIT for w in await warnings_of(system))

    # A fourth complaint is no new crossing; a complaint older than a year before does not count.
    fourth = await create_complaint(system, **against("W00001", "2026-11-03"))
    await task_for(system, fourth["id"], "inspector-411681")
    assert len(await flagged()) == 1
    events = await eventually(lambda: raised_events(system, "W00001"), what="EarlyWarningRaised")
    assert len(events) == 1
    assert events[0]["case_id"] == third["id"] and events[0]["case_ids"][-1] == third["id"]

    # A leader of another county sees none of it; this county's leader does.
    other = await sign_in_leader(system, "411624")
    assert not [w for w in await warnings_of(system, other) if w["subject_key"] == "W00001"]
    mine = await sign_in_leader(system, "411681")
    assert [w for w in await warnings_of(system, mine) if w["subject_key"] == "W00001"]


async def test_a_window_restarts_the_count(system: System) -> None:
    for received in ("2024-01-10", "2024-03-10", "2025-06-10"):
        created = await create_complaint(system, **against("W00003", received, unit="项城市公安局城区派出所"))
        await task_for(system, created["id"], "inspector-411681")
    # Three complaints, but never three within twelve months.
    assert not [w for w in await warnings_of(system) if w["subject_key"] == "W00003"]


async def test_two_substantiated_in_two_years_raise_their_own_warning(system: System) -> None:
    unit = "项城市公安局交警大队"
    cases = []
    for received in ("2026-03-10", "2026-09-10"):
        created = await create_complaint(system, **against("W00002", received, unit=unit))
        cases.append(created["id"])
        await conclude(system, created["id"], "inspector-411681", outcome="substantiated")

    async def substantiated() -> list[dict[str, Any]]:
        return [
            w
            for w in await warnings_of(system)
            if w["subject_key"] == "W00002" and w["measure"] == "substantiated"
        ]

    [warning] = await eventually(substantiated, what="the substantiated warning")
    assert (warning["count"], warning["threshold"], warning["window_months"]) == (2, 2, 24)
    assert [m["case_id"] for m in warning["matters"]] == cases
    assert not [
        w for w in await warnings_of(system) if w["subject_key"] == "W00002" and w["measure"] == "complaints"
    ]


async def test_thresholds_are_data_supervisors_change_with_a_reason(system: System) -> None:
    current = await system.call("verification", "GET", "/api/v1/warning-thresholds", as_user="supervisor1")
    assert current.status_code == 200, current.text
    by_measure = {t["measure"]: t for t in current.json()}
    assert (by_measure["complaints"]["count"], by_measure["complaints"]["window_months"]) == (3, 12)
    assert (by_measure["substantiated"]["count"], by_measure["substantiated"]["window_months"]) == (2, 24)
    assert by_measure["complaints"]["default"] is True

    for bad in (0, -1, "三", 2.5):
        refused = await system.call(
            "verification",
            "PUT",
            "/api/v1/warning-thresholds",
            as_user="supervisor1",
            json={
                "thresholds": [{"measure": "complaints", "count": bad, "window_months": 12}],
                "reason": "调整",
            },
        )
        assert refused.status_code == 422, (bad, refused.text)
        assert "count" in refused.text and any("\u4e00" <= ch <= "\u9fff" for ch in refused.text)
    no_reason = await system.call(
        "verification",
        "PUT",
        "/api/v1/warning-thresholds",
        as_user="supervisor1",
        json={"thresholds": [{"measure": "complaints", "count": 4, "window_months": 12}]},
    )
    assert no_reason.status_code == 422
    inspector = await system.call(
        "verification",
        "PUT",
        "/api/v1/warning-thresholds",
        as_user="inspector-411681",
        json={"thresholds": [{"measure": "complaints", "count": 4, "window_months": 12}], "reason": "调整"},
    )
    assert inspector.status_code == 403
    unchanged = await system.call("verification", "GET", "/api/v1/warning-thresholds", as_user="supervisor1")
    assert unchanged.json() == current.json()

    changed = await system.call(
        "verification",
        "PUT",
        "/api/v1/warning-thresholds",
        as_user="supervisor1",
        json={
            "thresholds": [{"measure": "complaints", "count": 4, "window_months": 6}],
            "reason": "试点期间投诉量大，提高预警门槛",
        },
    )
    assert changed.status_code == 200, changed.text
    after = {t["measure"]: t for t in changed.json()}
    assert (after["complaints"]["count"], after["complaints"]["window_months"]) == (4, 6)
    assert after["complaints"]["reason"] == "试点期间投诉量大，提高预警门槛"
    assert after["complaints"]["updated_by"] == "supervisor1" and after["complaints"]["default"] is False
    assert after["substantiated"]["count"] == 2
    trail = await system.call(
        "verification", "GET", "/api/v1/audit/early-warning-thresholds", as_user="supervisor1"
    )
    assert trail.status_code == 200, trail.text
    assert any(
        e["action"] == "warning_threshold_changed" and e["reason"] == "试点期间投诉量大，提高预警门槛"
        for e in trail.json()["entries"]
    )
    # Back to the defaults, so that the order of the tests does not matter.
    restored = await system.call(
        "verification",
        "PUT",
        "/api/v1/warning-thresholds",
        as_user="supervisor1",
        json={
            "thresholds": [{"measure": "complaints", "count": 3, "window_months": 12}],
            "reason": "恢复默认",
        },
    )
    assert restored.status_code == 200
