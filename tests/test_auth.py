"""Tokens: a verified token is remembered only until it expires, and only for the key that signed it.

Only intake's private key signs: a token signed with anything else a service's settings hold
(the old HS256 ``SECRET_KEY``, the identity key, feedback's own key) is refused.
"""

from __future__ import annotations

import time
from datetime import timedelta

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.auth import (
    CONTACT_AUDIENCE,
    Principal,
    Role,
    TokenKeys,
    TokenSigner,
    UnknownKeyId,
    decode_token,
    issue_token,
    service_token,
    verify_service_token,
)
from shared.keys import load_public_key, new_key_pair, parse_key_list
from shared.revocation import RevocationList, token_key, user_key

PAIR = new_key_pair("k1")
SIGNER = TokenSigner.from_pem(PAIR["private"], key_id="k1")
KEYS = TokenKeys.from_pem(parse_key_list(PAIR["public_entry"]))
OTHER_KEY = "test-signing-key-5c1f0e9d8b7a6c5d4e3f2a1b0c9d8e7f"


def _keys() -> TokenKeys:
    # A fresh verifier each time: the remembered tokens of one test do not help the next.
    return TokenKeys(dict(KEYS.keys))


def test_a_remembered_token_is_refused_once_it_expires() -> None:
    keys = _keys()
    principal = Principal(username="operator1", role=Role.OPERATOR)
    token = issue_token(principal=principal, signer=SIGNER, ttl=timedelta(seconds=2))
    assert decode_token(token, keys=keys) == principal
    assert decode_token(token, keys=keys) == principal  # the second time from memory
    time.sleep(max(0.0, jwt.decode(token, options={"verify_signature": False})["exp"] - time.time()) + 0.2)
    with pytest.raises(jwt.ExpiredSignatureError):
        decode_token(token, keys=keys)


def test_a_remembered_token_is_not_accepted_under_another_key() -> None:
    principal = Principal(username="inspector1", role=Role.INSPECTOR, team_code="411623")
    token = issue_token(principal=principal, signer=SIGNER, ttl=timedelta(minutes=5))
    assert decode_token(token, keys=_keys()) == principal
    stranger = load_public_key(parse_key_list(new_key_pair("k1")["public_entry"])["k1"])
    with pytest.raises(jwt.InvalidSignatureError):
        decode_token(token, keys=TokenKeys({"k1": stranger}))
    tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    with pytest.raises(jwt.InvalidSignatureError):
        decode_token(tampered, keys=_keys())


def test_a_token_signed_with_a_shared_secret_is_refused() -> None:
    """The old HS256 key (or any other secret of a service's settings) signs nothing accepted."""
    now = int(time.time())
    claims = {
        "sub": "supervisor-nobody",
        "role": "supervisor",
        "iss": "police-supervision",
        "aud": "police-supervision",
        "iat": now,
        "exp": now + 600,
        "jti": "forged",
    }
    for headers in ({}, {"kid": "k1"}):
        forged = jwt.encode(claims, OTHER_KEY, algorithm="HS256", headers=headers)
        with pytest.raises(jwt.InvalidTokenError):
            decode_token(forged, keys=_keys())
    unsigned = jwt.encode(claims, "", algorithm="none", headers={"kid": "k1"})
    with pytest.raises(jwt.InvalidTokenError):
        decode_token(unsigned, keys=_keys())
    other_ed25519 = TokenSigner(key=Ed25519PrivateKey.generate(), key_id="k1")
    with pytest.raises(jwt.InvalidSignatureError):
        decode_token(other_ed25519.sign(claims), keys=_keys())


def test_both_keys_are_accepted_during_a_change_over() -> None:
    new_pair = new_key_pair("k2")
    new_signer = TokenSigner.from_pem(new_pair["private"], key_id="k2")
    both = TokenKeys.from_pem(parse_key_list(f"{PAIR['public_entry']},{new_pair['public_entry']}"))
    principal = Principal(username="supervisor1", role=Role.SUPERVISOR)
    old_token = issue_token(principal=principal, signer=SIGNER, ttl=timedelta(minutes=5))
    new_token = issue_token(principal=principal, signer=new_signer, ttl=timedelta(minutes=5))
    assert decode_token(old_token, keys=both) == principal
    assert decode_token(new_token, keys=both) == principal
    assert jwt.get_unverified_header(new_token)["kid"] == "k2"
    # Once the old key is no longer listed, its tokens are refused.
    only_new = TokenKeys.from_pem(parse_key_list(new_pair["public_entry"]))
    assert decode_token(new_token, keys=only_new) == principal
    with pytest.raises(UnknownKeyId):
        decode_token(old_token, keys=only_new)


