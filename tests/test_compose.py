"""docker-compose.yml against the code, without docker.

A compose file drifts silently: a renamed setting or subcommand only shows up when a bureau
deploys.  These checks read the file with PyYAML and compare it with the settings classes, the
CLI parser and the registry.
"""

from __future__ import annotations

import argparse
import re
import shlex
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.cli import build_parser
from services.registry import SERVICES

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
APP_IMAGE = "police-supervision"
# Variables read by the third-party images, not by our code.
INFRA_ENV = frozenset(
    {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "POSTGRES_INITDB_ARGS", "PGDATA", "TZ"}
    # The services' own PostgreSQL roles (deploy/postgres-init.sql) and NATS users
    # (deploy/nats-accounts.conf) read their passwords from the infrastructure containers.
    | {f"POSTGRES_PASSWORD_{name.upper()}" for name in SERVICES}
    | {f"NATS_PASSWORD_{name.upper()}" for name in (*SERVICES, "operator")}
)


@cache
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def is_app(container: dict[str, Any]) -> bool:
    return "build" in container or str(container.get("image", "")).startswith(APP_IMAGE)


def app_containers() -> dict[str, dict[str, Any]]:
    return {name: c for name, c in services().items() if is_app(c)}


def migration_jobs() -> dict[str, dict[str, Any]]:
    return {name: c for name, c in app_containers().items() if name.startswith("migrate-")}


def servers() -> dict[str, dict[str, Any]]:
    return {name: c for name, c in app_containers().items() if not name.startswith("migrate-")}


def env_names(container: dict[str, Any]) -> set[str]:
    env = container.get("environment") or {}
    if isinstance(env, list):
        return {item.split("=", 1)[0] for item in env}
    return set(env)


def env_values(container: dict[str, Any]) -> dict[str, str]:
    env = container.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: str(value) for key, value in env.items()}


def command_of(container: dict[str, Any]) -> list[str]:
    command = container.get("command")
    assert command, "an app container must say which command it runs"
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def field_env_names(settings_cls: type[Any]) -> set[str]:
    prefix = str(settings_cls.model_config.get("env_prefix") or "")
    names: set[str] = set()
    for field_name, info in settings_cls.model_fields.items():
        alias = info.validation_alias or info.alias
        if alias is None:
            names.add(f"{prefix}{field_name}".upper())
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:  # AliasChoices; AliasPath entries name nested keys, not variables
            names.update(choice.upper() for choice in alias.choices if isinstance(choice, str))
    return names


@cache
def known_app_env() -> frozenset[str]:
    names: set[str] = set()
    for spec in SERVICES.values():
        names |= field_env_names(spec.settings_class())
    return frozenset(names)


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("the CLI parser has no subcommands")


def test_compose_has_all_four_services_and_their_jobs() -> None:
    assert set(servers()) == set(SERVICES)
    assert set(migration_jobs()) == {f"migrate-{name}" for name in SERVICES}


def test_app_containers_set_only_variables_the_code_reads() -> None:
    known = known_app_env()
    for name, container in app_containers().items():
        unknown = env_names(container) - known
        assert not unknown, f"{name} sets variables no settings class reads: {sorted(unknown)}"


def test_other_containers_set_only_allowed_variables() -> None:
    for name, container in services().items():
        if is_app(container):
            continue
        unknown = env_names(container) - INFRA_ENV
        assert not unknown, f"{name} sets unexpected variables: {sorted(unknown)}"


def test_secrets_are_required_not_defaulted() -> None:
    for name, container in app_containers().items():
        values = env_values(container)
        assert "SECRET_KEY" in values, f"{name} needs SECRET_KEY"
        for key in ("SECRET_KEY", "IDENTITY_KEY"):
            if key in values:
                assert re.fullmatch(rf"\$\{{{key}:\?[^}}]+\}}", values[key]), (
                    f"{name}: {key} must use ${{{key}:?...}}"
                )


