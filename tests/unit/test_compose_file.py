"""deploy/compose.yml and compose.worker.yml: the services a deployment needs, the
Docker socket only where NPUs are driven, a worker that can be scaled, and (where a
compose binary is installed) files that compose itself accepts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "deploy" / "compose.yml"
WORKER_HOST = REPO / "deploy" / "compose.worker.yml"
SOCKET = "/var/run/docker.sock"


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text())["services"])


@pytest.fixture(scope="module")
def worker_host() -> dict[str, Any]:
    return dict(yaml.safe_load(WORKER_HOST.read_text())["services"])


def mounts(service: dict[str, Any]) -> list[str]:
    return [str(volume).split(":")[0] for volume in service.get("volumes", [])]


def command(service: dict[str, Any]) -> str:
    value = service.get("command", "")
    return " ".join(value) if isinstance(value, list) else str(value)


def test_it_has_web_worker_postgres_redis_and_the_npu_image_build(services):
    assert set(services) == {"web", "worker", "postgres", "redis", "npu-image"}


def test_only_the_worker_and_the_npu_image_build_see_the_docker_socket(services):
    with_socket = {name for name, service in services.items() if SOCKET in mounts(service)}
    assert with_socket == {"worker", "npu-image"}


def test_the_web_process_migrates_creates_the_first_admin_and_serves_with_daphne(services):
    web = command(services["web"])
    assert web.index("manage.py migrate") < web.index("flowkit admin init") < web.index("daphne")


def test_the_worker_can_be_scaled(services):
    worker = services["worker"]
    # A fixed container name or published port would make a second replica fail.
    assert "container_name" not in worker
    assert "ports" not in worker
    # Celery's %h: each replica's own host name (its container id).
    assert '--hostname "worker@%h"' in command(worker)


def test_the_worker_consumes_its_capability_queues_and_autoscales(services):
    worker = command(services["worker"])
    assert "flowkit workers queues" in worker
    assert "--autoscale" in worker
    assert "FLOWKIT_WORKER_CONCURRENCY_MAX" in worker
    assert "FLOWKIT_WORKER_CAPABILITIES" in services["worker"]["environment"]


def test_the_worker_starts_after_the_npu_image_is_built_and_stops_warmly(services):
    worker = services["worker"]
    assert worker["depends_on"]["npu-image"] == {"condition": "service_completed_successfully"}
    assert services["npu-image"]["restart"] == "no"
    assert command(services["npu-image"]) == "flowkit npu build"
    assert "stop_grace_period" in worker


def test_a_worker_host_runs_only_the_npu_image_build_and_workers_on_the_shared_services(worker_host):
    assert set(worker_host) == {"npu-image", "worker"}
    environment = worker_host["worker"]["environment"]
    assert environment["DATABASE_URL"].startswith("${DATABASE_URL:?")
    assert environment["REDIS_URL"].startswith("${REDIS_URL:?")
    assert all(SOCKET in mounts(service) for service in worker_host.values())


def test_a_worker_host_starts_its_workers_as_the_main_host_does(services, worker_host):
    assert command(worker_host["worker"]) == command(services["worker"])


def compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        return ["docker", "compose"]
    return None


@pytest.mark.skipif(
    compose_command() is None, reason="neither docker-compose nor the compose plugin is installed"
)
@pytest.mark.parametrize("path", [COMPOSE, WORKER_HOST], ids=["compose.yml", "compose.worker.yml"])
def test_compose_accepts_the_file(path, tmp_path):
    env = tmp_path / ".env"
    env.write_text(
        "SECRET_KEY=k\nFLOWKIT_SECRET_KEYS=f\nPOSTGRES_PASSWORD=p\n"
        "DATABASE_URL=postgres://flowkit:p@db:5432/flowkit\nREDIS_URL=rediss://:p@redis:6380/0\n"
    )
    result = subprocess.run(
        [*(compose_command() or []), "-f", str(path), "--env-file", str(env), "config", "--quiet"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
