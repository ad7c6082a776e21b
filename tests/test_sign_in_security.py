"""Issue 14, items 4-6: only intake signs, tokens are revoked at once, guessing passwords is braked.

The four services run in this process with their own system (the brake's counts and the
locks must not touch the other test modules' sign-ins); the brake's wait is capped at a
second so the lock comes within the test's time.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlmodel import select

from services.intake.accounts import WeakPassword, check_password_strength
from services.intake.models import User
from shared.auth import CONTACT_AUDIENCE, TokenSigner, service_token
from shared.keys import load_private_key
from tests import fixtures
from tests.support import NatsServer, System, eventually, running_system

# One authenticated read per service, open to a supervisor.
PROBES = {
    "intake": "/api/v1/stats",
    "routing": "/api/v1/rules",
    "verification": "/api/v1/tasks",
    "feedback": "/api/v1/deliveries",
}
BRAKE = {
    "SIGN_IN_FREE_FAILURES": "3",
    "SIGN_IN_BACKOFF_MAX_SECONDS": "1",
    "SIGN_IN_LOCK_AFTER": "10",
    "SIGN_IN_ADDRESS_FAILURES": "1000",
}


@pytest.fixture(scope="module")
async def secure(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[System]:
    root: Path = tmp_path_factory.mktemp("sign-in-security")
    async with running_system(
        backend="sqlite", root=root, nats_url=nats_server.url, extra_env=BRAKE
    ) as system:
        yield system


async def sign_in(system: System, username: str, password: str = "demo") -> httpx.Response:
    return await system.client("intake").post(
        "/api/v1/auth/token", data={"username": username, "password": password}
    )


async def fresh_token(system: System, username: str) -> str:
    response = await sign_in(system, username)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


async def statuses(system: System, token: str) -> dict[str, int]:
    headers = {"Authorization": f"Bearer {token}"}
    answers = await asyncio.gather(
        *(system.client(name).get(path, headers=headers) for name, path in PROBES.items())
    )
    return {name: answer.status_code for name, answer in zip(PROBES, answers, strict=True)}


def forged_claims(username: str = "ghost-supervisor", role: str = "supervisor") -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": username,
        "role": role,
        "iss": "police-supervision",
        "aud": "police-supervision",
        "iat": now,
        "exp": now + 600,
        "jti": secrets.token_hex(8),
    }


def hs256(claims: dict[str, Any], secret: str, headers: dict[str, str]) -> str:
    """An HS256 token made by hand: PyJWT refuses a PEM as an HMAC secret, an attacker does not."""
    segments = [
        base64.urlsafe_b64encode(json.dumps(part, separators=(",", ":")).encode()).rstrip(b"=")
        for part in ({"alg": "HS256", "typ": "JWT", **headers}, claims)
    ]
    signing_input = b".".join(segments)
    signature = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode()


def non_intake_secrets(system: System) -> dict[str, str]:
    """Every value of the other services' settings that could serve as a key, and intake's other keys."""
    names = (
        "SECRET_KEY",
        "IDENTITY_KEY",
        "CALLER_PRIVATE_KEY",
        "TOKEN_PUBLIC_KEYS",
        "FEEDBACK_CALLER_PUBLIC_KEYS",
    )
    return {name: system.env[name] for name in names}


async def test_a_supervisor_token_works_everywhere(secure: System) -> None:
    token = await fresh_token(secure, "supervisor1")
    assert await statuses(secure, token) == dict.fromkeys(PROBES, 200)
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
    assert jwt.get_unverified_header(token)["kid"] == secure.env["TOKEN_KEY_ID"]


async def test_tokens_signed_with_anything_but_intakes_key_are_refused_by_all_four(secure: System) -> None:
    forged: dict[str, str] = {}
    for name, value in non_intake_secrets(secure).items():
        for kid in ("", secure.env["TOKEN_KEY_ID"]):
            headers = {"kid": kid} if kid else {}
            forged[f"HS256 {name} kid={kid!r}"] = hs256(forged_claims(), value, headers)
    caller_key = load_private_key(secure.env["CALLER_PRIVATE_KEY"])
    for kid in (secure.env["TOKEN_KEY_ID"], secure.env["CALLER_KEY_ID"]):
        forged[f"EdDSA feedback's key kid={kid}"] = TokenSigner(key=caller_key, key_id=kid).sign(
            forged_claims()
        )
    stranger = TokenSigner(key=Ed25519PrivateKey.generate(), key_id=secure.env["TOKEN_KEY_ID"])
    forged["EdDSA a stranger's key"] = stranger.sign(forged_claims())
    forged["unsigned"] = jwt.encode(
        forged_claims(), "", algorithm="none", headers={"kid": secure.env["TOKEN_KEY_ID"]}
    )
    for what, token in forged.items():
        assert await statuses(secure, token) == dict.fromkeys(PROBES, 401), what


async def test_contact_needs_feedbacks_own_token_for_that_one_call(secure: System) -> None:
    created = await secure.call(
        "intake", "POST", "/api/v1/complaints", as_user="operator1", json=fixtures.complaint()
    )
    assert created.status_code == 201, created.text
    path = f"/api/v1/complaints/{created.json()['id']}/contact"
    params = {"purpose": "答复送达", "reason": "发送答复"}

    async def contact(token: str) -> int:
        response = await secure.client("intake").get(
            path, params=params, headers={"Authorization": f"Bearer {token}"}
        )
        return response.status_code

    feedback_signer = TokenSigner.from_pem(
        secure.env["CALLER_PRIVATE_KEY"], key_id=secure.env["CALLER_KEY_ID"]
    )
    assert (
        await contact(service_token(service="feedback", signer=feedback_signer, audience=CONTACT_AUDIENCE))
        == 200
    )
    service_claims = forged_claims("service:feedback", "service") | {"aud": CONTACT_AUDIENCE}
    refused = {
        "HS256 SECRET_KEY": hs256(service_claims, secure.env["SECRET_KEY"], {}),
        "HS256 feedback's public key": hs256(service_claims, secure.env["FEEDBACK_CALLER_PUBLIC_KEYS"], {}),
        "a stranger's Ed25519 key": TokenSigner(
            key=Ed25519PrivateKey.generate(), key_id=secure.env["CALLER_KEY_ID"]
        ).sign(service_claims),
        "feedback's key, another audience": service_token(
            service="feedback", signer=feedback_signer, audience="police-supervision"
        ),
        "feedback's key, ten minutes": feedback_signer.sign(service_claims),
        "a person's access token": await fresh_token(secure, "operator1"),
    }
    for what, token in refused.items():
        assert await contact(token) == 401, what


async def refused_everywhere(system: System, token: str) -> bool:
    return await statuses(system, token) == dict.fromkeys(PROBES, 401)


async def test_a_token_is_refused_by_all_four_at_once_after_sign_out(secure: System) -> None:
    token = await fresh_token(secure, "supervisor1")
    other = await fresh_token(secure, "supervisor1")
    assert await statuses(secure, token) == dict.fromkeys(PROBES, 200)
    signed_out = await secure.client("intake").post(
        "/api/v1/auth/logout", headers={"Authorization": f"Bearer {token}"}
    )
    assert signed_out.status_code == 204
    started = time.monotonic()
    # Intake refuses it from the moment it answered; the others as soon as the bucket's news reaches them.
    assert (await statuses(secure, token))["intake"] == 401
    await eventually(lambda: refused_everywhere(secure, token), timeout=2.0, what="sign-out seen by all four")
    assert time.monotonic() - started < 2.0
    # Only that token: the same person's other sign-in goes on.
    assert await statuses(secure, other) == dict.fromkeys(PROBES, 200)


async def test_a_deactivated_accounts_tokens_are_refused_and_it_cannot_sign_in(secure: System) -> None:
    token = await fresh_token(secure, "inspector-411681")
    me = await secure.client("intake").get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    not_allowed = await secure.call(
        "intake", "POST", "/api/v1/users/inspector-411681/deactivate", as_user="operator1"
    )
    assert not_allowed.status_code == 403
    deactivated = await secure.call(
        "intake", "POST", "/api/v1/users/inspector-411681/deactivate", as_user="supervisor1"
    )
    assert deactivated.status_code == 200, deactivated.text
    await eventually(
        lambda: refused_everywhere(secure, token), timeout=2.0, what="deactivation seen by all four"
    )
    assert (await sign_in(secure, "inspector-411681")).status_code == 401


async def test_thirty_wrong_passwords_brake_then_lock_until_a_supervisor_unlocks(secure: System) -> None:
    answers = [await sign_in(secure, "operator1", f"wrong-{n}") for n in range(30)]
    codes = [answer.status_code for answer in answers]
    assert codes[:3] == [401, 401, 401], codes
    braked = [answer for answer in answers if answer.status_code == 429]
    assert braked, codes
    assert all(int(answer.headers["Retry-After"]) >= 1 for answer in braked)
    # Waiting as told, the wrong passwords go on counting until the account is locked.
    for attempt in range(40):
        answer = await sign_in(secure, "operator1", f"still-wrong-{attempt}")
        if answer.status_code == 403:
            break
        if answer.status_code == 429:
            await asyncio.sleep(int(answer.headers["Retry-After"]))
    else:
        pytest.fail("the account was never locked")
    assert "锁定" in answer.json()["detail"]
    # The right password is refused as well while the account is locked.
    await asyncio.sleep(1.1)
    assert (await sign_in(secure, "operator1")).status_code == 403
    assert (
        await secure.call("intake", "POST", "/api/v1/users/operator1/unlock", as_user="deputy1")
    ).status_code == 403
    unlocked = await secure.call("intake", "POST", "/api/v1/users/operator1/unlock", as_user="supervisor1")
    assert unlocked.status_code == 200 and unlocked.json()["was_locked"] is True
    assert (await sign_in(secure, "operator1")).status_code == 200
    trail = await secure.call("intake", "GET", "/api/v1/audit/account:operator1", as_user="supervisor1")
    actions = [entry["action"] for entry in trail.json()["entries"]]
    assert actions == ["account.locked", "account.unlocked"], actions


async def test_the_sign_in_page_is_braked_too(secure: System) -> None:
    client = secure.client("intake")
    codes = []
    for n in range(30):
        page = await client.post("/login", data={"username": "inspector-411600", "password": f"x{n}"})
        codes.append(page.status_code)
        if page.status_code == 429:
            assert int(page.headers["Retry-After"]) >= 1
            assert "登录尝试过于频繁" in page.text
            break
    assert codes[-1] == 429, codes


async def test_an_old_scrypt_hash_is_upgraded_at_sign_in(secure: System) -> None:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(b"an old password 1", salt=salt, n=2**14, r=8, p=1)
    old_hash = f"scrypt${2**14}$8$1${salt.hex()}${digest.hex()}"
    factory = secure.apps["intake"].state.runtime.session_factory
    async with factory() as session, session.begin():
        session.add(User(username="old-timer", role="operator", password_hash=old_hash))
    assert (await sign_in(secure, "old-timer", "an old password 2")).status_code == 401
    assert (await sign_in(secure, "old-timer", "an old password 1")).status_code == 200
    async with factory() as session:
        stored = (await session.exec(select(User).where(User.username == "old-timer"))).one()
    assert stored.password_hash.startswith("$argon2id$")
    assert (await sign_in(secure, "old-timer", "an old password 1")).status_code == 200


async def test_the_pages_session_is_renewed_with_the_refresh_cookie_and_ended_by_sign_out(
    secure: System,
) -> None:
    origin = {"Origin": secure.urls["intake"]}
    async with httpx.AsyncClient(base_url=secure.urls["intake"], timeout=20.0) as browser:
        signed_in = await browser.post("/login", data={"username": "supervisor1", "password": "demo"})
        assert signed_in.status_code == 303
        first_access = browser.cookies["sv_token"]
        first_refresh = browser.cookies["sv_refresh"]
        refreshed = await browser.post("/api/v1/auth/refresh", headers=origin)
        assert refreshed.status_code == 200, refreshed.text
        assert browser.cookies["sv_refresh"] != first_refresh
        assert refreshed.json()["access_token"] != first_access
        assert refreshed.json()["expires_in"] == 15 * 60
        # The used refresh token is good no more.
        assert (await replay_refresh(secure, first_refresh)).status_code == 401
        access, newest_refresh = browser.cookies["sv_token"], browser.cookies["sv_refresh"]
        assert await statuses(secure, access) == dict.fromkeys(PROBES, 200)
        signed_out = await browser.post("/logout", headers=origin)
        assert signed_out.status_code == 303
        await eventually(lambda: refused_everywhere(secure, access), timeout=2.0, what="page sign-out")
        # Sign-out ended the sign-in: its newest refresh token renews nothing either.
        assert (await replay_refresh(secure, newest_refresh)).status_code == 401


async def replay_refresh(system: System, refresh_token: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=system.urls["intake"], timeout=20.0) as stranger:
        return await stranger.post(
            "/api/v1/auth/refresh",
            headers={"Origin": system.urls["intake"], "Cookie": f"sv_refresh={refresh_token}"},
        )


def test_create_user_refuses_short_and_common_passwords() -> None:
    for weak in ("a", "short1", "password123", "Qwertyuiop", "1234567890"):
        with pytest.raises(WeakPassword):
            check_password_strength(weak, min_length=10)
    with pytest.raises(WeakPassword):
        check_password_strength("operator-zhou", min_length=10, username="operator-zhou")
    check_password_strength("纪律严明 督察2026 春", min_length=10)
