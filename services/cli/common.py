"""What the commands share: their error, the services' settings, and where a dev run keeps its data."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.registry import ServiceSpec

if TYPE_CHECKING:
    from shared.settings import ServiceSettings

# Relative to the working directory, like the settings' SQLite defaults (sqlite:///var/<name>.db),
# so the databases, the NATS store and the secrets of a dev run always sit side by side.
VAR_DIR = Path("var")


class CommandError(RuntimeError):
    """Stops a command with a message for the operator, without a traceback."""


def load_service_settings(spec: ServiceSpec) -> ServiceSettings:
    from shared.settings import SettingsError, load_settings

    try:
        return load_settings(spec.settings_class())
    except SettingsError as exc:
        raise CommandError(f"{spec.name}: {exc}") from None


def settings_env_names(field_name: str, info: Any, env_prefix: str = "") -> set[str]:
    """The environment variables pydantic-settings reads for one field, upper-cased."""
    alias = getattr(info, "validation_alias", None) or getattr(info, "alias", None)
    if alias is None:
        return {f"{env_prefix}{field_name}".upper()}
    if isinstance(alias, str):
        return {alias.upper()}
    # AliasChoices: plain names count, AliasPath entries name nested keys rather than variables.
    choices = getattr(alias, "choices", ())
    return {choice.upper() for choice in choices if isinstance(choice, str)}


def service_port(spec: ServiceSpec, settings: ServiceSettings) -> int:
    """The port setting, whatever the service called the field that reads ``<NAME>_PORT``."""
    prefix = str(type(settings).model_config.get("env_prefix") or "")
    for field_name, info in type(settings).model_fields.items():
        if spec.port_env in settings_env_names(field_name, info, prefix):
            return int(getattr(settings, field_name))
    return spec.port


def local_host(http_host: str) -> str:
    # A wildcard bind is reachable on loopback; a specific address only on itself.
    return "127.0.0.1" if http_host in {"", "0.0.0.0", "::", "[::]"} else http_host


def display_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
