"""Each bureau's 分管领导 and contact (issue 12 §1): organisation data supervisors keep in routing,
read by feedback's delivery worker with its own service token.
"""

from __future__ import annotations

from typing import Any

from shared.auth import BUREAU_CONTACT_AUDIENCE, CONTACT_AUDIENCE, TokenSigner, service_token
from shared.reference import load_organisation
from tests.support import System


def feedback_token(system: System, audience: str = BUREAU_CONTACT_AUDIENCE) -> dict[str, str]:
    signer = TokenSigner.from_pem(system.env["CALLER_PRIVATE_KEY"], key_id=system.env["CALLER_KEY_ID"])
    return {"Authorization": f"Bearer {service_token(service='feedback', signer=signer, audience=audience)}"}


async def bureaus(system: System) -> dict[str, dict[str, Any]]:
    response = await system.call("routing", "GET", "/api/v1/bureaus", as_user="supervisor1")
    assert response.status_code == 200, response.text
    return {row["code"]: row for row in response.json()}


async def test_every_bureau_is_listed_with_a_demo_leader(system: System) -> None:
    organisation = load_organisation()
    listed = await bureaus(system)
    assert set(listed) == {organisation.city_code, *organisation.counties}
    shenqiu = listed["411624"]
    assert shenqiu["bureau_name"] == "沈丘县公安局" and shenqiu["leader_name"]
    assert shenqiu["phone"] and shenqiu["phone"].startswith("1390000")
    assert shenqiu["leader_username"] == "leader-411624"
    assert any(row["email"] and row["email"].endswith("@example.gov.cn") for row in listed.values())
    assert any(row["phone"] is None for row in listed.values())
    for user in ("operator1", "inspector-411624", "leader-411624", "deputy1"):
        refused = await system.call("routing", "GET", "/api/v1/bureaus", as_user=user)
        assert refused.status_code == 403, user


async def test_a_supervisor_edits_a_leader_and_the_change_is_audited(system: System) -> None:
    body = {
        "leader_name": "韩立峰",
        "leader_title": "副局长",
        "phone": "0394-5212345",
        "email": "hanlf@example.gov.cn",
        "leader_username": "leader-411625",
    }
    changed = await system.call("routing", "PUT", "/api/v1/bureaus/411625", as_user="supervisor1", json=body)
    assert changed.status_code == 200, changed.text
    assert changed.json() | body == changed.json() and changed.json()["updated_by"] == "supervisor1"
    assert (await bureaus(system))["411625"]["leader_name"] == "韩立峰"
    trail = await system.call("routing", "GET", "/api/v1/audit/org:bureau:411625", as_user="supervisor1")
    assert trail.status_code == 200, trail.text
    text = trail.text
    assert "bureau_contact_changed" in text and "0394-5212345" not in text and "hanlf@" not in text
    cleared = await system.call(
        "routing", "PUT", "/api/v1/bureaus/411625", as_user="supervisor1", json=body | {"email": ""}
    )
    assert cleared.status_code == 200 and cleared.json()["email"] is None
    refused = await system.call("routing", "PUT", "/api/v1/bureaus/411625", as_user="operator1", json=body)
    assert refused.status_code == 403


async def test_bad_phone_or_email_names_the_field_in_chinese_and_changes_nothing(system: System) -> None:
    before = (await bureaus(system))["411621"]
    for field, value, words in (
        ("phone", "12345", "联系电话"),
        ("phone", "1390000abcd", "联系电话"),
        ("email", "not-an-address", "电子邮箱"),
        ("email", "a@b", "电子邮箱"),
    ):
        response = await system.call(
            "routing",
            "PUT",
            "/api/v1/bureaus/411621",
            as_user="supervisor1",
            json={"leader_name": "改了名字", field: value},
            headers={"Accept-Language": "zh-CN"},
        )
        assert response.status_code == 422, response.text
        errors = response.json()["detail"]
        assert [e["field"] for e in errors] == [field], errors
        assert words in errors[0]["message"]
    assert (await bureaus(system))["411621"] == before
    unknown = await system.call(
        "routing", "PUT", "/api/v1/bureaus/999999", as_user="supervisor1", json={"leader_name": "某某"}
    )
    assert unknown.status_code == 404
    extra = await system.call(
        "routing", "PUT", "/api/v1/bureaus/411621", as_user="supervisor1", json={"mobile": "13900001111"}
    )
    assert extra.status_code == 422


async def test_feedback_reads_a_leaders_contact_with_its_own_token_for_that_call(system: System) -> None:
    client = system.client("routing")
    path = "/internal/bureaus/411624/contact"
    found = await client.get(path, headers=feedback_token(system))
    assert found.status_code == 200, found.text
    contact = found.json()
    assert set(contact) == {"name", "phone", "email"} and contact["phone"].startswith("1390000")
    unknown = await client.get("/internal/bureaus/999999/contact", headers=feedback_token(system))
    assert unknown.status_code == 404
    refused = {
        "no token": {},
        "intake's contact audience": feedback_token(system, CONTACT_AUDIENCE),
        "a person's token": await system.auth("supervisor1"),
    }
    for what, headers in refused.items():
        response = await client.get(path, headers=headers)
        assert response.status_code == 401, what
