"""Who may do what on NATS: each service's user and its permissions, derived from the code.

Any process that reaches an open NATS server can publish any event, and a forged
``CaseConcluded`` would conclude a matter.  So each service connects as its own user
(``NATS_USER``/``NATS_PASSWORD``, over TLS when ``NATS_TLS_*`` are set), and that user may
publish only what the service itself produces:

- the subjects of the events it owns (``Event.owner`` in ``shared.events``);
- the dead-letter and replay subjects and the JetStream acks of its own durable consumers (the durables
  come from the service's ``subscriptions`` factory), and the JetStream API requests its
  consumers make (create, info, next) for those durables only;
- its audit checkpoint subject (``audit.checkpoint.<service>``);
- the JetStream API requests on the streams and buckets it uses (the event stream and its
  dead-letter stream, the audit checkpoints, the revocation bucket, verification's evidence
  bucket); only intake writes revocations, only verification writes evidence.

It may subscribe only to its own inbox prefix (``_INBOX.<service>.>``): replies, acks and the
pulled messages all arrive there.  ``nats_accounts_config`` writes the ``authorization``
block nats-server reads; ``make run`` and the tests use it, and ``deploy/nats-accounts.conf``
is its output with the passwords taken from the server's environment.
"""

from __future__ import annotations

import importlib
import json
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared.audit_anchor import CHECKPOINT_STREAM, checkpoint_subject
from shared.events import ALL_EVENTS, DEAD_LETTER_PREFIX, REPLAY_PREFIX
from shared.revocation import BUCKET as REVOCATION_BUCKET

SERVICE_NAMES = ("intake", "routing", "verification", "feedback")
DEFAULT_STREAM = "SUPERVISION"
DEFAULT_EVIDENCE_BUCKET = "supervision-evidence"
DEAD_LETTER_STREAM_SUFFIX = "_DLQ"
JS_API = "$JS.API"


def inbox_prefix(service: str) -> str:
    """The service's reply subjects: ``_INBOX.<service>.<nuid>``, readable by it alone."""
    return f"_INBOX.{service}"


def owned_subjects(service: str) -> list[str]:
    """The subjects of the events ``service`` publishes."""
    return sorted(event.subject() for event in ALL_EVENTS if event.owner == service)


def service_durables(service: str) -> list[str]:
    """The durable consumers of ``service``, read from its ``subscriptions`` factory.

    The factories only bind their context into the handlers, so they are called without one.
    """
    module = importlib.import_module(f"services.{service}.consumers")
    return sorted(subscription.durable for subscription in module.subscriptions(None))


def _stream_admin(stream: str, *, create: bool = True, update: bool = False) -> list[str]:
    subjects = [f"{JS_API}.STREAM.INFO.{stream}"]
    if create:
        subjects.append(f"{JS_API}.STREAM.CREATE.{stream}")
    if update:
        subjects.append(f"{JS_API}.STREAM.UPDATE.{stream}")
    return subjects


def _reader(stream: str) -> list[str]:
    return [
        f"{JS_API}.STREAM.MSG.GET.{stream}",
        f"{JS_API}.DIRECT.GET.{stream}",
        f"{JS_API}.DIRECT.GET.{stream}.>",
    ]


def _durable_consumer(stream: str, durable: str) -> list[str]:
    return [
        f"{JS_API}.CONSUMER.CREATE.{stream}.{durable}",
        f"{JS_API}.CONSUMER.CREATE.{stream}.{durable}.>",
        f"{JS_API}.CONSUMER.DURABLE.CREATE.{stream}.{durable}",
        f"{JS_API}.CONSUMER.INFO.{stream}.{durable}",
        f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.{durable}",
        f"$JS.ACK.{stream}.{durable}.>",
    ]


def _watcher(stream: str) -> list[str]:
    """An ordered (ephemeral, push) consumer, as a KV watch makes: create, delete, flow control."""
    return [
        f"{JS_API}.CONSUMER.CREATE.{stream}",
        f"{JS_API}.CONSUMER.CREATE.{stream}.>",
        f"{JS_API}.CONSUMER.DELETE.{stream}.>",
        f"{JS_API}.CONSUMER.INFO.{stream}.>",
        f"$JS.FC.{stream}.>",
    ]


