"""Notifications and the 待办 inbox, through the running services: a matter received long ago walks
its ladder as soon as it is routed, and every step reaches the people it names, once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlmodel import col, func, select

from services.feedback import notification_summary
from services.feedback.models import Delivery, Notification, NotificationRead
from shared.auth import Principal, Role, issue_token
from shared.db import create_engine, create_session_factory, table_of
from shared.events import EarlyWarningRaised, LadderStepReached
from shared.web import COOKIE_NAME
from shared.workcalendar import WorkCalendar
from tests.support import NatsServer, System, eventually, running_system, token_signer_for_tests
from tests.test_feedback_support import (
    SmsGateway,
    outside_world_env,
    publish_event,
    running_gateway,
)
from tests.test_pipeline import create_complaint, task_for

SHANGHAI = ZoneInfo("Asia/Shanghai")
COUNTY = "411681"  # 项城市: the fixtures' accused unit
TEAM_INSPECTOR = f"inspector-{COUNTY}"
LEADER = f"leader-{COUNTY}"
LEADER_PHONE = "13900001681"


@pytest.fixture(scope="module")
async def gateway() -> AsyncIterator[SmsGateway]:
    async with running_gateway() as running:
        yield running


@pytest.fixture(scope="module")
async def system(
    backend: str, nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory, gateway: SmsGateway
) -> AsyncIterator[System]:
    async with running_system(
        backend=backend,
        root=tmp_path_factory.mktemp(f"notifications-{backend}"),
        nats_url=nats_server.url,
        extra_env=outside_world_env(gateway=gateway, mailbox=None),
    ) as running:
        yield running


async def leader_headers(system: System, county: str = COUNTY) -> dict[str, str]:
    """The county leader's demo account; a minted token of the same person where it does not exist."""
    username = f"leader-{county}"
    response = await system.client("intake").post(
        "/api/v1/auth/token", data={"username": username, "password": "demo"}
    )
    if response.status_code == 200:
        return {"Authorization": f"Bearer {response.json()['access_token']}"}
    principal = Principal(username=username, role=Role.LEADER, county_code=county)
    token = issue_token(principal=principal, signer=token_signer_for_tests(), ttl=timedelta(minutes=30))
    return {"Authorization": f"Bearer {token}"}


async def headers_of(system: System, who: str) -> dict[str, str]:
    return await leader_headers(system) if who == LEADER else await system.auth(who)


async def inbox(system: System, who: str, **params: Any) -> list[dict[str, Any]]:
    response = await system.client("feedback").get(
        "/api/v1/notifications", params=params, headers=await headers_of(system, who)
    )
    assert response.status_code == 200, response.text
    return list(response.json())


async def items_of(system: System, who: str, case_id: str) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for item in await inbox(system, who, limit=200):
        if item["case_id"] == case_id:
            found.setdefault(item["kind"], []).append(item)
    return found


async def tick(system: System) -> None:
    scheduler = system.apps["verification"].state.scheduler
    while await scheduler.tick():
        pass


def long_ago(days: int) -> str:
    return (datetime.now(SHANGHAI) - timedelta(days=days)).replace(microsecond=0).isoformat()


async def overdue_matter(system: System) -> tuple[dict[str, Any], dict[str, Any]]:
    """An anonymous complaint (no acceptance-notice clock) received long ago, routed, ladder walked."""
    created = await create_complaint(
        system,
        # 80 natural days: well past 30 working days, whatever the holidays.
        received_at=long_ago(80),
        incident_at=long_ago(82),
        complainant={"anonymous": True, "name": None, "phone": None},
    )
    task = await task_for(system, created["id"], TEAM_INSPECTOR)
    await tick(system)
    return created, task


async def notification_rows(system: System, dedupe_key: str) -> list[Notification]:
    engine = create_engine(system.env["FEEDBACK_DATABASE_URL"])
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(select(Notification).where(col(Notification.dedupe_key) == dedupe_key))
            return [Notification.model_validate(dict(row._mapping)) for row in rows]
    finally:
        await engine.dispose()


