"""Prometheus metrics: every service answers ``/metrics``, labels carry templates, never identities."""

from __future__ import annotations

import asyncio
import time
import uuid
from types import SimpleNamespace
from typing import Any

import nats
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from shared import metrics
from shared.outbox import HEADER_EVENT_TYPE, HEADER_EVENT_VERSION, HEADER_MSG_ID
from tests import fixtures
from tests.support import SERVICE_NAMES, System, eventually
from tests.test_pipeline import create_complaint, current_assignment, task_for

COMMON_NAMES = {
    "sv_http_request_duration_seconds",
    "sv_outbox_unpublished_rows",
    "sv_outbox_oldest_unpublished_age_seconds",
    "sv_consumer_lag_messages",
    "sv_consumer_ack_pending_messages",
    "sv_dead_letters",
    "sv_consumer_slices_applied",
    "sv_outbox_published_rows",
    "sv_worker_running",
    "sv_worker_consecutive_failures",
    "sv_worker_seconds_since_progress",
    "sv_worker_stuck",
    "sv_metrics_source_up",
    "sv_bus_up",
    "sv_db_statements",
    "sv_db_commits",
}
OWN_NAMES = {
    "verification": {"sv_ladder_steps_fired"},
    "feedback": {"sv_deliveries_sent", "sv_deliveries_failed"},
}


async def scrape(system: System, service: str) -> str:
    response = await system.client(service).get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def complaint_posts(text: str) -> dict[str, float]:
    """Intake's count of ``POST /api/v1/complaints`` by status class."""
    return {
        labels["status"]: value
        for labels, value in samples(text, "sv_http_request_duration_seconds_count")
        if labels["route"] == "/api/v1/complaints" and labels["method"] == "POST"
    }


async def test_every_service_exposes_its_metrics_after_a_complaint(system: System) -> None:
    # The system is shared with other modules (whose refused posts are counted too): compare.
    before = await scrape(system, "intake")
    posts_before = complaint_posts(before)
    created = await create_complaint(system)
    await current_assignment(system, created["id"])
    await task_for(system, created["id"], "inspector-411681")

    for service in SERVICE_NAMES:
        text = await scrape(system, service)
        names = {family.name for family in text_string_to_metric_families(text)}
        missing = (COMMON_NAMES | OWN_NAMES.get(service, set())) - names
        assert not missing, f"{service} lacks {sorted(missing)}"
        assert samples(text, "sv_metrics_source_up") == [
            ({"source": "database"}, 1.0),
            ({"source": "nats"}, 1.0),
        ]
        (backlog,) = samples(text, "sv_outbox_unpublished_rows")
        assert backlog[1] >= 0
        workers = {labels["worker"] for labels, _ in samples(text, "sv_worker_stuck")}
        assert "outbox-relay" in workers
        durables = {labels["durable"] for labels, _ in samples(text, "sv_consumer_lag_messages")}
        assert durables and all(durable.startswith(service) for durable in durables), durables

    intake = await scrape(system, "intake")
    posts_after = complaint_posts(intake)
    posted = {status for status, count in posts_after.items() if count > posts_before.get(status, 0.0)}
    assert posted == {"2xx"}, (posts_before, posts_after)
    # The relay published the complaint's event, counted as intake's (not another app's) work.
    published = samples(intake, "sv_outbox_published_rows_total")
    # The complaint's statements and its commit are counted as intake's, on intake's database.
    for name in ("sv_db_statements_total", "sv_db_commits_total"):
        ((labels, value),) = samples(intake, name)
        assert labels == {"service": "intake"} and value > samples(before, name)[0][1], name
    assert [labels["service"] for labels, _ in published] == ["intake"] and published[0][1] >= 1
    routing = await scrape(system, "routing")
    slices = {labels["consumer"] for labels, _ in samples(routing, "sv_consumer_slices_applied_total")}
    assert "routing-intake" in slices


async def test_routes_are_labelled_by_template_and_no_identity_leaks(system: System) -> None:
    body = fixtures.complaint()
    phone = body["complainant"]["phone"]
    created = await create_complaint(system, complainant=body["complainant"])
    case_id = created["id"]
    found = await system.call("intake", "GET", f"/api/v1/complaints/{case_id}", as_user="supervisor1")
    assert found.status_code == 200, found.text
    missing = await system.call("intake", "GET", f"/api/v1/nothing-here/{case_id}", params={"phone": phone})
    assert missing.status_code == 404

    text = await scrape(system, "intake")
    routes = {labels["route"] for labels, _ in samples(text, "sv_http_request_duration_seconds_count")}
    assert "/api/v1/complaints/{complaint_id}" in routes
    assert metrics.UNMATCHED_ROUTE in routes
    assert "/metrics" not in routes
    for service in SERVICE_NAMES:
        text = await scrape(system, service)
        for secret in (case_id, phone, created["tracking_code"], created["query_secret"], "王建国"):
            assert secret not in text, f"{service}'s metrics show {secret!r}"


