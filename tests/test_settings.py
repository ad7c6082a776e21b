"""Start-up refuses a missing, placeholder or short secret, and names the variable to fix."""

from __future__ import annotations

import base64
import re
import secrets
import subprocess
import sys
from typing import Any

import pytest

from services.registry import SERVICES
from shared.settings import ServiceSettings, SettingsError, load_settings

GOOD_SECRET = secrets.token_urlsafe(48)
GOOD_IDENTITY_KEY = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
SERVICE_NAMES = sorted(SERVICES)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SECRET_KEY", "IDENTITY_KEY"):
        monkeypatch.delenv(name, raising=False)


def settings_class(service: str) -> type[ServiceSettings]:
    return SERVICES[service].settings_class()


def configure_others(monkeypatch: pytest.MonkeyPatch, service: str) -> None:
    """Everything but SECRET_KEY is good, so the failure can only be about SECRET_KEY."""
    if service == "intake":
        monkeypatch.setenv("IDENTITY_KEY", GOOD_IDENTITY_KEY)


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_missing_secret_key_is_refused(monkeypatch: pytest.MonkeyPatch, service: str) -> None:
    configure_others(monkeypatch, service)
    with pytest.raises(SettingsError, match="SECRET_KEY") as raised:
        load_settings(settings_class(service))
    assert "not set" in str(raised.value)


@pytest.mark.parametrize("service", SERVICE_NAMES)
@pytest.mark.parametrize("placeholder", ["changeme", "change-me-please", "CHANGEME", "  changeme  "])
def test_placeholder_secret_key_is_refused(
    monkeypatch: pytest.MonkeyPatch, service: str, placeholder: str
) -> None:
    configure_others(monkeypatch, service)
    monkeypatch.setenv("SECRET_KEY", placeholder)
    with pytest.raises(SettingsError, match="SECRET_KEY") as raised:
        load_settings(settings_class(service))
    assert "placeholder" in str(raised.value)


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_short_secret_key_is_refused(monkeypatch: pytest.MonkeyPatch, service: str) -> None:
    configure_others(monkeypatch, service)
    short = "k3Yq9-zt81Lm"
    monkeypatch.setenv("SECRET_KEY", short)
    with pytest.raises(SettingsError, match="SECRET_KEY") as raised:
        load_settings(settings_class(service))
    assert "too short" in str(raised.value)
    assert short not in str(raised.value), "the message must not echo the secret"


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_good_secret_key_is_accepted(monkeypatch: pytest.MonkeyPatch, service: str) -> None:
    configure_others(monkeypatch, service)
    monkeypatch.setenv("SECRET_KEY", GOOD_SECRET)
    settings = load_settings(settings_class(service))
    assert settings.signing_key == GOOD_SECRET
    assert settings.service_name == service
    assert GOOD_SECRET not in repr(settings)


@pytest.mark.parametrize(
    ("identity_key", "complaint"),
    [
        (None, "not set"),
        ("", "not set"),
        # 16 bytes: 24 characters, refused as too short before it is even decoded.
        (base64.urlsafe_b64encode(b"\x01" * 16).decode(), "too short"),
        (base64.urlsafe_b64encode(b"\x01" * 48).decode(), "32 bytes"),
        (base64.urlsafe_b64encode(b"\x01" * 31).decode(), "32 bytes"),
        ("changeme-changeme-changeme-changeme-changeme", "placeholder"),
    ],
    ids=["missing", "empty", "16-bytes", "48-bytes", "31-bytes", "placeholder"],
)
def test_intake_needs_a_32_byte_identity_key(
    monkeypatch: pytest.MonkeyPatch, identity_key: str | None, complaint: str
) -> None:
    monkeypatch.setenv("SECRET_KEY", GOOD_SECRET)
    if identity_key is not None:
        monkeypatch.setenv("IDENTITY_KEY", identity_key)
    with pytest.raises(SettingsError, match="IDENTITY_KEY") as raised:
        load_settings(settings_class("intake"))
    assert complaint in str(raised.value)
    assert "SECRET_KEY" not in str(raised.value)


@pytest.mark.parametrize(
    "encode",
    [
        base64.urlsafe_b64encode,
        base64.standard_b64encode,
        lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"="),
    ],
    ids=["urlsafe", "standard", "unpadded"],
)
def test_intake_accepts_a_good_identity_key(monkeypatch: pytest.MonkeyPatch, encode: Any) -> None:
    # b"\xfb\xff" encodes to "+/+/" in the standard alphabet and "-_-_" in the URL-safe one.
    raw = b"\xfb\xff" * 8 + secrets.token_bytes(16)
    monkeypatch.setenv("SECRET_KEY", GOOD_SECRET)
    monkeypatch.setenv("IDENTITY_KEY", encode(raw).decode())
    settings = load_settings(settings_class("intake"))
    assert settings.identity_key_bytes == raw  # type: ignore[attr-defined]


def test_intake_reports_both_keys_when_both_are_missing() -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(settings_class("intake"))
    assert "SECRET_KEY" in str(raised.value) and "IDENTITY_KEY" in str(raised.value)


@pytest.mark.parametrize("service", [name for name in SERVICE_NAMES if name != "intake"])
def test_only_intake_needs_an_identity_key(monkeypatch: pytest.MonkeyPatch, service: str) -> None:
    monkeypatch.setenv("SECRET_KEY", GOOD_SECRET)
    assert load_settings(settings_class(service)).signing_key == GOOD_SECRET


@pytest.mark.parametrize("variable", ["SECRET_KEY", "IDENTITY_KEY"])
def test_the_command_suggested_for_a_missing_key_makes_a_key_that_is_accepted(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    """An operator who follows the start-up message must end up with a working configuration."""
    other = {"SECRET_KEY": GOOD_SECRET, "IDENTITY_KEY": GOOD_IDENTITY_KEY}
    for name, value in other.items():
        if name != variable:
            monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as raised:
        load_settings(settings_class("intake"))
    message = next(line for line in str(raised.value).splitlines() if variable in line)
    suggested = re.search(r"python -c '([^']+)'", message)
    assert suggested, message
    generated = subprocess.run(
        [sys.executable, "-c", suggested.group(1)], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()
    monkeypatch.setenv(variable, generated)
    load_settings(settings_class("intake"))