async def staff_deliveries(system: System, case_id: str) -> list[Delivery]:
    engine = create_engine(system.env["FEEDBACK_DATABASE_URL"])
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(Delivery).where(col(Delivery.case_id) == case_id, col(Delivery.kind) == "staff")
            )
            return [Delivery.model_validate(dict(row._mapping)) for row in rows]
    finally:
        await engine.dispose()


async def set_leader_phone(system: System) -> None:
    response = await system.call(
        "routing",
        "PUT",
        f"/api/v1/bureaus/{COUNTY}",
        as_user="supervisor1",
        json={
            "leader_name": "赵某某",
            "leader_title": "副局长",
            "phone": LEADER_PHONE,
            "leader_username": LEADER,
        },
    )
    assert response.status_code == 200, response.text


async def test_an_old_matter_reaches_team_supervisors_and_leader_once_each(
    system: System, gateway: SmsGateway
) -> None:
    await set_leader_phone(system)
    created, task = await overdue_matter(system)
    case_id = created["id"]

    async def everyone_told() -> bool:
        team = await items_of(system, TEAM_INSPECTOR, case_id)
        supervisors = await items_of(system, "supervisor1", case_id)
        leader = await items_of(system, LEADER, case_id)
        return "chase" in team and {"escalation", "rebuke"} <= supervisors.keys() and "rebuke" in leader

    await eventually(everyone_told, what="the ladder's notifications")
    team = await items_of(system, TEAM_INSPECTOR, case_id)
    supervisors = await items_of(system, "supervisor1", case_id)
    leader = await items_of(system, LEADER, case_id)
    assert len(team["chase"]) == 1 and "escalation" not in team and "rebuke" not in team
    assert len(team["reminder"]) == 2  # the reminder before the deadline, and on the day
    assert len(supervisors["escalation"]) == 1 and len(supervisors["rebuke"]) == 1
    assert "chase" not in supervisors
    assert list(leader) == ["rebuke"] and len(leader["rebuke"]) == 1
    rebuke = leader["rebuke"][0]
    assert created["tracking_code"] in rebuke["title"] and rebuke["title"].startswith("【通报】")
    assert "王建国" not in rebuke["title"] and rebuke["read_at"] is None
    assert team["chase"][0]["link"].endswith(f"/tasks/{task['id']}")

    # Once per step and audience: one row for each.
    rows = await notification_rows(system, f"ladder:{task['id']}:verification:rebuke")
    assert sorted(r.audience for r in rows) == ["leader:411681", "role:supervisor"]
    assert len(await notification_rows(system, f"ladder:{task['id']}:verification:chase")) == 1

    # The leader, who has a phone on file, gets an SMS naming the matter and never the complainant.
    async def leader_sms() -> list[dict[str, Any]]:
        # The gateway lives as long as the module, across both backends: this matter's only.
        return [
            p
            for p in gateway.sent.values()
            if p["to"] == LEADER_PHONE and created["tracking_code"] in p["text"]
        ]

    sms = await eventually(leader_sms, what="the leader's SMS")
    assert len(sms) == 1 and created["tracking_code"] in sms[0]["text"] and "通报" in sms[0]["text"]
    sent = [d for d in await staff_deliveries(system, case_id) if d.recipient == "leader:411681"]
    assert len(sent) == 1 and sent[0].status == "sent" and sent[0].sent_to_masked == "139****1681"


