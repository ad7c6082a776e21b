"""Browsers and services may reach the services at different addresses (compose, a reverse proxy)."""

from __future__ import annotations

import pytest

from services.registry import SERVICES
from shared.web import service_urls


def test_pages_use_public_addresses_where_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_KEY", "a-real-signing-key-for-this-test-0123456789abcdef")
    monkeypatch.setenv("INTAKE_URL", "http://intake:8001")
    monkeypatch.setenv("ROUTING_URL", "http://routing:8002")
    monkeypatch.setenv("PUBLIC_INTAKE_URL", "https://ducha.example.gov.cn/")
    settings = SERVICES["routing"].settings_class()()
    urls = service_urls(settings)
    assert urls["intake"] == "https://ducha.example.gov.cn"
    # Without a public address the internal one is all there is.
    assert urls["routing"] == "http://routing:8002"
