"""A county bureau's 分管领导 (issue 12): an account of role ``leader`` for one county, no identities."""

from __future__ import annotations

import asyncio

import httpx
import jwt
import pytest
from sqlmodel import select

from services.cli import main as cli_main
from services.intake.accounts import create_user, demo_accounts, validate_account
from services.intake.models import User
from shared.reference import load_organisation
from tests import fixtures
from tests.support import System

LEADER = "leader-411624"


async def test_every_county_bureau_has_a_demo_leader_who_signs_in_with_the_county_in_the_token(
    system: System,
) -> None:
    organisation = load_organisation()
    leaders = [a for a in demo_accounts(organisation) if a["role"] == "leader"]
    assert {a["county_code"] for a in leaders} == set(organisation.counties)
    shenqiu = next(a for a in leaders if a["username"] == LEADER)
    assert shenqiu["display_name"] == "沈丘县公安局分管领导"

    response = await system.call(
        "intake", "POST", "/api/v1/auth/token", data={"username": LEADER, "password": "demo"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["role"] == "leader"
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert claims["role"] == "leader" and claims["county"] == "411624"
    me = await system.call("intake", "GET", "/api/v1/auth/me", as_user=LEADER)
    assert me.status_code == 200 and me.json()["role"] == "leader"


async def test_a_leader_never_reads_a_complainants_identity(system: System) -> None:
    created = await system.call(
        "intake", "POST", "/api/v1/complaints", as_user="operator1", json=fixtures.complaint()
    )
    assert created.status_code == 201, created.text
    complaint_id = created.json()["id"]
    refused = {
        "identity": f"/api/v1/complaints/{complaint_id}/identity?purpose=核查&reason=核实情况",
        "contact": f"/api/v1/complaints/{complaint_id}/contact?purpose=答复送达&reason=发送答复",
        "identity accesses": f"/api/v1/complaints/{complaint_id}/identity-accesses",
        "the complaint": f"/api/v1/complaints/{complaint_id}",
        "the complaints": "/api/v1/complaints",
        "the purposes": "/api/v1/identity-purposes",
    }
    for what, path in refused.items():
        response = await system.call("intake", "GET", path, as_user=LEADER)
        assert response.status_code in (401, 403), (what, response.status_code)
    recorded = await system.call(
        "intake", "POST", "/api/v1/complaints", as_user=LEADER, json=fixtures.complaint()
    )
    assert recorded.status_code == 403


async def test_a_leader_lands_on_the_todo_page(system: System) -> None:
    # A client of its own: the sign-in cookies must not ride along the other tests' API calls.
    async with httpx.AsyncClient(base_url=system.urls["intake"], timeout=20.0) as client:
        response = await client.post(
            "/login",
            data={"username": LEADER, "password": "demo"},
            headers={"Origin": system.urls["intake"]},
            follow_redirects=False,
        )
    assert response.status_code in (302, 303), response.text
    assert response.headers["location"].endswith("/todo")
    assert response.headers["location"].startswith(system.urls["feedback"])


def test_a_leader_needs_a_known_county() -> None:
    organisation = load_organisation()
    for county in (None, "", "999999"):
        with pytest.raises(ValueError, match="county"):
            validate_account(
                role="leader",
                team_code=None,
                deputy_name=None,
                deputy_delegation=None,
                county_code=county,
                organisation=organisation,
            )
    with pytest.raises(ValueError, match="leader"):
        validate_account(
            role="operator",
            team_code=None,
            deputy_name=None,
            deputy_delegation=None,
            county_code="411624",
            organisation=organisation,
        )
    validate_account(
        role="leader",
        team_code=None,
        deputy_name=None,
        deputy_delegation=None,
        county_code="411600",
        organisation=organisation,
    )


async def test_create_user_makes_a_leader_and_refuses_one_without_a_county(
    system: System, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in system.env.items():
        monkeypatch.setenv(name, value)
    password = "纪律严明 督察2026 春"
    base = ["create-user", "--role", "leader", "--password", password, "--display-name", "郸城县分管领导"]

    def run(*argv: str) -> int:
        # The command runs its own event loop: off this test's loop, as from a shell.
        return cli_main(list(argv))

    refused = await asyncio.to_thread(run, *base, "--username", "leader-nocounty")
    assert refused == 2 and "--county" in capsys.readouterr().err
    unknown = await asyncio.to_thread(run, *base, "--username", "leader-unknown", "--county", "999999")
    assert unknown == 2 and "unknown county code" in capsys.readouterr().err
    created = await asyncio.to_thread(run, *base, "--username", "leader-cli-411625", "--county", "411625")
    assert created == 0, capsys.readouterr().err

    factory = system.apps["intake"].state.runtime.session_factory
    async with factory() as session:
        users = {u.username: u for u in await session.exec(select(User))}
    assert "leader-nocounty" not in users and "leader-unknown" not in users
    assert users["leader-cli-411625"].role == "leader" and users["leader-cli-411625"].county_code == "411625"
    signed = await system.call(
        "intake", "POST", "/api/v1/auth/token", data={"username": "leader-cli-411625", "password": password}
    )
    assert signed.status_code == 200, signed.text
    claims = jwt.decode(signed.json()["access_token"], options={"verify_signature": False})
    assert claims["county"] == "411625"


async def test_create_user_refuses_a_leader_for_an_unknown_county_in_the_domain(system: System) -> None:
    factory = system.apps["intake"].state.runtime.session_factory
    async with factory() as session, session.begin():
        with pytest.raises(ValueError, match="county"):
            await create_user(session=session, username="leader-x", password="x", role="leader")