async def test_a_redelivered_step_changes_nothing(system: System) -> None:
    created, task = await overdue_matter(system)
    case_id = created["id"]

    async def rebuked() -> bool:
        return "rebuke" in await items_of(system, LEADER, case_id)

    await eventually(rebuked, what="the rebuke")
    before = {who: await items_of(system, who, case_id) for who in (TEAM_INSPECTOR, "supervisor1", LEADER)}

    async def staff_messages_settled() -> list[Delivery] | None:
        found = await staff_deliveries(system, case_id)
        # escalation and rebuke to the supervisors, rebuke to the leader: each message once.
        return found if len(found) == 3 and all(d.status != "pending" for d in found) else None

    messages_before = await eventually(staff_messages_settled, what="the staff messages")
    original = LadderStepReached(
        case_id=case_id,
        actor="scheduler",
        task_id=task["id"],
        clock="verification",
        step="rebuke",
        team_code=COUNTY,
        due_at=datetime.now(SHANGHAI) - timedelta(days=30),
    )
    # A second scheduler's event for the same step (a new event id), and that event again.
    await publish_event(system, original)
    await publish_event(system, original.model_copy(update={"event_id": original.event_id}))
    await publish_event(
        system, original.model_copy(update={"event_id": "escalation-again", "step": "escalation"})
    )
    # A marker after them in the matter's stream: once it is in, the repeats were handled.
    marker = original.model_copy(update={"event_id": "marker", "clock": "marker_clock", "step": "reminder"})
    await publish_event(system, marker)

    async def marker_in() -> bool:
        return len((await items_of(system, TEAM_INSPECTOR, case_id)).get("reminder", [])) == 3

    await eventually(marker_in, what="the marker step")
    for who in ("supervisor1", LEADER):
        assert await items_of(system, who, case_id) == before[who], who
    assert {d.id for d in await staff_deliveries(system, case_id)} == {d.id for d in messages_before}


async def test_only_its_recipient_reads_or_handles_an_item(system: System) -> None:
    created, _ = await overdue_matter(system)
    case_id = created["id"]

    async def escalated() -> list[dict[str, Any]]:
        return (await items_of(system, "supervisor1", case_id)).get("escalation", [])

    item = (await eventually(escalated, what="the escalation"))[0]
    feedback = system.client("feedback")
    for stranger in (TEAM_INSPECTOR, LEADER, "operator1", "deputy1"):
        response = await feedback.post(
            f"/api/v1/notifications/{item['id']}/read", headers=await headers_of(system, stranger)
        )
        assert response.status_code == 404, (stranger, response.text)
        response = await feedback.post(
            f"/api/v1/notifications/{item['id']}/handle", headers=await headers_of(system, stranger)
        )
        assert response.status_code == 404, (stranger, response.text)
    response = await feedback.post(
        "/api/v1/notifications/no-such-item/read", headers=await system.auth("supervisor1")
    )
    assert response.status_code == 404

    summary_before = (
        await feedback.get("/api/v1/notifications/summary", headers=await system.auth("supervisor1"))
    ).json()["unread"]
    response = await feedback.post(
        f"/api/v1/notifications/{item['id']}/read", headers=await system.auth("supervisor1")
    )
    assert response.status_code == 200, response.text
    read_at = response.json()["read_at"]
    assert read_at is not None and response.json()["handled_at"] is None
    again = await feedback.post(
        f"/api/v1/notifications/{item['id']}/read", headers=await system.auth("supervisor1")
    )
    assert again.json()["read_at"] == read_at  # the first reading counts
    summary = await feedback.get("/api/v1/notifications/summary", headers=await system.auth("supervisor1"))
    assert summary.json()["unread"] == summary_before - 1
    assert item["id"] not in {i["id"] for i in await inbox(system, "supervisor1", unread="true", limit=200)}

    handled = await feedback.post(
        f"/api/v1/notifications/{item['id']}/handle", headers=await system.auth("supervisor1")
    )
    assert handled.status_code == 200, handled.text
    assert handled.json()["handled_at"] and handled.json()["handled_by"] == "supervisor1"
    assert item["id"] not in {i["id"] for i in await inbox(system, "supervisor1", open="true", limit=200)}
    # The leader reads their own: a different item of the same step.
    mine = (await items_of(system, LEADER, case_id)).get("rebuke", [])
    assert mine
    response = await feedback.post(
        f"/api/v1/notifications/{mine[0]['id']}/read", headers=await leader_headers(system)
    )
    assert response.status_code == 200, response.text


