"""/healthz, served by a real Daphne process, reports every dependency."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.integration.conftest import REPO, server_environment


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def daphne_url(transactional_db, celery_worker):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "web_ui.asgi:application"],
        cwd=REPO, env=server_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            assert time.monotonic() < deadline, "daphne did not start"
            time.sleep(0.2)
    yield url
    process.terminate()
    process.wait(timeout=10)


def get_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=15) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_healthz_reports_every_dependency_up(daphne_url):
    status, body = get_json(f"{daphne_url}/healthz")
    assert status == 200, body
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "redis", "docker", "npu_image", "workers"}
    assert all(check["ok"] for check in body["checks"].values()), body
    assert "PostgreSQL" in body["checks"]["database"]["detail"]


def test_healthz_reports_a_missing_npu_image_as_unhealthy(settings, client, celery_worker, transactional_db):
    settings.FLOWKIT_NPU_IMAGE = "flowkit/npu:does-not-exist"
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unhealthy"
    assert body["checks"]["npu_image"]["ok"] is False
    assert body["checks"]["database"]["ok"] is True
