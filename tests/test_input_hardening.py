"""Input and HTTP hardening (issue 14, items 8-10): what a careless or hostile client may not send.

Paging numbers the database cannot hold, control characters, receipt times from another
century, 422 bodies the OpenAPI does not describe, the public Swagger UI with its CDN, and
state changes a page of another site makes the browser send with the session cookie.
"""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from sqlalchemy.engine import make_url

from services.intake.receipt import too_old
from services.intake.settings import IntakeSettings
from services.registry import SERVICES
from shared.db import private_sqlite_files
from tests import fixtures
from tests.support import SERVICE_NAMES, System, patched_environ

HUGE_OFFSET = 2**63
LIST_ENDPOINTS = [
    ("intake", "/api/v1/complaints", "operator1"),
    ("intake", "/api/v1/suggestions", "operator1"),
    ("verification", "/api/v1/tasks", "supervisor1"),
    ("feedback", "/api/v1/deliveries", "supervisor1"),
]


def field_errors(response: httpx.Response) -> dict[str, dict[str, str]]:
    assert response.status_code == 422, response.text
    return {item["field"]: item for item in response.json()["detail"]}


# --- paging -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("service", "path", "user"), LIST_ENDPOINTS)
async def test_an_offset_beyond_any_list_is_refused_not_a_server_error(
    system: System, service: str, path: str, user: str
) -> None:
    for offset in (HUGE_OFFSET, 1_000_001, -1):
        response = await system.call(service, "GET", path, as_user=user, params={"offset": offset})
        found = field_errors(response)
        assert "offset" in found, found
    ok = await system.call(service, "GET", path, as_user=user, params={"offset": 1_000_000, "limit": 1})
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize(("service", "path", "user"), LIST_ENDPOINTS)
async def test_a_limit_outside_one_to_five_hundred_is_refused(
    system: System, service: str, path: str, user: str
) -> None:
    for limit in (0, 501, HUGE_OFFSET):
        response = await system.call(service, "GET", path, as_user=user, params={"limit": limit})
        assert "limit" in field_errors(response)


# --- control characters -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "value"),
    [
        (("complainant", "name"), "王\x00建国"),
        (("accused", "unit"), "项城市公安局\x1b[31m花园派出所"),
        (("accused", "officer_name"), "李\u0085某"),
        (("account",), "经过\x07如下"),
        (("place",), "路口\x7f"),
    ],
)
async def test_control_characters_in_a_complaint_are_refused_naming_the_field(
    system: System, where: tuple[str, ...], value: str
) -> None:
    body = fixtures.complaint()
    target = body
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = value
    response = await system.call("intake", "POST", "/api/v1/complaints", as_user="operator1", json=body)
    field = ".".join(where)
    problem = field_errors(response)[field]
    assert problem["type"] == "control_characters"
    assert field in problem["message"] and "控制字符" in problem["message"], problem


async def test_line_breaks_and_tabs_stay_allowed_in_multi_line_text(system: System) -> None:
    body = fixtures.complaint(account="第一段：被拦下检查。\r\n第二段：\t民警推搡。\n")
    response = await system.call("intake", "POST", "/api/v1/complaints", as_user="operator1", json=body)
    assert response.status_code == 201, response.text


async def test_a_line_break_in_a_name_is_refused(system: System) -> None:
    body = fixtures.complaint(complainant={"name": "王建国\n李四"})
    response = await system.call("intake", "POST", "/api/v1/complaints", as_user="operator1", json=body)
    assert field_errors(response)["complainant.name"]["type"] == "control_characters"


async def test_control_characters_are_refused_by_every_service(system: System) -> None:
    deputy = fixtures.suggestion(deputy={"name": "马\x00刚", "delegation": "川汇区代表团"})
    refused = [
        (
            "intake",
            "POST",
            "/api/v1/suggestions",
            "operator1",
            deputy,
            "deputy.name",
        ),
        (
            "routing",
            "POST",
            "/api/v1/assignments/no-such-case/flag",
            "supervisor1",
            {"reason": "重点\x00线索"},
            "reason",
        ),
        (
            "verification",
            "POST",
            "/api/v1/tasks/no-such-task/return",
            "inspector-411681",
            {"reason": "不属\x1f本队"},
            "reason",
        ),
        (
            "feedback",
            "POST",
            "/api/v1/public/lookup",
            None,
            {"tracking_code": "C261102\x00AAAA", "query_secret": "abcd1234"},
            "tracking_code",
        ),
    ]
    for service, method, path, user, body, field in refused:
        response = await system.call(service, method, path, as_user=user, json=body)
        problem = field_errors(response)[field]
        assert problem["type"] == "control_characters", (service, problem)


