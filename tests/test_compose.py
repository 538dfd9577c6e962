"""docker-compose.yml and the Dockerfile, checked without a Docker engine: every command is
one the CLI accepts, every setting is a real one with a valid value, health checks hit
endpoints that exist, services start in the right order, the image runs as non-root."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from signer_sync.cli import app
from signer_sync.config import ENV_PREFIX, Settings, load_settings
from signer_sync.observability import HealthReport, Metrics, ObservabilityServer

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
OUR_IMAGE = "signer-sync:local"
#: Standard AWS SDK variables a service may pass to botocore.
AWS_VARIABLES = {
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ENDPOINT_URL_SIGNER",
}
_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def ours() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, service in SERVICES.items():
        if service.get("image") == OUR_IMAGE:
            yield name, service


def environment(service: dict[str, Any]) -> dict[str, str | None]:
    """The service's variables with ``${VAR:-default}`` as its default (None: passed through)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {
        key: None if value is None else _INTERPOLATION.sub(lambda m: m.group(2) or "", str(value))
        for key, value in env.items()
    }


def cli_command(name: str) -> Any:
    """The registered command (typer vendors its own click, hence no isinstance)."""
    commands: dict[str, Any] = getattr(typer.main.get_command(app), "commands", {})
    command = commands.get(name)
    assert command is not None, f"signer-sync has no command {name!r}"
    return command


def test_services_and_profiles() -> None:
    assert set(SERVICES) == {"postgres", "migrate", "signer-sync", "emulator", "signer-sync-demo"}
    assert SERVICES["postgres"]["image"].startswith("postgres:16")
    assert "profiles" not in SERVICES["signer-sync"] and "profiles" not in SERVICES["migrate"]
    assert SERVICES["emulator"]["profiles"] == ["demo"]
    assert SERVICES["signer-sync-demo"]["profiles"] == ["demo"]
    for name, service in ours():
        assert service["build"] == ".", name
        assert service.get("init") is True, f"{name}: signals need an init as PID 1"


def test_every_command_is_one_the_cli_accepts() -> None:
    used = {}
    for name, service in ours():
        args = [str(arg) for arg in service["command"]]
        command = cli_command(args[0])
        # Parsing the options for real: an unknown option or a bad value raises here.
        command.make_context(args[0], args[1:])
        used[name] = args[0]
    assert used == {
        "migrate": "migrate",
        "signer-sync": "run",
        "emulator": "emulator",
        "signer-sync-demo": "run",
    }
    emulator = SERVICES["emulator"]["command"]
    assert emulator[emulator.index("--host") + 1] == "0.0.0.0"
    assert emulator[emulator.index("--port") + 1] == "4566"
    assert emulator[emulator.index("--jobs") + 1] == "5000"


def test_environment_names_real_settings_with_valid_values() -> None:
    warehouses = set()
    for name, service in ours():
        env = environment(service)
        settings_env: dict[str, str] = {}
        for key, value in env.items():
            if key.startswith(ENV_PREFIX):
                field = key.removeprefix(ENV_PREFIX).lower()
                assert field in Settings.model_fields, f"{name}: {key} is not a setting"
                assert value is not None, f"{name}: {key} has no value"
                settings_env[key] = value
            else:
                assert key in AWS_VARIABLES, f"{name}: unexpected variable {key}"
        # Every value is one signer-sync accepts (raises ConfigError naming it otherwise).
        settings = load_settings(environ=settings_env)
        if service["command"][0] != "emulator":
            warehouses.add((settings.redacted_url(), settings.db_schema))
    # The migration and both daemons use one warehouse: the compose PostgreSQL.
    assert warehouses == {("postgresql+psycopg://signer:***@postgres:5432/signer", "signer")}


def test_daemons_listen_on_all_interfaces_inside_and_loopback_outside() -> None:
    for name in ("signer-sync", "signer-sync-demo"):
        service = SERVICES[name]
        assert environment(service)["SIGNER_SYNC_HTTP_ADDR"] == "0.0.0.0:9108"
        published = [str(p) for p in service["ports"]]
        assert all(p.startswith("127.0.0.1:") and p.endswith(":9108") for p in published)
        assert service["stop_grace_period"] in ("15s", "20s", "30s")  # > the 10 s shutdown


def test_demo_daemon_reads_the_emulator() -> None:
    env = environment(SERVICES["signer-sync-demo"])
    assert env["SIGNER_SYNC_ENDPOINT_URL"] == "http://emulator:4566"
    assert env["AWS_ACCESS_KEY_ID"] and env["AWS_SECRET_ACCESS_KEY"]
    real = environment(SERVICES["signer-sync"])
    assert "SIGNER_SYNC_ENDPOINT_URL" not in real and "AWS_ENDPOINT_URL_SIGNER" not in real
    # The two daemons share the warehouse, never a source name (which is also a lock).
    assert env.get("SIGNER_SYNC_SOURCE_NAME") != real.get("SIGNER_SYNC_SOURCE_NAME", "default")