def test_a_service_token_is_good_for_its_one_call_only() -> None:
    caller = new_key_pair("feedback-1")
    caller_signer = TokenSigner.from_pem(caller["private"], key_id="feedback-1")
    caller_keys = TokenKeys.from_pem(parse_key_list(caller["public_entry"]))
    token = service_token(service="feedback", signer=caller_signer, audience=CONTACT_AUDIENCE)
    assert verify_service_token(
        token, keys=caller_keys, audience=CONTACT_AUDIENCE, service="feedback"
    ) == Principal(username="service:feedback", role=Role.SERVICE)
    # Not an access token anywhere, and not for another audience or another service's name.
    with pytest.raises(jwt.InvalidTokenError):
        decode_token(token, keys=caller_keys)
    with pytest.raises(jwt.InvalidTokenError):
        verify_service_token(token, keys=caller_keys, audience="intake:identity", service="feedback")
    with pytest.raises(jwt.InvalidTokenError):
        verify_service_token(token, keys=caller_keys, audience=CONTACT_AUDIENCE, service="routing")
    # A service token signed with intake's key (or any other) is not feedback's.
    forged = service_token(service="feedback", signer=SIGNER, audience=CONTACT_AUDIENCE)
    with pytest.raises(jwt.InvalidTokenError):
        verify_service_token(forged, keys=caller_keys, audience=CONTACT_AUDIENCE, service="feedback")
    # Longer than a minute: refused even when well signed.
    now = int(time.time())
    long_lived = caller_signer.sign(
        {
            "sub": "service:feedback",
            "role": "service",
            "iss": "police-supervision",
            "aud": CONTACT_AUDIENCE,
            "iat": now,
            "exp": now + 3600,
            "jti": "x",
        }
    )
    with pytest.raises(jwt.InvalidTokenError):
        verify_service_token(long_lived, keys=caller_keys, audience=CONTACT_AUDIENCE, service="feedback")


def test_the_revocation_list_refuses_a_token_or_a_persons_earlier_tokens_until_they_expire() -> None:
    revocations = RevocationList(ttl_seconds=60)
    now = int(time.time())
    assert not revocations.is_revoked(token_id="a", username="operator1", issued_at=now)
    revocations.apply(token_key("a"), str(now + 30).encode())
    assert revocations.is_revoked(token_id="a", username="someone", issued_at=now)
    revocations.apply(user_key("督察 one"), str(now).encode())
    assert revocations.is_revoked(token_id="b", username="督察 one", issued_at=now - 5)
    assert not revocations.is_revoked(token_id="c", username="督察 one", issued_at=now + 1)
    # A deleted entry (purged from the bucket) no longer counts; a stale one is pruned.
    revocations.apply(token_key("a"), None)
    assert not revocations.is_revoked(token_id="a", username="someone", issued_at=now)
    revocations.apply(token_key("old"), str(now - 3600).encode())
    revocations.apply(token_key("new"), str(now + 30).encode())
    assert revocations.is_revoked(token_id="new", username="x", issued_at=now)
    # What this service revoked waits to be written to the bucket until it is.
    key = revocations.revoke_token(token_id="d", expires_at=now + 60)
    assert revocations.pending() == {key: str(now + 60)}
    revocations.written(key)
    assert revocations.pending() == {}
    assert revocations.is_revoked(token_id="d", username="x", issued_at=now)


def test_intake_refuses_to_start_with_a_signing_key_the_services_do_not_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from services.intake.settings import IntakeSettings
    from shared.settings import SettingsError, load_settings
    from tests.support import TEST_IDENTITY_KEY, TEST_SECRET_KEY

    monkeypatch.setenv("SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("IDENTITY_KEY", TEST_IDENTITY_KEY)
    other = new_key_pair("k9")
    monkeypatch.setenv("TOKEN_PRIVATE_KEY", other["private"])
    monkeypatch.setenv("TOKEN_KEY_ID", "k9")
    with pytest.raises(SettingsError, match="TOKEN_PUBLIC_KEYS must list"):
        load_settings(IntakeSettings)
    # Listed beside the current key (a change-over), it is accepted.
    import os

    monkeypatch.setenv("TOKEN_PUBLIC_KEYS", f"{os.environ['TOKEN_PUBLIC_KEYS']},{other['public_entry']}")
    assert load_settings(IntakeSettings).token_key_id == "k9"
    monkeypatch.setenv("TOKEN_PUBLIC_KEYS", "k9=not a key")
    with pytest.raises(SettingsError, match="token_public_keys"):
        load_settings(IntakeSettings)
