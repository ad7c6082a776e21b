"""Open311 GeoReport v2 in intake (issue 15 §3), driven by a published Open311 client (georeport)
and by hand where the client has no call (it cannot POST) or to see the XML and the refusals."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest
import xmltodict
from georeport import GeoReport

from shared.web import COOKIE_NAME
from tests.access_world import SUMMARY, AccessWorld
from tests.fixtures import unique_mobile
from tests.support import System, eventually

# Counts the whole database's figures: a system of its own, on empty databases.
pytestmark = pytest.mark.private_system

DEMO_KEY = "demo-open311-key"
NAME, ACCOUNT = "赵德明", "11月20日在项城市公安局花园派出所办理户口迁移，民警态度恶劣，拒不说明理由。"
PLACE = "项城市莲花大道88号"


def client(system: System, *, api_key: str | None = DEMO_KEY, output_format: str = "json") -> GeoReport:
    return GeoReport(f"{system.urls['intake']}/open311/v2", api_key=api_key, output_format=output_format)


def request_form(phone: str, **overrides: str | None) -> dict[str, str]:
    form: dict[str, str | None] = {
        "api_key": DEMO_KEY,
        "service_code": "rude_conduct",
        "description": ACCOUNT,
        "address_string": PLACE,
        "lat": "33.443",
        "long": "114.879",
        "first_name": "德明",
        "last_name": "赵",
        "email": "zdm@example.cn",
        "attribute[county_code]": "411681",
        "attribute[accused_unit]": "项城市公安局花园派出所",
        "attribute[officer_name]": "孙某",
        "attribute[badge_no]": "045678",
        "attribute[phone]": phone,
    } | overrides
    return {key: value for key, value in form.items() if value is not None}


async def post_request(system: System, form: dict[str, str], fmt: str = "json") -> httpx.Response:
    return await system.client("intake").post(f"/open311/v2/requests.{fmt}", data=form)


def identity_free(text: str, phone: str) -> None:
    for secret in (
        NAME,
        "德明",
        phone,
        phone[-4:] + '"',
        ACCOUNT[:10],
        PLACE,
        "zdm@example.cn",
        "孙某",
        "045678",
    ):
        assert secret not in text, f"{secret!r} in {text[:500]}"


async def case_id_of(system: System, tracking_code: str) -> dict[str, Any]:
    found = await system.call(
        "intake", "GET", "/api/v1/complaints", as_user="supervisor1", params={"tracking_code": tracking_code}
    )
    assert found.status_code == 200, found.text
    assert len(found.json()) == 1, found.text
    return dict(found.json()[0])


async def test_a_connecting_system_files_a_complaint_and_follows_it_to_its_close(system: System) -> None:
    georeport = client(system)
    services = await asyncio.to_thread(georeport.get_service_list)
    by_code = {s["service_code"]: s for s in services}
    assert by_code["rude_conduct"]["service_name"] == "态度粗暴"
    assert by_code["bribery"]["metadata"] is True and by_code["bribery"]["type"] == "realtime"
    definition = await asyncio.to_thread(georeport.get_service_definition, "rude_conduct")
    attributes = {a["code"]: a for a in definition["attributes"]}
    assert (
        attributes["county_code"]["datatype"] == "singlevaluelist" and attributes["county_code"]["required"]
    )
    assert "411681" in {v["key"] for v in attributes["county_code"]["values"]}
    assert {"accused_unit", "phone", "badge_no", "officer_name"} <= set(attributes)

    # The client has no call to create a request: the form as GeoReport v2 defines it, by hand.
    phone = unique_mobile()
    posted = await post_request(system, request_form(phone))
    assert posted.status_code == 201, posted.text
    [answer] = posted.json()
    tracking_code = answer["service_request_id"]
    assert answer["account_id"] is None and tracking_code in answer["service_notice"]
    secret = re.search(r"查询密码 (\S+?)（", answer["service_notice"])
    assert secret, answer

    # The same complaint the form would have made: channel 对接平台, identity sealed and masked.
    complaint = await case_id_of(system, tracking_code)
    assert complaint["channel"] == "open311" and complaint["created_by"] == "open311:演示对接平台"
    assert complaint["complainant_name"] != NAME and complaint["complainant_phone"] != phone
    assert complaint["accused_unit"] == "项城市公安局花园派出所" and complaint["county_code"] == "411681"
    assert complaint["officers"][0]["badge_no"] == "045678"
    assert PLACE in (complaint["place"] or "")
    identity = await system.call(
        "intake",
        "GET",
        f"/api/v1/complaints/{complaint['id']}/identity",
        as_user="operator1",
        params={"purpose": "核查需要", "reason": "核实对接平台转来的投诉"},
    )
    assert identity.status_code == 200, identity.text
    assert identity.json()["name"] == NAME and identity.json()["phone"] == phone

    # The query secret in the notice is the complainant's: the public query opens with it.
    async def public_query_opens() -> bool:
        public = await system.call(
            "feedback",
            "POST",
            "/api/v1/public/lookup",
            json={"tracking_code": tracking_code, "query_secret": secret[1]},
        )
        return public.status_code == 200

    await eventually(public_query_opens, what="the public query opens with the notice's secret")

    request = await asyncio.to_thread(georeport.get_service_request, tracking_code)
    assert request["status"] == "open" and request["service_code"] == "rude_conduct"
    assert request["service_name"] == "态度粗暴" and request["requested_datetime"]
    listed = await asyncio.to_thread(georeport.get_service_requests, service_request_id=tracking_code)
    assert [r["service_request_id"] for r in listed] == [tracking_code]
    as_xml = await asyncio.to_thread(client(system, output_format="xml").get_service_request, tracking_code)
    assert as_xml["status"] == "open" and as_xml["service_request_id"] == tracking_code
    for path in (f"/open311/v2/requests/{tracking_code}.json", f"/open311/v2/requests/{tracking_code}.xml"):
        identity_free((await system.client("intake").get(path)).text, phone)
    everything = await system.client("intake").get("/open311/v2/requests.json", params={"status": "open"})
    assert tracking_code in everything.text
    identity_free(everything.text, phone)

    # Concluded and answered through the system: the request is closed.
    world = AccessWorld(system)
    obj = await world._routed({"id": complaint["id"], "tracking_code": tracking_code}, id_key="complaint_id")
    await world._claim(obj)
    await world._finding(obj, {"outcome": "partly_substantiated", "summary": SUMMARY})
    await world._approve(obj | {"answer_id": await world._answer_of(obj, "pending_approval")})

    async def delivered_by_phone() -> bool:
        # No text-message gateway here: an operator phones the complainant and records it.
        listed = await system.call(
            "feedback", "GET", "/api/v1/deliveries", as_user="operator1", params={"case_id": complaint["id"]}
        )
        assert listed.status_code == 200, listed.text
        if any(d["status"] == "sent" for d in listed.json()):
            return True
        for delivery in listed.json():
            resolved = await system.call(
                "feedback",
                "POST",
                f"/api/v1/deliveries/{delivery['id']}/resolve",
                as_user="operator1",
                json={"channel": "phone", "note": "已电话告知投诉人核查结果"},
            )
            if resolved.status_code == 200:
                return True
        return False

    await eventually(delivered_by_phone, timeout=30, what="the answer delivered")

    async def closed() -> bool:
        found = await asyncio.to_thread(georeport.get_service_request, tracking_code)
        return bool(found["status"] == "closed")

    await eventually(closed, timeout=30, what="the Open311 request closed once answered")
    closed_ones = await asyncio.to_thread(
        georeport.get_service_requests, service_code="rude_conduct", status="closed"
    )
    assert tracking_code in {r["service_request_id"] for r in closed_ones}


async def test_xml_as_the_spec_has_it(system: System) -> None:
    intake = system.client("intake")
    services = xmltodict.parse((await intake.get("/open311/v2/services.xml")).content)
    codes = [s["service_code"] for s in services["services"]["service"]]
    assert "rude_conduct" in codes and services["services"]["service"][0]["metadata"] == "true"
    definition = xmltodict.parse((await intake.get("/open311/v2/services/bribery.xml")).content)
    attributes = definition["service_definition"]["attributes"]["attribute"]
    county = next(a for a in attributes if a["code"] == "county_code")
    assert any(v["key"] == "411681" for v in county["values"]["value"])

    phone = unique_mobile()
    created = await post_request(system, request_form(phone), fmt="xml")
    assert created.status_code == 201, created.text
    assert created.headers["content-type"].startswith("application/xml")
    request = xmltodict.parse(created.content)["service_requests"]["request"]
    assert request["service_request_id"].startswith("C") and request["service_notice"]

    unknown = await intake.get("/open311/v2/services/no_such_service.xml")
    assert unknown.status_code == 404
    error = xmltodict.parse(unknown.content)["errors"]["error"]
    assert error["code"] == "404" and "service_code" in error["description"]


async def test_a_wrong_or_revoked_key_is_refused_and_nothing_is_recorded(system: System) -> None:
    phone = unique_mobile()
    wrong = await post_request(system, request_form(phone, api_key="not-a-key"))
    assert wrong.status_code == 403
    assert wrong.json()[0]["code"] == 403 and "api_key" in wrong.json()[0]["description"]
    xml = await post_request(system, request_form(phone, api_key=None), fmt="xml")
    assert xml.status_code == 403 and xmltodict.parse(xml.content)["errors"]["error"]["code"] == "403"

    denied = await system.call(
        "intake", "POST", "/api/v1/open311-keys", as_user="operator1", json={"name": "某平台"}
    )
    assert denied.status_code == 403
    issued = await system.call(
        "intake", "POST", "/api/v1/open311-keys", as_user="supervisor1", json={"name": "项城市12345热线平台"}
    )
    assert issued.status_code == 201, issued.text
    key = issued.json()["api_key"]
    again = await system.call(
        "intake", "POST", "/api/v1/open311-keys", as_user="supervisor1", json={"name": "项城市12345热线平台"}
    )
    assert again.status_code == 409
    listed = await system.call("intake", "GET", "/api/v1/open311-keys", as_user="supervisor1")
    assert listed.status_code == 200 and key not in listed.text and "key_hash" not in listed.text
    assert any(k["name"] == "项城市12345热线平台" and k["active"] for k in listed.json())

    accepted = await post_request(system, request_form(unique_mobile(), api_key=key))
    assert accepted.status_code == 201, accepted.text
    revoked = await system.call(
        "intake", "POST", f"/api/v1/open311-keys/{'项城市12345热线平台'}/revoke", as_user="supervisor1"
    )
    assert revoked.status_code == 200 and revoked.json()["active"] is False
    refused = await post_request(system, request_form(phone, api_key=key))
    assert refused.status_code == 403
    nothing = await system.call(
        "intake", "GET", "/api/v1/complaints", as_user="supervisor1", params={"phone": phone}
    )
    assert nothing.json() == []


async def test_a_missing_attribute_or_a_wrong_value_is_named_in_chinese(system: System) -> None:
    phone = unique_mobile()
    missing = await post_request(system, request_form(phone, **{"attribute[county_code]": None}))
    assert missing.status_code == 400, missing.text
    [problem] = missing.json()
    assert problem["code"] == 400 and problem["description"].startswith("attribute[county_code]：")
    assert "必填" in problem["description"]

    unknown = await post_request(system, request_form(phone, service_code="parking"))
    assert unknown.status_code == 400 and unknown.json()[0]["description"].startswith("service_code：")
    assert "未知的投诉类别" in unknown.json()[0]["description"]
    no_name = await post_request(system, request_form(phone, first_name=None, last_name=None))
    assert no_name.status_code == 400 and "实名投诉需填写投诉人姓名" in no_name.json()[0]["description"]
    bad_phone = await post_request(system, request_form("12345"))
    assert bad_phone.status_code == 400 and bad_phone.json()[0]["description"].startswith(
        "attribute[phone]："
    )
    bad_place = await post_request(system, request_form(phone, lat="north"))
    assert bad_place.status_code == 400 and "经纬度" in bad_place.json()[0]["description"]
    nothing = await system.call(
        "intake", "GET", "/api/v1/complaints", as_user="supervisor1", params={"phone": phone}
    )
    assert nothing.json() == []

    anonymous = await post_request(
        system, request_form(phone, first_name=None, last_name=None, **{"attribute[anonymous]": "true"})
    )
    assert anonymous.status_code == 201, anonymous.text

    intake = system.client("intake")
    wrong_status = await intake.get("/open311/v2/requests.json", params={"status": "pending"})
    assert wrong_status.status_code == 400 and wrong_status.json()[0]["description"].startswith("status：")
    too_long = await intake.get(
        "/open311/v2/requests.json",
        params={"start_date": "2026-01-01T00:00:00Z", "end_date": "2026-06-01T00:00:00Z"},
    )
    assert too_long.status_code == 400 and "90" in too_long.json()[0]["description"]
    unknown_request = await intake.get("/open311/v2/requests/C-NO-SUCH.json")
    assert unknown_request.status_code == 404 and unknown_request.json()[0]["code"] == 404


async def test_the_supervisor_page_lists_the_connecting_systems_without_their_keys(system: System) -> None:
    intake = system.client("intake")
    cookie = {"Cookie": f"{COOKIE_NAME}={await system.token('supervisor1')}"}
    page = await intake.get("/open311-keys", headers=cookie)
    assert page.status_code == 200, page.text
    assert "对接系统" in page.text and "open311-keys" in page.text and DEMO_KEY not in page.text
    operator = {"Cookie": f"{COOKIE_NAME}={await system.token('operator1')}"}
    refused = await intake.get("/open311-keys", headers=operator, follow_redirects=False)
    assert refused.status_code in (302, 303, 403)