def test_start_order() -> None:
    def conditions(name: str) -> dict[str, str]:
        return {dep: spec["condition"] for dep, spec in SERVICES[name]["depends_on"].items()}

    assert conditions("migrate") == {"postgres": "service_healthy"}
    assert conditions("signer-sync") == {"migrate": "service_completed_successfully"}
    assert conditions("signer-sync-demo") == {
        "migrate": "service_completed_successfully",
        "emulator": "service_healthy",
    }
    assert "CMD-SHELL" in SERVICES["postgres"]["healthcheck"]["test"]
    assert "pg_isready" in " ".join(SERVICES["postgres"]["healthcheck"]["test"])
    assert SERVICES["migrate"].get("restart") == "no"


class _Health:
    healthy = True

    def __call__(self) -> HealthReport:
        from datetime import UTC, datetime, timedelta

        return HealthReport(self.healthy, datetime.now(UTC), timedelta(minutes=15))


def _run_check(test: list[str], port: int) -> int:
    """Run a CMD health check locally, with the container's port swapped for ours."""
    assert test[0] == "CMD" and test[1] == "python", test
    args = [sys.executable, *[arg.replace(":9108", f":{port}") for arg in test[2:]]]
    return subprocess.run(args, capture_output=True, timeout=30, check=False).returncode


def test_daemon_health_checks_hit_healthz_and_fail_when_unhealthy() -> None:
    dockerfile_check = re.search(r"HEALTHCHECK[^\n]*\\\n\s*CMD (\[.*\])", _dockerfile())
    assert dockerfile_check is not None
    checks = {
        "Dockerfile": ["CMD", *json.loads(dockerfile_check.group(1))],
        **{
            name: SERVICES[name]["healthcheck"]["test"]
            for name in ("signer-sync", "signer-sync-demo")
        },
    }
    health = _Health()
    server = ObservabilityServer("127.0.0.1:0", Metrics(), health).start()
    port = int(server.url.rsplit(":", 1)[1])
    try:
        for where, test in checks.items():
            assert "/healthz" in " ".join(test), where
            health.healthy = True
            assert _run_check(test, port) == 0, f"{where}: healthy daemon reported unhealthy"
            health.healthy = False
            assert _run_check(test, port) != 0, f"{where}: a 503 passed the check"
    finally:
        server.stop()


def test_emulator_health_check_connects_to_its_port() -> None:
    test = SERVICES["emulator"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"] and "4566" in test[3]


def _dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", _dockerfile())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_runs_the_daemon_as_non_root() -> None:
    steps = _instructions()
    assert steps[0] == ("FROM", "python:3.11-slim")
    users = [i for i, (word, _) in enumerate(steps) if word == "USER"]
    assert users, "the image runs as root"
    last_user = steps[users[-1]][1].split(":")[0]
    assert last_user not in ("root", "0")
    last_run = max(i for i, (word, _) in enumerate(steps) if word == "RUN")
    assert users[-1] > last_run  # nothing after it runs as root
    entrypoint = json.loads(dict(steps)["ENTRYPOINT"])
    cmd = json.loads(dict(steps)["CMD"])
    assert entrypoint == ["signer-sync"]
    assert cmd == ["run"]
    cli_command(cmd[0])


def test_dockerfile_keeps_migrations_next_to_the_package() -> None:
    """db.py finds migrations at Path(db.py).parents[2] / "migrations": the package must be
    imported from the directory it was copied to (an editable install) with migrations/
    beside it."""
    steps = _instructions()
    workdirs = [args for word, args in steps if word == "WORKDIR"]
    app_dir = workdirs[0]
    copies = {args.split()[-1]: args.split()[0] for word, args in steps if word == "COPY"}
    assert copies.get("./signer_sync") == "signer_sync"
    assert copies.get("./migrations") == "migrations"
    install = [args for word, args in steps if word == "RUN" and "pip install" in args]
    assert install and "pip install -e ." in install[0]
    # The WORKDIR in force at the COPY and install steps is the same directory.
    before_install = [args for word, args in steps[: steps.index(("RUN", install[0]))]]
    assert app_dir in before_install and "/data" not in before_install
    db = Path("signer_sync/warehouse/db.py")
    assert (Path(app_dir) / db).resolve().parents[2] / "migrations" == Path(app_dir) / "migrations"


def test_dockerignore_keeps_what_the_build_needs() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    needed = [
        "pyproject.toml",
        "README.md",
        "alembic.ini",
        "signer_sync/cli.py",
        "migrations/env.py",
    ]
    for path in needed:
        assert not any(fnmatch.fnmatch(path, p) or path.startswith(p + "/") for p in patterns), path
    for heavy in (".git", ".venv", "tests"):
        assert heavy in patterns


def test_docker_compose_config_when_available() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("no docker compose plugin")
    for profile in ([], ["--profile", "demo"]):
        result = subprocess.run(
            [docker, "compose", "-f", str(ROOT / "docker-compose.yml"), *profile, "config", "-q"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