# --- rules and organisation ---------------------------------------------------------------------


async def _a_rule(system: System) -> dict[str, Any]:
    listed = await system.call("routing", "GET", "/api/v1/rules", as_user="supervisor1")
    assert listed.status_code == 200, listed.text
    rule: dict[str, Any] = listed.json()[0]
    return rule


def _rule_body(rule: dict[str, Any], **changes: Any) -> dict[str, Any]:
    fields = ("priority", "case_kinds", "when", "assign", "review", "description", "enabled")
    return {key: rule[key] for key in fields} | {"reason": "测试：校验规则字段"} | changes


async def test_rule_priority_must_be_within_range(system: System) -> None:
    rule = await _a_rule(system)
    for priority in (-15_763_968, 10_001):
        response = await system.call(
            "routing",
            "PUT",
            f"/api/v1/rules/{rule['name']}",
            as_user="supervisor1",
            json=_rule_body(rule, priority=priority),
        )
        assert "priority" in field_errors(response)
    bad_text = await system.call(
        "routing",
        "PUT",
        f"/api/v1/rules/{rule['name']}",
        as_user="supervisor1",
        json=_rule_body(rule, description="说明\x00"),
    )
    assert field_errors(bad_text)["description"]["type"] == "control_characters"


async def test_team_and_unit_codes_must_look_like_codes(system: System) -> None:
    team = {"name": "测试督察队", "level": "county", "area_code": "411681", "bureau": "项城市公安局"}
    unit = {"name": "测试派出所", "area_code": "411681", "kind": "station"}
    for code in ("41 16", "a" * 33, "411681;DROP"):
        for path, body in ((f"/api/v1/teams/{code}", team), (f"/api/v1/units/{code}", unit)):
            response = await system.call("routing", "PUT", path, as_user="supervisor1", json=body)
            assert "code" in field_errors(response), (path, response.text)
    bad_area = await system.call(
        "routing",
        "PUT",
        "/api/v1/units/411681-T9",
        as_user="supervisor1",
        json=unit | {"area_code": "4116\x0081"},
    )
    assert "area_code" in field_errors(bad_area)
    bad_name = await system.call(
        "routing", "PUT", "/api/v1/teams/411681", as_user="supervisor1", json=team | {"name": "督察\x85队"}
    )
    assert field_errors(bad_name)["name"]["type"] == "control_characters"


# --- receipt time -------------------------------------------------------------------------------


async def test_a_receipt_time_from_another_century_is_refused_with_the_reason(system: System) -> None:
    body = fixtures.complaint(
        received_at="1900-01-01T09:00:00+08:00", incident_at="1899-12-30T09:00:00+08:00"
    )
    response = await system.call("intake", "POST", "/api/v1/complaints", as_user="operator1", json=body)
    message = field_errors(response)["received_at"]["message"]
    assert "受理时间" in message and "RECEIVED_AT_MAX_AGE_DAYS" in message, message
    suggestion = fixtures.suggestion(received_at="1900-01-01T09:00:00+08:00")
    response = await system.call(
        "intake", "POST", "/api/v1/suggestions", as_user="operator1", json=suggestion
    )
    assert "收到时间" in field_errors(response)["received_at"]["message"]


def test_the_receipt_time_bound_defaults_to_a_year() -> None:
    assert IntakeSettings.model_fields["received_at_max_age_days"].default == 365
    now = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    year = timedelta(days=365)
    assert too_old(received_at=now - timedelta(days=364), now=now, max_age=year, label="受理时间") is None
    problem = too_old(received_at=now - timedelta(days=366), now=now, max_age=year, label="受理时间")
    assert problem is not None and problem[0] == "received_at" and "365" in problem[1]


# --- the 422 body and the OpenAPI document agree ------------------------------------------------


def _declared_422(document: dict[str, Any]) -> jsonschema.Draft202012Validator:
    declared = {"$ref": "#/components/schemas/HTTPValidationError", "components": document["components"]}
    return jsonschema.Draft202012Validator(declared)


