"""The dev run's secrets: made once into var/secrets.env and reused, so a restart keeps the data readable."""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import MutableMapping
from pathlib import Path

from services.cli.common import VAR_DIR
from services.cli.supervisor import Output
from shared.keys import new_key_pair

SECRETS_FILE = VAR_DIR / "secrets.env"


def _read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip()
    return values


def _new_secret(key: str) -> str:
    if key == "IDENTITY_KEY":
        # The complainant-identity cipher wants exactly 32 random bytes.
        return base64.urlsafe_b64encode(os.urandom(32)).decode()
    return secrets.token_urlsafe(48)


# Key pairs: the private key (one service's), its kid, and the public-key list that names it
# (the verifiers'): made together, since each half is useless without the other.
KEY_PAIRS = (
    ("TOKEN_PRIVATE_KEY", "TOKEN_KEY_ID", "TOKEN_PUBLIC_KEYS", "dev-1"),
    ("CALLER_PRIVATE_KEY", "CALLER_KEY_ID", "FEEDBACK_CALLER_PUBLIC_KEYS", "feedback-dev-1"),
)


def _fill_key_pairs(stored: dict[str, str], environ: MutableMapping[str, str], generated: list[str]) -> None:
    for private, key_id, public, kid in KEY_PAIRS:
        if environ.get(private):
            continue
        if not (stored.get(private) and stored.get(key_id) and stored.get(public)):
            pair = new_key_pair(kid)
            stored[private], stored[key_id], stored[public] = pair["private"], kid, pair["public_entry"]
            generated.append(private)
        for name in (private, key_id, public):
            environ.setdefault(name, stored[name])


# The embedded NATS server's users (shared.natsauth): one per service, and "dev", unrestricted,
# for the operator's commands that read every stream (backup, audit verify).
NATS_SERVICES = ("intake", "routing", "verification", "feedback")
NATS_DEV_USER = "dev"
NATS_DEV_PASSWORD = "NATS_DEV_PASSWORD"  # noqa: S105 - the variable's name


def nats_password_variable(service: str) -> str:
    """The service's NATS password as its settings read it under its own prefix."""
    return f"{service.upper()}_NATS_PASSWORD"


def _fill_nats_users(stored: dict[str, str], environ: MutableMapping[str, str], generated: list[str]) -> None:
    for key in (*(nats_password_variable(name) for name in NATS_SERVICES), NATS_DEV_PASSWORD):
        if environ.get(key):
            continue
        if not stored.get(key):
            stored[key] = _new_secret(key)
            generated.append(key)
        environ[key] = stored[key]
    for name in NATS_SERVICES:
        environ.setdefault(f"{name.upper()}_NATS_USER", name)


def ensure_dev_secrets(environ: MutableMapping[str, str], out: Output) -> None:
    """Fill the dev run's keys from var/secrets.env, generating them on the first run.

    SECRET_KEY (the query secrets' hash key), IDENTITY_KEY, intake's token key pair,
    feedback's own key pair for its calls to intake, and the embedded NATS server's passwords.  Reused on later runs: a new
    IDENTITY_KEY would make every stored complainant identity unreadable, a new SECRET_KEY
    every query secret, and a new token key would sign everyone out.
    """
    stored = _read_env_file(SECRETS_FILE)
    generated: list[str] = []
    for key in ("SECRET_KEY", "IDENTITY_KEY"):
        if environ.get(key):
            continue
        if not stored.get(key):
            stored[key] = _new_secret(key)
            generated.append(key)
        environ[key] = stored[key]
    _fill_key_pairs(stored, environ, generated)
    _fill_nats_users(stored, environ, generated)
    if generated:
        VAR_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
        body = "# Dev secrets made by `python -m services dev`; keep this file with var/ or lose the data.\n"
        body += "".join(f"{key}={value}\n" for key, value in stored.items())
        fd = os.open(SECRETS_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(body)
        out.say(f"generated {', '.join(generated)} into {SECRETS_FILE}")
    if SECRETS_FILE.exists():
        # O_CREAT's mode does not apply to a file that already existed with looser bits.
        os.chmod(SECRETS_FILE, 0o600)
        # var/ holds the secrets, the SQLite databases and the JetStream store (evidence files).
        os.chmod(VAR_DIR, 0o700)