async def test_a_parked_event_is_counted_by_the_service_that_parked_it(system: System) -> None:
    def parked_invalid(text: str) -> float:
        return sum(
            value
            for labels, value in samples(text, "sv_dead_letters_total")
            if labels["consumer"] == "routing-intake" and labels["reason"] == "invalid"
        )

    before = parked_invalid(await scrape(system, "routing"))
    nc = await nats.connect(system.nats_url)
    try:
        headers = {
            HEADER_MSG_ID: uuid.uuid4().hex,
            HEADER_EVENT_TYPE: "ComplaintReceived",
            HEADER_EVENT_VERSION: "1",
        }
        await nc.jetstream().publish("sv.ComplaintReceived.v1", b"{not json", headers=headers)
    finally:
        await nc.drain()

    async def counted() -> bool:
        return parked_invalid(await scrape(system, "routing")) == before + 1

    await eventually(counted, what="the dead letter counted")
    intake = await scrape(system, "intake")
    assert not [
        labels for labels, _ in samples(intake, "sv_dead_letters_total") if labels["service"] != "intake"
    ]


def test_event_counters_are_shown_by_their_own_service_only() -> None:
    own = metrics.ServiceMetrics(service="verification")
    other = metrics.ServiceMetrics(service="intake")

    def value(registry: Any, name: str, labels: dict[str, str]) -> float:
        # The event counters are process-wide: services run in this process by other tests
        # have counted before, so the test looks at what its own calls add.
        return sum(v for found, v in samples(generate_latest(registry).decode(), name) if found == labels)

    chase = {"service": "verification", "step": "chase"}
    failed = {"service": "verification", "channel": "none", "permanent": "true"}
    chase_before = value(own.registry, "sv_ladder_steps_fired_total", chase)
    failed_before = value(own.registry, "sv_deliveries_failed_total", failed)
    token = metrics.current_service.set("verification")
    try:
        metrics.count_ladder_step(step="chase")
        metrics.count_delivery(channel=None, sent=False, permanent=True)
    finally:
        metrics.current_service.reset(token)
    assert value(own.registry, "sv_ladder_steps_fired_total", chase) == chase_before + 1
    assert samples(generate_latest(other.registry).decode(), "sv_ladder_steps_fired_total") == []
    assert value(own.registry, "sv_deliveries_failed_total", failed) == failed_before + 1


def test_dead_letter_reasons_become_kinds() -> None:
    assert metrics.dead_letter_kind("invalid event: 1 validation error for ...") == "invalid"
    assert metrics.dead_letter_kind("no handler for CaseClosed v3") == "no_handler"
    assert metrics.dead_letter_kind("gave up after 8 deliveries: OperationalError()") == "gave_up"
    assert metrics.dead_letter_kind("案件不存在：C-123") == "permanent"


class _Hanging:
    """A database and a JetStream that never answer."""

    def connect(self) -> Any:
        return self

    async def __aenter__(self) -> Any:
        await asyncio.sleep(3600)

    async def __aexit__(self, *args: object) -> None:
        return None

    async def consumer_info(self, *args: object, **kwargs: object) -> Any:
        await asyncio.sleep(3600)


async def test_a_scrape_is_bounded_when_database_and_nats_hang() -> None:
    hanging = _Hanging()
    health = SimpleNamespace(
        name="outbox-relay", running=True, consecutive_failures=2, last_progress_at=None, stuck=True
    )
    runtime: Any = SimpleNamespace(
        nc=SimpleNamespace(is_connected=True),
        js=hanging,
        engine=hanging,
        bus_ready=True,
        consumers=[SimpleNamespace(subscription=SimpleNamespace(durable="routing-intake"))],
        settings=SimpleNamespace(nats_stream="SUPERVISION"),
        supervised_workers=lambda: [SimpleNamespace(health=health)],
    )
    started = time.monotonic()
    snapshot = await metrics.read_snapshot(runtime, budget=0.3)
    assert time.monotonic() - started < 2.0
    assert not snapshot.database_up and not snapshot.nats_up
    assert snapshot.outbox_unpublished is None and snapshot.consumers == {}
    assert snapshot.workers == [metrics.WorkerRow("outbox-relay", True, 2, None, True)]