def permissions_for(
    service: str,
    *,
    stream: str = DEFAULT_STREAM,
    durables: Sequence[str] | None = None,
    evidence_bucket: str = DEFAULT_EVIDENCE_BUCKET,
) -> dict[str, Any]:
    """The nats-server ``permissions`` of ``service``'s user: what it may publish and subscribe to.

    ``durables``: its durable consumers (None: from its ``subscriptions`` factory).
    """
    if service not in SERVICE_NAMES:
        raise ValueError(f"unknown service {service!r}")
    durables = service_durables(service) if durables is None else list(durables)
    dead_letters = stream + DEAD_LETTER_STREAM_SUFFIX
    revocations = f"KV_{REVOCATION_BUCKET}"
    publish = [
        *owned_subjects(service),
        *(f"{DEAD_LETTER_PREFIX}.{durable}" for durable in durables),
        # A parked event's replay goes to the consumer that parked it alone.
        *(f"{REPLAY_PREFIX}.{durable}.>" for durable in durables),
        checkpoint_subject(service),
        # Every service sets up the event streams (the same configuration from each).
        *_stream_admin(stream, update=True),
        *_stream_admin(dead_letters, update=True),
        *_reader(dead_letters),
        *(subject for durable in durables for subject in _durable_consumer(stream, durable)),
        *_stream_admin(CHECKPOINT_STREAM),
        *_reader(CHECKPOINT_STREAM),
        # The revocation bucket: whoever comes first makes it; every service watches it.
        *_stream_admin(revocations),
        *_reader(revocations),
        *_watcher(revocations),
    ]
    if service == "intake":
        publish.append(f"$KV.{REVOCATION_BUCKET}.>")
    if service == "verification":
        objects = f"OBJ_{evidence_bucket}"
        publish += [
            f"$O.{evidence_bucket}.>",
            *_stream_admin(objects, update=True),
            *_reader(objects),
            f"{JS_API}.STREAM.PURGE.{objects}",
        ]
    return {
        "publish": {"allow": sorted(set(publish))},
        "subscribe": {"allow": [f"{inbox_prefix(service)}.>"]},
    }


def nats_accounts_config(
    passwords: Mapping[str, str],
    *,
    admins: Mapping[str, str] | None = None,
    from_environment: bool = False,
    stream: str = DEFAULT_STREAM,
    evidence_bucket: str = DEFAULT_EVIDENCE_BUCKET,
) -> str:
    """The nats-server ``authorization { users = [...] }`` block.

    ``passwords``: service name to its password (every service needs one).  ``admins``: extra
    users with no restriction (the tests' own user, an operator's for backups).
    ``from_environment``: the values are names of environment variables the server reads at
    start (``$NAME``), for a config file that holds no secret.
    """
    missing = set(SERVICE_NAMES) - set(passwords)
    if missing:
        raise ValueError(f"no password for {sorted(missing)}")

    def secret(value: str) -> str:
        return f"${value}" if from_environment else json.dumps(value)

    lines = ["authorization {", "  users = ["]
    for service in SERVICE_NAMES:
        permissions = permissions_for(service, stream=stream, evidence_bucket=evidence_bucket)
        lines.append(
            f"    {{user: {json.dumps(service)}, password: {secret(passwords[service])}, "
            f"permissions: {json.dumps(permissions)}}}"
        )
    for user, password in (admins or {}).items():
        lines.append(f"    {{user: {json.dumps(user)}, password: {secret(password)}}}")
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class NatsCredentials:
    """What ``shared.bus.connect`` hands to nats-py: user, password, TLS and the inbox prefix."""

    user: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None
    inbox_prefix: str | None = None

    def connect_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self.user is not None:
            options["user"], options["password"] = self.user, self.password
        if self.tls is not None:
            options["tls"] = self.tls
        if self.inbox_prefix is not None:
            options["inbox_prefix"] = self.inbox_prefix
        return options


def tls_context(*, ca: str | None, cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """A client TLS context: the server checked against ``ca``, ``cert``/``key`` for mutual TLS."""
    if not (ca or cert):
        return None
    context = ssl.create_default_context(cafile=ca)
    if cert:
        context.load_cert_chain(cert, keyfile=key)
    return context


def credentials_from(settings: Any) -> NatsCredentials:
    """The credentials of a service's settings (``shared.settings.ServiceSettings``)."""
    user = settings.nats_user
    password = settings.nats_password.get_secret_value() if settings.nats_password else None
    tls = tls_context(
        ca=str(settings.nats_tls_ca) if settings.nats_tls_ca else None,
        cert=str(settings.nats_tls_cert) if settings.nats_tls_cert else None,
        key=str(settings.nats_tls_key) if settings.nats_tls_key else None,
    )
    # A service's user may read its own inbox only (``permissions_for``).
    prefix = inbox_prefix(settings.service_name) if user is not None else None
    return NatsCredentials(user=user, password=password, tls=tls, inbox_prefix=prefix)


OPERATOR_USER = "operator"
DEPLOYED_HEADER = (
    "# Generated by `python -m shared.natsauth` from the code (shared/natsauth.py); do not edit.\n"
    "# Each service's NATS user and what it may publish; the passwords come from the nats\n"
    "# container's environment (NATS_PASSWORD_<SERVICE>, set from .env in docker-compose.yml).\n"
)


def deployed_accounts() -> str:
    """``deploy/nats-accounts.conf``: the accounts, the passwords read from the server's environment."""
    variables = {name: f"NATS_PASSWORD_{name.upper()}" for name in SERVICE_NAMES}
    # The operator's user, unrestricted, for the commands that read every stream (backup,
    # restore, audit verify): NATS_URL=nats://operator:<password>@nats:4222 for those alone.
    admins = {OPERATOR_USER: f"NATS_PASSWORD_{OPERATOR_USER.upper()}"}
    return DEPLOYED_HEADER + nats_accounts_config(variables, admins=admins, from_environment=True)


if __name__ == "__main__":
    print(deployed_accounts(), end="")
