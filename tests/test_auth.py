"""Tokens: a verified token is remembered only until it expires, and only for the key that signed it."""

from __future__ import annotations

import time
from datetime import timedelta

import jwt
import pytest

from shared.auth import Principal, Role, decode_token, issue_token

KEY = "test-signing-key-5c1f0e9d8b7a6c5d4e3f2a1b0c9d8e7f"


def test_a_remembered_token_is_refused_once_it_expires() -> None:
    principal = Principal(username="operator1", role=Role.OPERATOR)
    token = issue_token(principal=principal, signing_key=KEY, ttl=timedelta(seconds=2))
    assert decode_token(token, signing_key=KEY) == principal
    assert decode_token(token, signing_key=KEY) == principal  # the second time from memory
    time.sleep(max(0.0, jwt.decode(token, options={"verify_signature": False})["exp"] - time.time()) + 0.2)
    with pytest.raises(jwt.ExpiredSignatureError):
        decode_token(token, signing_key=KEY)


def test_a_remembered_token_is_not_accepted_under_another_key() -> None:
    principal = Principal(username="inspector1", role=Role.INSPECTOR, team_code="411623")
    token = issue_token(principal=principal, signing_key=KEY, ttl=timedelta(minutes=5))
    assert decode_token(token, signing_key=KEY) == principal
    with pytest.raises(jwt.InvalidSignatureError):
        decode_token(token, signing_key=KEY[::-1])
    tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    with pytest.raises(jwt.InvalidSignatureError):
        decode_token(tampered, signing_key=KEY)
