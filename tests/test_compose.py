"""docker-compose.yml: real commands, healthchecks, start order and no secret in the file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from worker.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
SECRETS = ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "STATSWORKER_INGEST_TOKEN")
REQUIRED_VAR = re.compile(r"\$\{[A-Z][A-Z0-9_]*:\?[^}]*\}")
"""``${VAR:?message}``: compose refuses to start while VAR is unset."""


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def own_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The services that run the project's image."""
    return {name: s for name, s in services.items() if "build" in s}


def test_services_present(services: dict[str, dict[str, Any]]) -> None:
    assert {"redis", "postgres", "api", "worker", "roll", "migrate"} <= services.keys()
    assert services["worker"]["deploy"]["replicas"] >= 2
    assert services["redis"]["image"].startswith("redis:")
    assert services["postgres"]["image"].startswith("postgres:")


def test_every_command_is_a_statsworker_command(services: dict[str, dict[str, Any]]) -> None:
    parser = build_parser()
    mine = own_services(services)
    assert set(mine) == {"api", "worker", "roll", "migrate"}
    for name, service in mine.items():
        command = service["command"]
        assert isinstance(command, list), f"{name}: write the command as a list"
        assert command[0] == "statsworker", name
        try:
            args = parser.parse_args(command[1:])
        except SystemExit:
            pytest.fail(f"{name}: {' '.join(command)} is not a statsworker command")
        assert callable(args.handler)
    roll = parser.parse_args(services["roll"]["command"][1:])
    assert roll.command == "roll" and roll.every and roll.every <= 24 * 3600
    assert parser.parse_args(services["worker"]["command"][1:]).burst is False


def test_redis_persists_with_the_append_only_file(services: dict[str, dict[str, Any]]) -> None:
    command = services["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(v.endswith(":/data") for v in services["redis"]["volumes"])
    assert any("/var/lib/postgresql/data" in v for v in services["postgres"]["volumes"])


def test_healthchecks_and_start_order(services: dict[str, dict[str, Any]]) -> None:
    for name in ("redis", "postgres", "api"):
        check = services[name]["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert check.get("retries", 0) >= 1, name
    for name in ("api", "worker"):
        deps = services[name]["depends_on"]
        assert deps["redis"]["condition"] == "service_healthy", name
        assert deps["postgres"]["condition"] == "service_healthy", name
        assert deps["migrate"]["condition"] == "service_completed_successfully", name
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["roll"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["migrate"]["restart"] == "no"
    # migrate connects over TCP: PostgreSQL is healthy once TCP answers, not the socket.
    pg_check = services["postgres"]["healthcheck"]["test"]
    assert pg_check[pg_check.index("-h") + 1] == "127.0.0.1"
    # redis-cli exits 0 on an error reply: the check must look for the PONG itself.
    assert "grep -q PONG" in " ".join(services["redis"]["healthcheck"]["test"])


def test_statsworker_processes_run_under_an_init(services: dict[str, dict[str, Any]]) -> None:
    """As PID 1 a process without a SIGTERM handler (the roll) would ignore the signal."""
    for name in ("migrate", "api", "worker", "roll"):
        assert services[name].get("init") is True, name


def walk(value: Any, path: str = "") -> list[tuple[str, str]]:
    """Every string of the parsed file with where it sits."""
    if isinstance(value, dict):
        return [pair for k, v in value.items() for pair in walk(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [pair for i, v in enumerate(value) for pair in walk(v, f"{path}[{i}]")]
    return [(path, str(value))] if value is not None else []


def test_no_secret_is_written_in_the_file(compose: dict[str, Any]) -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    for secret in SECRETS:
        assert re.search(r"\$\{" + secret + r":\?", text), f"{secret} must be required"
    for where, value in walk(compose):
        # A credential in a URL, an environment value named like a secret, or the
        # argument of --requirepass must come from a required variable.
        for match in re.finditer(r"://[^:/@\s]*:([^@\s]*)@", value):
            assert REQUIRED_VAR.fullmatch(match.group(1)), f"{where}: password in a URL"
        key = where.rsplit(".", 1)[-1]
        if re.search(r"PASSWORD|TOKEN|SECRET|AUTH", key):
            assert REQUIRED_VAR.fullmatch(value), f"{where} must be ${{VAR:?}}"
    redis = compose["services"]["redis"]["command"]
    assert REQUIRED_VAR.fullmatch(redis[redis.index("--requirepass") + 1])


def test_api_gets_the_ingest_token_and_everyone_the_servers(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in own_services(services).items():
        env = service["environment"]
        assert "@redis:6379" in env["STATSWORKER_REDIS_URL"], name
        assert env["STATSWORKER_DATABASE_URL"].startswith("postgresql+psycopg://"), name
    assert "STATSWORKER_INGEST_TOKEN" in services["api"]["environment"]


def test_dockerfile_runs_as_a_user_and_builds_the_project() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^USER (?!root)\w+", text, re.MULTILINE)
    for package in ("events", "stats", "worker", "api_stub"):
        assert f"COPY {package} " in text
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".git", ".venv", ".env"} <= set(ignored)