async def test_statistics_count_sent_and_unread_per_county_team_and_kind(system: System) -> None:
    feedback = system.client("feedback")

    async def figures(who: str, **params: Any) -> httpx.Response:
        return await feedback.get(
            "/api/v1/notifications/stats", params=params, headers=await headers_of(system, who)
        )

    engine = create_engine(system.env["FEEDBACK_DATABASE_URL"])
    try:
        async with engine.connect() as conn:
            stored = {
                (kind, team): n
                for kind, team, n in await conn.execute(
                    select(Notification.kind, Notification.team_code, func.count())
                    .where(col(Notification.county_code) == COUNTY)
                    .group_by(col(Notification.kind), col(Notification.team_code))
                )
            }
    finally:
        await engine.dispose()
    response = await figures("supervisor1", county=COUNTY)
    assert response.status_code == 200, response.text
    rows = {(r["kind"], r["team_code"]): r for r in response.json()["rows"]}
    assert {key: row["sent"] for key, row in rows.items()} == stored
    # Three matters, each: chase once to the team; escalation once and rebuke twice (supervisors, leader).
    assert rows[("chase", COUNTY)]["sent"] == 3
    assert rows[("escalation", COUNTY)]["sent"] == 3
    assert rows[("rebuke", COUNTY)]["sent"] == 6
    # Sent just now: nothing is unread after a working day yet.
    assert all(row["unread_after_one_working_day"] == 0 for row in rows.values())

    leader_view = await figures(LEADER)
    assert leader_view.status_code == 200 and leader_view.json()["county"] == COUNTY
    assert (await figures(LEADER, county="411602")).status_code == 403
    assert (await figures(TEAM_INSPECTOR)).status_code == 403
    assert (await figures("operator1")).status_code == 403


async def shift_back(system: System, dedupe_key: str, by: timedelta) -> None:
    """Every moment stored of these items (sent, deadline, readings) earlier by ``by``: as if the
    figures were asked for that much later.  Moved into a day that may be summarised already, as
    a notification arriving late would be: that day's summary goes (``notifications.notify``)."""
    items, reads = table_of(Notification), table_of(NotificationRead)
    engine = create_engine(system.env["FEEDBACK_DATABASE_URL"])
    try:
        async with create_session_factory(engine)() as session, session.begin():
            conn = await session.connection()
            for row in (await conn.execute(items.select().where(items.c.dedupe_key == dedupe_key))).all():
                await notification_summary.reopen_day(session, at=row.created_at - by, tz=SHANGHAI)
                assert row.first_read_at is not None
                await conn.execute(
                    items.update()
                    .where(items.c.id == row.id)
                    .values(
                        created_at=row.created_at - by,
                        read_deadline=row.read_deadline - by,
                        first_read_at=row.first_read_at - by,
                    )
                )
                for read in (
                    await conn.execute(reads.select().where(reads.c.notification_id == row.id))
                ).all():
                    await conn.execute(
                        reads.update().where(reads.c.id == read.id).values(read_at=read.read_at - by)
                    )
    finally:
        await engine.dispose()


