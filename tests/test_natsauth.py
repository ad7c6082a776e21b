"""Each service is its own NATS user, allowed to publish its own subjects only (shared.natsauth).

The session's nats-server runs with the generated accounts (tests/support.py), so every system
test runs the services under them; these tests show what the accounts refuse, that a consumer
parks an event whose producer header names the wrong service, and that the generated and the
deployed configurations are valid.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.errors import NotFoundError
from pydantic import ValidationError

from services.registry import SERVICES
from shared.audit_anchor import CHECKPOINT_STREAM
from shared.bus import HEADER_DEAD_LETTER_REASON
from shared.events import ALL_EVENTS, CaseAssigned, CaseConcluded
from shared.natsauth import (
    SERVICE_NAMES,
    deployed_accounts,
    inbox_prefix,
    nats_accounts_config,
    owned_subjects,
    permissions_for,
)
from shared.outbox import HEADER_EVENT_TYPE, HEADER_EVENT_VERSION, HEADER_MSG_ID, HEADER_PRODUCER
from tests.support import (
    NATS_PASSWORDS,
    TEST_SECRET_KEY,
    NatsServer,
    System,
    eventually,
    nats_server_binary,
    patched_environ,
)

ROOT = Path(__file__).resolve().parent.parent
DEPLOYED_ACCOUNTS = ROOT / "deploy" / "nats-accounts.conf"


def plain_url(server: NatsServer) -> str:
    return f"nats://127.0.0.1:{server.port}"


async def connect_as(server: NatsServer, service: str, errors: list[Exception]) -> NatsClient:
    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    return await nats.connect(
        plain_url(server),
        user=service,
        password=NATS_PASSWORDS[service],
        inbox_prefix=inbox_prefix(service),
        error_cb=on_error,
        allow_reconnect=False,
    )


def test_every_event_subject_is_published_by_exactly_one_service() -> None:
    for event in ALL_EVENTS:
        publishers = [
            name for name in SERVICE_NAMES if event.subject() in permissions_for(name)["publish"]["allow"]
        ]
        assert publishers == [event.owner], f"{event.event_type}: {publishers}"
    assert owned_subjects("routing") == [CaseAssigned.subject()]


def test_a_service_reads_only_its_own_inbox() -> None:
    for name in SERVICE_NAMES:
        assert permissions_for(name)["subscribe"] == {"allow": [f"_INBOX.{name}.>"]}


def test_the_generated_config_is_one_nats_server_accepts(tmp_path: Path) -> None:
    config = tmp_path / "nats.conf"
    config.write_text(
        'listen: "127.0.0.1:-1"\n' + nats_accounts_config(NATS_PASSWORDS, admins={"ops": "x" * 40}),
        encoding="utf-8",
    )
    checked = subprocess.run(
        [nats_server_binary(), "-t", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr + checked.stdout


def test_the_deployed_accounts_are_the_generated_ones() -> None:
    assert DEPLOYED_ACCOUNTS.read_text(encoding="utf-8") == deployed_accounts(), (
        "deploy/nats-accounts.conf is out of date; regenerate it: python -m shared.natsauth > deploy/nats-accounts.conf"
    )


def test_the_deployed_config_is_one_nats_server_accepts(tmp_path: Path) -> None:
    config = tmp_path / "nats.conf"
    config.write_text('listen: "127.0.0.1:-1"\n' + deployed_accounts(), encoding="utf-8")
    variables = {f"NATS_PASSWORD_{name.upper()}": "p" * 40 for name in (*SERVICE_NAMES, "operator")}
    checked = subprocess.run(
        [nats_server_binary(), "-t", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"PATH": "/usr/bin:/bin", **variables},
    )
    assert checked.returncode == 0, checked.stderr + checked.stdout


def test_a_service_user_needs_a_real_password() -> None:
    settings_class = SERVICES["routing"].settings_class()
    base = {"SECRET_KEY": TEST_SECRET_KEY, "ROUTING_NATS_USER": "routing"}
    for password in ("", "changeme", "short"):
        with patched_environ(base | {"ROUTING_NATS_PASSWORD": password}), pytest.raises(ValidationError):
            settings_class()
    with (
        patched_environ({"SECRET_KEY": TEST_SECRET_KEY, "NATS_PASSWORD": "p" * 40}),
        pytest.raises(ValidationError, match="without NATS_USER"),
    ):
        settings_class()
    with patched_environ(base | {"ROUTING_NATS_PASSWORD": NATS_PASSWORDS["routing"]}):
        settings = settings_class()
    assert settings.nats_user == "routing"


async def test_the_running_services_are_each_their_own_user(system: System) -> None:
    for name, app in system.apps.items():
        runtime = app.state.runtime
        assert runtime.settings.nats_user == name

        async def ready(runtime: Any = runtime) -> bool:
            return bool(runtime.bus_ready and runtime.nc is not None and runtime.nc.is_connected)

        # The bus comes up in the background; under its own user it must come up all the same.
        await eventually(ready, what=f"{name}'s bus")


async def test_a_service_cannot_publish_another_services_event(nats_server: NatsServer) -> None:
    errors: list[Exception] = []
    nc = await connect_as(nats_server, "routing", errors)
    try:
        js = nc.jetstream(timeout=2)
        forged = CaseConcluded(
            case_id="forged",
            task_id="t",
            team_code="X",
            case_kind="complaint",
            outcome="unsubstantiated",
            summary="伪造",
        )
        with pytest.raises(nats.errors.TimeoutError):  # JetStream never sees it, so no ack comes
            await js.publish(forged.subject(), forged.model_dump_json().encode())
        await eventually(
            lambda: _violation(errors, forged.subject()), timeout=5, what="a permissions violation"
        )
        # Nor may it read what it did not ask for.
        await nc.subscribe("sv.>")
        await eventually(lambda: _violation(errors, "sv.>"), timeout=5, what="a subscribe violation")
    finally:
        await nc.close()


async def _violation(errors: list[Exception], subject: str) -> bool:
    # nats-py lower-cases the server's message.
    return any(
        "permissions violation" in str(e).lower() and subject.lower() in str(e).lower() for e in errors
    )


async def test_a_service_may_ask_about_the_stream_but_not_delete_it(nats_server: NatsServer) -> None:
    async with await nats.connect(nats_server.url) as admin:
        await admin.jetstream().add_stream(name="NATSAUTH_PROBE", subjects=["natsauth.probe"])
    errors: list[Exception] = []
    nc = await connect_as(nats_server, "routing", errors)
    try:
        js = nc.jetstream(timeout=2)
        with contextlib.suppress(NotFoundError):  # an allowed request: the server answers it
            await js.stream_info(CHECKPOINT_STREAM)
        assert not errors
        with pytest.raises(nats.errors.TimeoutError):
            await js.delete_stream("NATSAUTH_PROBE")
        await eventually(
            lambda: _violation(errors, "$JS.API.STREAM.DELETE.NATSAUTH_PROBE"), timeout=5, what="a violation"
        )
    finally:
        await nc.close()
        async with await nats.connect(nats_server.url) as admin:
            assert await admin.jetstream().delete_stream("NATSAUTH_PROBE")


async def test_an_event_with_the_wrong_producer_is_parked(system: System) -> None:
    async with await nats.connect(system.nats_url) as nc:
        js = nc.jetstream()
        forged = CaseConcluded(
            case_id="case-forged-producer",
            task_id="t",
            team_code="X",
            case_kind="complaint",
            outcome="unsubstantiated",
            summary="伪造",
        )
        headers = {
            HEADER_MSG_ID: forged.event_id,
            HEADER_EVENT_TYPE: forged.event_type,
            HEADER_EVENT_VERSION: str(forged.version),
            HEADER_PRODUCER: "routing",
        }
        await js.publish(forged.subject(), forged.model_dump_json().encode(), headers=headers)

        async def parked() -> Any:
            try:
                message = await js.get_last_msg("SUPERVISION_DLQ", "svdlq.routing-progress")
            except NotFoundError:
                return None
            return message if forged.event_id.encode() in (message.data or b"") else None

        message = await eventually(parked, what="the forged event parked")
        reason = (message.headers or {}).get(HEADER_DEAD_LETTER_REASON, "")
        assert "wrong producer" in reason and "verification" in reason and "routing" in reason
        await asyncio.sleep(0)


def test_compose_gives_each_service_its_own_nats_user_and_database_role() -> None:
    from tests.test_compose import env_values, servers

    init_sql = (ROOT / "deploy" / "postgres-init.sql").read_text(encoding="utf-8")
    for name, container in servers().items():
        values = env_values(container)
        assert values.get("NATS_USER") == name
        assert values.get("NATS_PASSWORD", "").startswith(f"${{NATS_PASSWORD_{name.upper()}:?")
        url = values[SERVICES[name].database_env]
        assert url.startswith(f"postgresql+asyncpg://{name}:${{POSTGRES_PASSWORD_{name.upper()}:?")
        assert f"CREATE DATABASE {name} OWNER {name};" in init_sql
        assert f"GRANT CONNECT, TEMPORARY ON DATABASE {name} TO {name};" in init_sql
    assert "FROM PUBLIC" in init_sql


def test_make_run_gives_each_service_its_own_nats_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.cli.devrun import child_environment
    from services.cli.devsecrets import ensure_dev_secrets
    from services.cli.natsserver import nats_accounts
    from services.cli.supervisor import Output

    monkeypatch.chdir(tmp_path)  # the dev secrets go to ./var
    environ: dict[str, str] = {}
    ensure_dev_secrets(environ, Output())
    config = tmp_path / "nats.conf"
    config.write_text('listen: "127.0.0.1:-1"\n' + nats_accounts(environ), encoding="utf-8")
    checked = subprocess.run(
        [nats_server_binary(), "-t", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr + checked.stdout
    for name in SERVICE_NAMES:
        child = child_environment(environ, name)
        assert child["NATS_USER"] == name
        assert child["NATS_PASSWORD"] == environ[f"{name.upper()}_NATS_PASSWORD"]
        assert not [key for key in child if key.endswith("_NATS_PASSWORD") or key == "NATS_DEV_PASSWORD"]