@pytest.mark.parametrize(
    ("service", "method", "path", "user", "kwargs"),
    [
        ("intake", "POST", "/api/v1/complaints", "operator1", {"json": {"channel": "fax"}}),
        ("routing", "POST", "/api/v1/assignments/x/flag", "supervisor1", {"json": {}}),
        ("verification", "GET", "/api/v1/tasks", "supervisor1", {"params": {"offset": HUGE_OFFSET}}),
        ("feedback", "POST", "/api/v1/public/lookup", None, {"json": {"tracking_code": 1}}),
    ],
)
async def test_every_422_matches_the_schema_the_openapi_declares(
    system: System, service: str, method: str, path: str, user: str | None, kwargs: dict[str, Any]
) -> None:
    document = (await system.client(service).get("/api/openapi.json")).json()
    validator = _declared_422(document)
    operation = document["paths"][path.replace("/x/", "/{case_id}/")][method.lower()]
    assert operation["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/HTTPValidationError"
    }
    response = await system.call(service, method, path, as_user=user, **kwargs)
    assert response.status_code == 422, response.text
    validator.validate(response.json())
    # FastAPI's own shape is gone from the document: a client generated from it reads the real one.
    assert not validator.is_valid({"detail": [{"loc": ["body"], "msg": "x", "type": "missing"}]})


# --- Swagger UI ---------------------------------------------------------------------------------


async def test_api_docs_are_off_by_default_and_the_openapi_document_stays(system: System) -> None:
    for name in SERVICE_NAMES:
        client = system.client(name)
        assert (await client.get("/api/docs")).status_code == 404
        assert (await client.get("/redoc")).status_code == 404
        assert (await client.get("/api/openapi.json")).status_code == 200


async def test_api_docs_when_enabled_load_nothing_from_outside(system: System) -> None:
    spec = SERVICES["routing"]
    with patched_environ(system.env | {"API_DOCS_ENABLED": "true"}):
        settings = spec.settings_class()()
    app = spec.create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://routing.test") as client:
        page = await client.get("/api/docs")
        assert page.status_code == 200
        assert "https://" not in page.text and "//cdn" not in page.text
        for asset in ("/api/docs/static/swagger-ui-bundle.js", "/api/docs/static/swagger-ui.css"):
            assert asset in page.text
            assert (await client.get(asset)).status_code == 200


# --- cross-site state changes -------------------------------------------------------------------


async def _session_cookie(system: System, username: str) -> dict[str, str]:
    return {"Cookie": f"sv_token={await system.token(username)}"}


async def test_a_cookie_authenticated_post_from_another_site_is_refused(system: System) -> None:
    cookie = await _session_cookie(system, "operator1")
    for extra in ({"Origin": "https://evil.example"}, {"Referer": "https://evil.example/form"}, {}):
        response = await system.client("intake").post(
            "/api/v1/complaints", json=fixtures.complaint(), headers=cookie | extra
        )
        assert response.status_code == 403, (extra, response.text)
        assert "来源" in response.json()["detail"]
    rating = await system.client("feedback").post(
        "/api/v1/cases/any/rating",
        json={"rating": "satisfied"},
        headers=await _session_cookie(system, "operator1") | {"Origin": "null"},
    )
    assert rating.status_code == 403


async def test_a_cookie_authenticated_post_from_a_sibling_page_goes_through(system: System) -> None:
    cookie = await _session_cookie(system, "operator1")
    for extra in (
        {"Origin": system.urls["intake"]},
        {"Origin": system.urls["verification"]},
        {"Referer": system.urls["feedback"] + "/deputy"},
    ):
        response = await system.client("intake").post(
            "/api/v1/complaints", json=fixtures.complaint(), headers=cookie | extra
        )
        assert response.status_code == 201, (extra, response.text)


async def test_a_bearer_token_is_not_subject_to_the_origin_check(system: System) -> None:
    response = await system.call(
        "intake",
        "POST",
        "/api/v1/complaints",
        as_user="operator1",
        json=fixtures.complaint(),
        headers={"Origin": "https://evil.example"},
    )
    assert response.status_code == 201, response.text


# --- file modes ---------------------------------------------------------------------------------


def test_sqlite_files_are_private(tmp_path: Path) -> None:
    database = tmp_path / "fresh" / "service.db"
    private_sqlite_files(f"sqlite:///{database}")
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    assert stat.S_IMODE(database.parent.stat().st_mode) == 0o700
    loose = tmp_path / "loose.db"
    loose.write_bytes(b"")
    os.chmod(loose, 0o644)
    (tmp_path / "loose.db-wal").write_bytes(b"")
    private_sqlite_files(f"sqlite:///{loose}")
    assert stat.S_IMODE(loose.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "loose.db-wal").stat().st_mode) == 0o600


async def test_the_running_services_databases_are_private(system: System) -> None:
    for name in SERVICE_NAMES:
        url = system.env[SERVICES[name].database_env]
        if not url.startswith("sqlite"):
            continue
        database = str(make_url(url).database)
        assert _mode(database) == 0o600, database


def _mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)