def test_each_container_gets_its_own_database_only() -> None:
    database_envs = {spec.database_env: name for name, spec in SERVICES.items()}
    init_sql = (ROOT / "deploy" / "postgres-init.sql").read_text(encoding="utf-8")
    created = set(re.findall(r"CREATE DATABASE\s+(\w+)", init_sql, flags=re.IGNORECASE))
    for name, container in app_containers().items():
        service = command_of(container)[-1]
        values = env_values(container)
        own = SERVICES[service].database_env
        assert own in values, f"{name} does not set {own}"
        others = {key for key in values if key in database_envs and key != own}
        assert not others, f"{name} is given another service's database: {sorted(others)}"
        url = values[own]
        assert url.startswith("postgresql+asyncpg://"), f"{name}: {own} should use asyncpg"
        database = url.rsplit("/", 1)[-1].split("?", 1)[0]
        assert database == service, f"{name} connects to database {database!r}"
        assert database in created, f"deploy/postgres-init.sql does not create {database}"
    assert "IDENTITY_KEY" not in {key for n, c in servers().items() if n != "intake" for key in env_names(c)}


def test_app_commands_exist_in_the_cli() -> None:
    parser = build_parser()
    known_commands = subcommands(parser)
    for name, container in app_containers().items():
        argv = command_of(container)
        assert argv[:3] == ["python", "-m", "services"], f"{name}: {argv}"
        assert len(argv) == 5, f"{name}: expected python -m services <command> <service>, got {argv}"
        command, service = argv[3], argv[4]
        assert command in known_commands, f"{name}: unknown subcommand {command!r}"
        assert service in SERVICES, f"{name}: unknown service {service!r}"
        try:
            parser.parse_args(argv[3:])
        except SystemExit as exc:  # argparse's way of rejecting arguments
            pytest.fail(f"{name}: the CLI rejects {argv[3:]} ({exc})")


def test_servers_serve_and_jobs_migrate_their_namesake() -> None:
    for name, container in servers().items():
        assert command_of(container)[3:] == ["serve", name]
    for name, container in migration_jobs().items():
        assert command_of(container)[3:] == ["migrate", name.removeprefix("migrate-")]
        assert str(container.get("restart")) == "no", f"{name} is a one-off job"


def test_servers_wait_for_their_migration_and_for_infrastructure() -> None:
    for name, container in servers().items():
        depends = container.get("depends_on")
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        job = depends.get(f"migrate-{name}")
        assert job == {"condition": "service_completed_successfully"}, f"{name} must wait for migrate-{name}"
        for infra in ("nats", "postgres"):
            assert depends.get(infra, {}).get("condition") == "service_healthy", (
                f"{name} must wait for {infra}"
            )
            assert "healthcheck" in services()[infra], f"{infra} needs a healthcheck for service_healthy"
    for name, container in migration_jobs().items():
        depends = container.get("depends_on")
        assert isinstance(depends, dict)
        assert depends.get("postgres", {}).get("condition") == "service_healthy", (
            f"{name} must wait for postgres"
        )


def test_nats_config_enables_durable_jetstream_on_a_volume() -> None:
    nats = services()["nats"]
    argv = shlex.split(nats["command"]) if isinstance(nats["command"], str) else list(nats["command"])
    flag = next(i for i, arg in enumerate(argv) if arg in {"-c", "--config", "-config"})
    config_path = argv[flag + 1]
    mounts = {}
    for volume in nats.get("volumes", []):
        source, target = str(volume).split(":")[:2]
        mounts[target] = source
    assert config_path in mounts, f"{config_path} is not mounted into the nats container"
    text = (COMPOSE_FILE.parent / mounts[config_path]).read_text(encoding="utf-8")
    text = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    block = re.search(r"\bjetstream\s*[:=]?\s*\{([^}]*)\}", text)
    assert block, "the nats config does not enable JetStream"
    assert re.search(r"\bsync_interval\s*[:=]\s*\"?always\"?", block.group(1)), "JetStream must fsync always"
    store = re.search(r"\bstore_dir\s*[:=]\s*\"?([^\s\"]+)\"?", block.group(1))
    assert store, "JetStream needs an explicit store_dir"
    assert store.group(1) in mounts, "JetStream's store_dir must be a mounted volume, or a restart loses it"
