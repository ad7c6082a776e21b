"""Who sees what at intake: the complainant masked in lists, recorded identity reads, roles, tokens.

Through its HTTP API with all four services running; one token serves at all four services.
"""

from __future__ import annotations

import pytest

from tests import fixtures
from tests.support import System, eventually
from tests.test_intake_api import CJK, OTHER_VALID_ID
from tests.test_pipeline import create_complaint, current_assignment

# --- identity protection --------------------------------------------------------------------------


async def test_lists_mask_the_complainant_and_identity_reads_are_recorded(system: System) -> None:
    phone = fixtures.unique_mobile()
    created = await create_complaint(system, complainant={"phone": phone, "id_number": OTHER_VALID_ID})

    found = await system.call(
        "intake", "GET", "/api/v1/complaints", as_user="operator1", params={"phone": phone}
    )
    assert found.status_code == 200
    assert [c["id"] for c in found.json()] == [created["id"]]
    row = found.json()[0]
    assert row["complainant_phone"] == f"{phone[:3]}****{phone[-4:]}"
    assert row["complainant_name"] == "王**"
    listings = [
        found,
        await system.call("intake", "GET", "/api/v1/complaints", as_user="operator1"),
        await system.call(
            "intake", "GET", "/api/v1/complaints", as_user="supervisor1", params={"phone": phone}
        ),
        await system.call(
            "intake",
            "GET",
            "/api/v1/complaints",
            as_user="operator1",
            params={"tracking_code": created["tracking_code"]},
        ),
        await system.call("intake", "GET", f"/api/v1/complaints/{created['id']}", as_user="operator1"),
    ]
    for listing in listings:
        assert listing.status_code == 200, listing.text
        assert phone not in listing.text
        assert "王建国" not in listing.text
        assert OTHER_VALID_ID not in listing.text

    identity_path = f"/api/v1/complaints/{created['id']}/identity"
    by_operator = await system.call(
        "intake",
        "GET",
        identity_path,
        as_user="operator1",
        params={"purpose": "回访", "reason": "回访核实身份"},
    )
    assert by_operator.status_code == 200, by_operator.text
    assert by_operator.json() == {
        "complaint_id": created["id"],
        "anonymous": False,
        "name": "王建国",
        "phone": phone,
        "id_number": OTHER_VALID_ID,
    }

    async def routed_to_county() -> bool:
        response = await system.call(
            "intake", "GET", f"/api/v1/complaints/{created['id']}", as_user="operator1"
        )
        return bool(response.json()["assigned_team_code"] == "411681")

    await eventually(routed_to_county, what="intake to learn the assignment")
    by_team = await system.call(
        "intake",
        "GET",
        identity_path,
        as_user="inspector-411681",
        params={"purpose": "核查需要", "reason": "联系投诉人了解情况"},
    )
    assert by_team.status_code == 200, by_team.text
    assert by_team.json()["phone"] == phone
    assert (await system.call("intake", "GET", identity_path, as_user="inspector-411602")).status_code == 404
    assert (await system.call("intake", "GET", identity_path, as_user="supervisor1")).status_code == 403
    assert (await system.call("intake", "GET", identity_path, as_user="deputy1")).status_code == 403

    accesses = await system.call(
        "intake", "GET", f"/api/v1/complaints/{created['id']}/identity-accesses", as_user="supervisor1"
    )
    assert accesses.status_code == 200, accesses.text
    assert [(a["accessor"], a["purpose"]) for a in accesses.json()] == [
        ("operator1", "回访"),
        ("inspector-411681", "核查需要"),
    ]
    assert all(a["at"] and a["role"] for a in accesses.json())
    for user in ("operator1", "inspector-411681"):
        refused = await system.call(
            "intake", "GET", f"/api/v1/complaints/{created['id']}/identity-accesses", as_user=user
        )
        assert refused.status_code == 403


async def test_inspector_of_another_team_cannot_see_the_complaint(system: System) -> None:
    created = await create_complaint(system)
    await current_assignment(system, created["id"])

    async def visible_to_team() -> bool:
        response = await system.call(
            "intake", "GET", f"/api/v1/complaints/{created['id']}", as_user="inspector-411681"
        )
        return response.status_code == 200

    await eventually(visible_to_team, what="the assigned team to see the complaint")
    other = await system.call(
        "intake", "GET", f"/api/v1/complaints/{created['id']}", as_user="inspector-411602"
    )
    assert other.status_code == 404