async def test_an_item_read_after_its_working_day_counts_as_unread_and_one_read_in_time_does_not(
    system: System,
) -> None:
    county = "411699"  # no fixture matter's: the figures below are this test's alone
    created = await create_complaint(system)
    # Longer than any holiday: a deadline of today is over two weeks on.
    two_weeks = timedelta(days=14)

    def warning(at: datetime) -> EarlyWarningRaised:
        return EarlyWarningRaised(
            case_id=created["id"],
            actor="verification",
            occurred_at=at,
            subject_kind="unit",
            subject_key="某派出所",
            county_code=county,
            measure="complaints",
            count=3,
            threshold=3,
            window_months=12,
            case_ids=[created["id"]],
        )

    # Sent two weeks ago, read only now; and sent now, read at once, then two weeks pass.
    late, in_time = warning(datetime.now(SHANGHAI) - two_weeks), warning(datetime.now(SHANGHAI))
    for event in (late, in_time):
        await publish_event(system, event)
    readers = {
        "role:supervisor": await system.auth("supervisor1"),
        f"leader:{county}": await leader_headers(system, county),
    }
    feedback = system.client("feedback")

    async def items(event: EarlyWarningRaised) -> dict[str, Notification] | None:
        found = await notification_rows(system, f"warning:{event.event_id}")
        return {item.audience: item for item in found} if len(found) == len(readers) else None

    calendar = WorkCalendar.load()
    sent = {
        event.event_id: await eventually(partial(items, event), what="the items") for event in (late, in_time)
    }
    # The supervisor reads the late warning now, after its day; its leader never does.
    to_read = [sent[in_time.event_id][audience] for audience in readers]
    to_read.append(sent[late.event_id]["role:supervisor"])
    for item in to_read:
        assert item.first_read_at is None
        assert item.read_deadline == calendar.add_working_days(item.created_at, 1)
        response = await feedback.post(
            f"/api/v1/notifications/{item.id}/read", headers=readers[item.audience]
        )
        assert response.status_code == 200, response.text
        read_at = datetime.fromisoformat(response.json()["read_at"])
        (stored,) = [row for row in await notification_rows(system, item.dedupe_key) if row.id == item.id]
        assert stored.first_read_at == read_at
    await shift_back(system, f"warning:{in_time.event_id}", two_weeks)

    response = await feedback.get(
        "/api/v1/notifications/stats", params={"county": county}, headers=readers["role:supervisor"]
    )
    assert response.status_code == 200, response.text
    (row,) = response.json()["rows"]
    assert (row["kind"], row["team_code"], row["sent"]) == ("early_warning", None, 4)
    # Late: the supervisors' (read after its day) and the leader's (never read); in time: neither.
    assert row["unread_after_one_working_day"] == 2


async def test_bell_and_inbox_for_every_signed_in_person(system: System) -> None:
    feedback = system.client("feedback")
    for who in (TEAM_INSPECTOR, "supervisor1", "operator1", "deputy1", LEADER):
        response = await feedback.get("/api/v1/notifications/summary", headers=await headers_of(system, who))
        assert response.status_code == 200, (who, response.text)
        assert isinstance(response.json()["unread"], int)
    assert (await feedback.get("/api/v1/notifications")).status_code == 401
    assert (await feedback.get("/api/v1/notifications/summary")).status_code == 401
    page = await inbox(system, "supervisor1", limit=2)
    assert len(page) == 2 and page[0]["created_at"] >= page[1]["created_at"]
    older = await inbox(system, "supervisor1", limit=2, before=page[1]["created_at"])
    assert all(item["created_at"] < page[1]["created_at"] for item in older)
    bad = await feedback.get(
        "/api/v1/notifications", params={"limit": 0}, headers=await system.auth("supervisor1")
    )
    assert bad.status_code == 422 and "limit" in bad.text


async def test_the_bell_and_the_todo_page_are_served_to_people_who_work_on_matters(system: System) -> None:
    feedback = system.client("feedback")
    for who in ("supervisor1", TEAM_INSPECTOR, "operator1"):
        token = (await headers_of(system, who))["Authorization"].removeprefix("Bearer ")
        page = await feedback.get("/todo", headers={"Cookie": f"{COOKIE_NAME}={token}"})
        assert page.status_code == 200, (who, page.text[:300])
        assert "data-bell" in page.text and 'data-testid="user-name"' in page.text
        assert ('id="t-extensions"' in page.text) == (who == "supervisor1")
    deputy = (await system.auth("deputy1"))["Authorization"].removeprefix("Bearer ")
    refused = await feedback.get(
        "/todo", headers={"Cookie": f"{COOKIE_NAME}={deputy}"}, follow_redirects=False
    )
    assert refused.status_code in (303, 403)