async def test_search_by_tracking_code_ignores_case(system: System) -> None:
    created = await create_complaint(system)
    for code in (
        created["tracking_code"],
        created["tracking_code"].lower(),
        f"  {created['tracking_code'].lower()} ",
    ):
        found = await system.call(
            "intake", "GET", "/api/v1/complaints", as_user="operator1", params={"tracking_code": code}
        )
        assert found.status_code == 200, found.text
        assert [c["id"] for c in found.json()] == [created["id"]], code


# --- roles and sign-in ----------------------------------------------------------------------------

INTAKE_ENDPOINTS = [
    ("POST", "/api/v1/complaints"),
    ("GET", "/api/v1/complaints"),
    ("GET", "/api/v1/complaints/some-id"),
    ("GET", "/api/v1/complaints/some-id/identity"),
    ("GET", "/api/v1/complaints/some-id/contact?purpose=deliver"),
    ("GET", "/api/v1/complaints/some-id/identity-accesses"),
    ("POST", "/api/v1/suggestions"),
    ("GET", "/api/v1/suggestions"),
    ("GET", "/api/v1/auth/me"),
]


@pytest.mark.parametrize(("method", "path"), INTAKE_ENDPOINTS)
async def test_every_intake_endpoint_needs_a_token(system: System, method: str, path: str) -> None:
    body = fixtures.complaint() if "complaints" in path else fixtures.suggestion()
    response = await system.call("intake", method, path, json=body if method == "POST" else None)
    assert response.status_code == 401, response.text
    garbage = await system.call(
        "intake",
        method,
        path,
        json=body if method == "POST" else None,
        headers={"Authorization": "Bearer not-a-token"},
    )
    assert garbage.status_code == 401, garbage.text


async def test_roles_decide_who_records_and_who_lists(system: System) -> None:
    for user in ("deputy1", "inspector-411681"):
        response = await system.call(
            "intake", "POST", "/api/v1/complaints", as_user=user, json=fixtures.complaint()
        )
        assert response.status_code == 403, (user, response.text)
        suggestion = await system.call(
            "intake", "POST", "/api/v1/suggestions", as_user=user, json=fixtures.suggestion()
        )
        assert suggestion.status_code == 403, (user, suggestion.text)
    for user in ("inspector-411681", "deputy1"):
        assert (await system.call("intake", "GET", "/api/v1/complaints", as_user=user)).status_code == 403
        assert (await system.call("intake", "GET", "/api/v1/suggestions", as_user=user)).status_code == 403
    assert (
        await system.call("intake", "GET", "/api/v1/complaints", as_user="supervisor1")
    ).status_code == 200


async def test_wrong_password_is_refused_in_chinese(system: System) -> None:
    client = system.client("intake")
    for username, password in (("operator1", "wrong"), ("nobody", "demo"), ("operator1", "Demo")):
        response = await client.post("/api/v1/auth/token", data={"username": username, "password": password})
        assert response.status_code == 401, response.text
        assert CJK.search(str(response.json()["detail"])), response.text
        assert "access_token" not in response.text


async def test_one_token_works_at_all_four_services(system: System) -> None:
    signed_in = await system.client("intake").post(
        "/api/v1/auth/token", data={"username": "inspector-411681", "password": "demo"}
    )
    assert signed_in.status_code == 200, signed_in.text
    assert signed_in.json()["role"] == "inspector" and signed_in.json()["team_code"] == "411681"
    inspector = {"Authorization": f"Bearer {signed_in.json()['access_token']}"}
    assert (await system.call("intake", "GET", "/api/v1/auth/me", headers=inspector)).json()[
        "username"
    ] == "inspector-411681"
    assert (await system.call("verification", "GET", "/api/v1/tasks", headers=inspector)).status_code == 200
    assert (await system.call("routing", "GET", "/api/v1/teams", headers=inspector)).status_code == 200

    supervisor = await system.auth("supervisor1")
    assert (await system.call("intake", "GET", "/api/v1/complaints", headers=supervisor)).status_code == 200
    assert (await system.call("routing", "GET", "/api/v1/rules", headers=supervisor)).status_code == 200
    assert (await system.call("verification", "GET", "/api/v1/tasks", headers=supervisor)).status_code == 200
    assert (await system.call("feedback", "GET", "/api/v1/answers", headers=supervisor)).status_code == 200
    deputy = await system.auth("deputy1")
    assert (
        await system.call("feedback", "GET", "/api/v1/deputy/suggestions", headers=deputy)
    ).status_code == 200
